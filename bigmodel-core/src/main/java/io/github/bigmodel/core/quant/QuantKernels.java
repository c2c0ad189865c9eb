package io.github.bigmodel.core.quant;

import io.github.bigmodel.core.kernel.Scopes;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Dispatcher;
import org.bytedeco.pytorch.IValue;
import org.bytedeco.pytorch.IValueVector;
import org.bytedeco.pytorch.OperatorHandle;
import org.bytedeco.pytorch.OperatorName;
import org.bytedeco.pytorch.OperatorHandleOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * libtorch's weight-only quantized matmul kernels, reached through the operator dispatcher because the JavaCPP
 * presets do not map them: {@code aten::_weight_int8pack_mm} (int8 weights {@code [N, K]}, one scale per row) and
 * {@code aten::_convert_weight_to_int4pack_for_cpu} + {@code aten::_weight_int4pack_mm_for_cpu} (int4 weights in
 * the CPU kernel's tiled layout, a scale and a zero point per group of K).
 *
 * <p>The kernels run in the activations' dtype: with bfloat16 activations they measured 10 to 15 times faster than
 * a bfloat16 {@code torch.linear} on this project's CPU, with float32 activations 2 to 3 times slower than a
 * float32 {@code linear} (docs/quantization.md). Where a kernel is missing the callers dequantize instead.
 *
 * <pre>{@code
 * if (QuantKernels.hasInt8Cpu()) {
 *     Tensor y = QuantKernels.int8Mm(x2d, int8Weight, scalesBf16);   // x2d [M, K] bfloat16
 * }
 * }</pre>
 */
public final class QuantKernels {

    private static final Logger LOG = LoggerFactory.getLogger(QuantKernels.class);

    private static final String INT8_MM = "aten::_weight_int8pack_mm";
    private static final String INT4_CONVERT = "aten::_convert_weight_to_int4pack_for_cpu";
    private static final String INT4_MM = "aten::_weight_int4pack_mm_for_cpu";

    /** Group sizes the CPU int4 kernel accepts, largest first. */
    private static final long[] INT4_GROUP_SIZES = {256, 128, 64, 32};

    private static final boolean INT8_CPU = exists(INT8_MM);
    private static final boolean INT4_CPU = exists(INT4_CONVERT) && exists(INT4_MM);

    private QuantKernels() {
    }

    private static boolean exists(String name) {
        try (OperatorName op = new OperatorName(name, "");
             OperatorHandleOptional handle = Dispatcher.singleton().findSchema(op)) {
            boolean found = handle.has_value();
            LOG.debug("libtorch operator {} {}", name, found ? "found" : "missing: dequantizing instead");
            return found;
        } catch (RuntimeException e) {
            LOG.debug("libtorch operator {} not usable: {}", name, e.getMessage());
            return false;
        }
    }

    /** Whether libtorch has the int8 weight-only matmul kernel. */
    public static boolean hasInt8Cpu() {
        return INT8_CPU;
    }

    /** Whether libtorch has the CPU int4 weight-only matmul kernel and its packing operator. */
    public static boolean hasInt4Cpu() {
        return INT4_CPU;
    }

    /** The int4 group size for {@code inFeatures} (the largest accepted size dividing it), or 0 when none does. */
    public static long int4GroupSize(long inFeatures) {
        for (long g : INT4_GROUP_SIZES) {
            if (inFeatures % g == 0) {
                return g;
            }
        }
        return 0;
    }

    private static Tensor call(String name, IValue... args) {
        Tensor out;
        try (PointerScope scope = new PointerScope()) {
            IValueVector stack = new IValueVector(args);
            Dispatcher.singleton().findSchemaOrThrow(name, "").callBoxed(stack);
            if (stack.size() != 1 || !stack.get(0).isTensor()) {
                throw new IllegalStateException(name + " returned " + stack.size() + " values, expected one tensor");
            }
            // toTensor() may refer into the stack, which this scope frees: take a handle of our own.
            out = new Tensor(stack.get(0).toTensor());
            out.retainReference();
        }
        return Scopes.handOut(out);
    }

    /** {@code x [M, K] @ (w [N, K] * scales[N])^T}, with {@code x} and {@code scales} in one float dtype. */
    public static Tensor int8Mm(Tensor x, Tensor weight, Tensor scales) {
        return call(INT8_MM, new IValue(x), new IValue(weight), new IValue(scales));
    }

    /**
     * The CPU kernel's tiled form of int4 codes {@code [N, K]} in {@code [-8, 7]} (any integer dtype): stored
     * unsigned as {@code code + 8}, two per byte.
     */
    public static Tensor int4ToCpuTiles(Tensor codes) {
        Tensor out;
        try (PointerScope scope = new PointerScope()) {
            Tensor unsigned = codes.to(ScalarType.Int).add(new org.bytedeco.pytorch.Scalar(8)).contiguous();
            out = call(INT4_CONVERT, new IValue(unsigned), new IValue(2L));
            out.retainReference();
        }
        return Scopes.handOut(out);
    }

    /**
     * Rows converted at a time by {@link #int4PackedToCpuTiles}: a multiple of the operator's row blocks (32 or 64
     * rows by the CPU's vector width), so the tiles of consecutive chunks are the tiles of the whole weight; 16 MB
     * of int32 codes for 4096 inputs, reused from the allocator instead of a fresh weight-sized buffer each time.
     */
    private static final long TILE_CHUNK_ROWS = 1024;

    /**
     * {@link #int4ToCpuTiles} of THUDM-packed int4 bytes {@code [N, K/2]}, unpacked straight into the operator's
     * unsigned int32 input in one pass and converted {@value #TILE_CHUNK_ROWS} rows at a time (loading a model
     * converts every int4 weight: a chain of whole-tensor integer ops took ten times longer).
     */
    public static Tensor int4PackedToCpuTiles(Tensor packed) {
        long rows = packed.size(0);
        if (rows <= TILE_CHUNK_ROWS) {
            Tensor out;
            try (PointerScope scope = new PointerScope()) {
                out = call(INT4_CONVERT, new IValue(RowQuantizer.unsignedInt4(packed)), new IValue(2L));
                out.retainReference();
            }
            return Scopes.handOut(out);
        }
        Tensor all = null;
        try (PointerScope scope = new PointerScope()) {
            for (long r0 = 0; r0 < rows; r0 += TILE_CHUNK_ROWS) {
                long n = Math.min(TILE_CHUNK_ROWS, rows - r0);
                try (PointerScope chunk = new PointerScope()) {
                    Tensor part = call(INT4_CONVERT, new IValue(RowQuantizer.unsignedInt4(packed.narrow(0, r0, n))),
                            new IValue(2L));
                    if (all == null) {
                        long[] shape = io.github.bigmodel.core.Tensors.shape(part);
                        shape[0] = shape[0] / n * rows;
                        all = org.bytedeco.pytorch.global.torch.empty(shape,
                                new org.bytedeco.pytorch.TensorOptions(part.scalar_type()),
                                new org.bytedeco.pytorch.MemoryFormatOptional());
                        scope.attach(all);
                    }
                    long per = part.size(0) / n;
                    all.narrow(0, r0 * per, n * per).copy_(part);
                }
            }
            all.retainReference();
        }
        return Scopes.handOut(all);
    }

    /**
     * The scale-and-zero table {@code [K/group, N, 2]} of the CPU int4 kernel for per-row {@code scales [N]}:
     * every group of a row repeats the row's scale, and zero points are 0 because the codes are symmetric.
     */
    public static Tensor int4ScalesAndZeros(Tensor scales, long inFeatures, long groupSize, ScalarType type) {
        Tensor out;
        try (PointerScope scope = new PointerScope()) {
            long n = scales.size(0);
            Tensor s = scales.to(type).unsqueeze(0).expand(inFeatures / groupSize, n);
            out = torch.stack(new TensorVector(s, torch.zeros_like(s)), 2).contiguous();
            out.retainReference();
        }
        return Scopes.handOut(out);
    }

    /** {@code x [M, K] @ dequantized(tiles)^T} with the CPU int4 kernel. */
    public static Tensor int4Mm(Tensor x, Tensor tiles, long groupSize, Tensor scalesAndZeros) {
        return call(INT4_MM, new IValue(x), new IValue(tiles), new IValue(groupSize), new IValue(scalesAndZeros));
    }
}
