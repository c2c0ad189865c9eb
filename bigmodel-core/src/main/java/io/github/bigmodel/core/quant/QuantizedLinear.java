package io.github.bigmodel.core.quant;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.ForwardScope;
import io.github.bigmodel.core.Linear;
import io.github.bigmodel.core.Parameter;
import io.github.bigmodel.core.Tensors;
import io.github.bigmodel.core.kernel.NativeKernels;
import io.github.bigmodel.core.kernel.NativeKernels.Format;
import io.github.bigmodel.core.kernel.Scopes;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.LongOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptional;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * A {@link Linear} whose weight may be held quantized (int8 or int4, one scale per output row), with THUDM's
 * state-dict names: {@code weight} (int8 {@code [out, in]} or packed {@code [out, in/2]}) and {@code weight_scale}
 * ({@code [out]}, floating point). Until {@link #planPrecision} asks for an integer precision it is a plain
 * floating-point {@code Linear}.
 *
 * <p>Kernels: on the CPU, libtorch's weight-only kernels ({@link QuantKernels}) in the activations' dtype (bfloat16
 * for float16 activations, which the kernels do not vectorize), the int4
 * weight kept in the CPU kernel's tiled layout (same size as the packed one) plus a small scale table; elsewhere
 * (CUDA) the weight is dequantized into the activations' dtype for each call and {@code torch.linear} runs on it.
 *
 * <pre>{@code
 * QuantizedLinear fc = new QuantizedLinear(4096, 4096, false, DType.FLOAT16);   // on meta
 * fc.planPrecision(Precision.INT4);                          // weight now int4 on meta, weight_scale registered
 * fc.setQuantized(WeightQuantizer.quantize(floatWeight, Precision.INT4));
 * Tensor y = fc.forward(x);
 * }</pre>
 *
 * <p>Threads and ownership: the layer owns its weight, its scales and the CPU kernel tables derived from them.
 * {@link #forward} may run on several threads at once; the kernel tables it builds lazily are built under a lock and
 * published once, so racing first calls share one table. Replacing or releasing the weight ({@link #setQuantized},
 * {@link #installExecutionLayout}, {@link #markOffloaded}, {@link #toMeta}) frees the tables and is the owner's
 * call, made only when no forward of this layer runs: at load time, by an offload hook holding its module's lock,
 * or after the model's {@link io.github.bigmodel.core.UseGuard} has drained. {@link #executionLayout} reads only
 * the layer's shape and precision and may run on a prefetch thread.
 */
// PointerScope blocks are used for what they release on close.
@SuppressWarnings("try")
public class QuantizedLinear extends Linear {

    /** State-dict name of the per-row scales, THUDM's. */
    public static final String SCALE_NAME = "weight_scale";

    private Precision precision;
    private Parameter weightScale;
    /**
     * CPU kernel tables derived from weight_scale (not saved), one per activation dtype: the int4 kernel's
     * scale/zero table or the int8 kernel's scales in that dtype. Built lazily by the first forward that needs one;
     * several threads may run that forward at once (sessions sharing an in-memory layer), so a table is built under
     * {@link #tableLock} and published by replacing this array. A published table is never freed while the layer
     * runs: only {@link #releaseKernelState()} frees them, which is called when the weight itself is replaced or
     * released (loading, an offload hook under its module's lock, {@code toMeta} after the model's
     * {@link io.github.bigmodel.core.UseGuard} has drained).
     */
    private volatile KernelTable[] tables = NO_TABLES;
    private final Object tableLock = new Object();
    private volatile boolean cpuTiles;

    private static final KernelTable[] NO_TABLES = new KernelTable[0];

    /** One CPU kernel table for activations of dtype {@code type} ({@link ScalarType} value). */
    private record KernelTable(int type, long group, Tensor table) {
    }

    public QuantizedLinear(long inFeatures, long outFeatures, boolean bias, DType dtype) {
        super(inFeatures, outFeatures, bias, dtype);
        this.precision = Precision.of(dtype);
    }

    /** The precision the weight is (or will be, while on meta) held in. */
    public Precision precision() {
        return precision;
    }

    public boolean isQuantized() {
        return precision.isQuantized();
    }

    /** The per-row scales, or null while the layer is floating point. */
    public Parameter weightScale() {
        return weightScale;
    }

    /**
     * Chooses the weight's precision before loading (the weight must be on meta). An integer precision makes the
     * weight int8/int4 and registers {@code weight_scale} in {@code scaleDtype}; a float precision sets the
     * weight's dtype (and drops a {@code weight_scale} planned earlier).
     *
     * @throws IllegalStateException when the weight or its scales hold values
     */
    public void planPrecision(Precision target, DType scaleDtype) {
        if (weight().isMaterialized() || (weightScale != null && weightScale.isMaterialized())) {
            throw new IllegalStateException("The precision of a linear layer is chosen before its weight is loaded");
        }
        if (!target.isQuantized()) {
            if (weightScale != null) {
                removeParameter(SCALE_NAME);
                weightScale = null;
            }
            weight().setPlannedDtype(target.dtype());
            precision = target;
            return;
        }
        if (target == Precision.INT4 && inFeatures() % 2 != 0) {
            throw new IllegalArgumentException("int4 needs an even in_features, this layer has " + inFeatures());
        }
        if (scaleDtype == null || !scaleDtype.isFloatingPoint()) {
            throw new IllegalArgumentException("weight_scale must be floating point, got " + scaleDtype);
        }
        weight().setPlannedDtype(target.dtype());
        if (weightScale == null) {
            weightScale = registerParameter(SCALE_NAME, Parameter.empty(scaleDtype, outFeatures()));
        } else {
            weightScale.setPlannedDtype(scaleDtype);
        }
        precision = target;
    }

    /** {@link #planPrecision(Precision, DType)} with half-precision scales, THUDM's choice. */
    public void planPrecision(Precision target) {
        planPrecision(target, DType.FLOAT16);
    }

    /**
     * Puts a quantized weight in (taking ownership of its tensors, which must already be on the target device);
     * the layer must be planned with the same precision.
     */
    public void setQuantized(QuantizedWeight q) {
        if (q.precision() != precision) {
            throw new IllegalArgumentException("Layer planned as " + precision + " cannot take a " + q.precision()
                    + " weight");
        }
        if (q.inFeatures() != inFeatures() || q.outFeatures() != outFeatures()) {
            throw new IllegalArgumentException("Quantized weight of " + q.outFeatures() + "x" + q.inFeatures()
                    + " does not fit a layer of " + outFeatures() + "x" + inFeatures());
        }
        releaseKernelState();
        weightScale.set(Scopes.keep(q.scale()));
        Tensor layout = executionLayout(q.packed());
        if (layout != q.packed()) {
            q.packed().close();
        } else {
            Scopes.keep(layout);
        }
        installExecutionLayout(layout);
    }

    /**
     * Whether this layer, quantized, computes on {@code device} from libtorch's CPU int4 kernel's tiled layout (int4
     * on the CPU where bigmodel's native kernels, which read THUDM's layout in place, are not available, libtorch has
     * the kernel and a group size divides {@code in_features}); that layout cannot move
     * to another device, so offloaded weights keep THUDM's portable layout and are converted where they execute.
     */
    public boolean usesCpuTiles(Device device) {
        return device.isCpu() && precision == Precision.INT4 && !NativeKernels.available() && QuantKernels.hasInt4Cpu()
                && QuantKernels.int4GroupSize(inFeatures()) > 0;
    }

    /**
     * The weight in the layout this layer computes with on the device of {@code packed} (THUDM's layout, see
     * {@link QuantizedWeight}): the CPU int4 tiles as a new tensor (the caller closes {@code packed}), otherwise
     * {@code packed} itself. Safe to call on another thread (offload prefetch) while the layer runs.
     */
    public Tensor executionLayout(Tensor packed) {
        if (!isQuantized()) {
            throw new IllegalStateException("This layer is " + precision + ", not quantized");
        }
        long storedColumns = precision == Precision.INT4 ? inFeatures() / 2 : inFeatures();
        long[] shape = Tensors.shape(packed);
        if (shape.length != 2 || shape[0] != outFeatures() || shape[1] != storedColumns) {
            throw new IllegalArgumentException(precision + " weight of this layer must have shape [" + outFeatures()
                    + ", " + storedColumns + "], got " + java.util.Arrays.toString(shape));
        }
        if (!usesCpuTiles(Tensors.deviceOf(packed))) {
            return packed;
        }
        Tensor tiles;
        try (PointerScope scope = new PointerScope()) {
            tiles = QuantKernels.int4PackedToCpuTiles(packed);
            tiles.retainReference();
        }
        return tiles;
    }

    /**
     * Puts in a weight made by {@link #executionLayout} (taking ownership); {@code weight_scale} must be set on
     * its own (it is an ordinary parameter). Kernel tables derived from the previous scales are dropped.
     */
    public void installExecutionLayout(Tensor weight) {
        if (!isQuantized()) {
            throw new IllegalStateException("This layer is " + precision + ", not quantized");
        }
        releaseKernelState();
        weight().setPacked(weight, precision.dtype());
        cpuTiles = usesCpuTiles(Tensors.deviceOf(weight));
    }

    /**
     * Releases the weight, its scales and the kernel tables and marks them offloaded: what an offload hook does
     * after the forward pass of a layer whose weights live on the CPU or on disk.
     */
    public void markOffloaded() {
        releaseKernelState();
        weight().markOffloaded();
        if (weightScale != null) {
            weightScale.markOffloaded();
        }
    }

    /**
     * The weight in THUDM's stored layout, as new tensors the caller closes (from the CPU tiles when the layer
     * holds those).
     */
    public QuantizedWeight quantizedWeight() {
        if (!isQuantized()) {
            throw new IllegalStateException("This layer is " + precision + ", not quantized");
        }
        Tensor scale = weightScale.data().clone();
        if (!cpuTiles) {
            return new QuantizedWeight(weight().data().clone(), scale, precision, inFeatures());
        }
        Tensor packed;
        try (PointerScope scope = new PointerScope()) {
            packed = WeightQuantizer.packInt4(codesFromTiles());
            packed.retainReference();
        }
        return new QuantizedWeight(Scopes.handOut(packed), scale, precision, inFeatures());
    }

    /** Reads the int4 codes back out of the CPU tiles: the kernel applied to rows of the identity, unit scales. */
    private Tensor codesFromTiles() {
        // Runs inside quantizedWeight's pointer scope, which releases every temporary here.
        long in = inFeatures();
        long out = outFeatures();
        long group = QuantKernels.int4GroupSize(in);
        Tensor unit = QuantKernels.int4ScalesAndZeros(torch.ones(out), in, group, ScalarType.BFloat16);
        Tensor eye = torch.eye(in).to(ScalarType.BFloat16);
        TensorVector parts = new TensorVector();
        long chunk = 1024;
        for (long start = 0; start < in; start += chunk) {
            long len = Math.min(chunk, in - start);
            Tensor rows = eye.slice(0, new LongOptional(start), new LongOptional(start + len), 1);
            // [len, out]: column c of the weight for each identity row c; codes are exact in bfloat16.
            parts.push_back(QuantKernels.int4Mm(rows, weight().data(), group, unit));
        }
        return torch.cat(parts, 0).t().to(ScalarType.Char).contiguous();
    }

    @Override
    public Tensor forward(Tensor input) {
        if (!isQuantized()) {
            return super.forward(input);
        }
        try (ForwardScope f = enterForward()) {
            Tensor x = f.input(input);
            Tensor y;
            try (PointerScope scope = new PointerScope()) {
                Tensor r = matmul(x);
                if (bias() != null) {
                    r = r.add(bias().data().to(r.scalar_type()));
                }
                y = r;
                y.retainReference();
            }
            return f.output(y);
        }
    }

    /** {@code x @ W^T} without the bias, in {@code x}'s dtype; runs inside the caller's pointer scope. */
    private Tensor matmul(Tensor x) {
        Tensor w = weight().data();
        Device device = Tensors.deviceOf(w);
        ScalarType type = x.scalar_type();
        long[] shape = Tensors.shape(x);
        long in = inFeatures();
        if (cpuTiles && !device.isCpu()) {
            throw new IllegalStateException("An int4 weight in the CPU kernel's layout was moved to " + device);
        }
        boolean cpu = device.isCpu();
        Tensor nativeScales = nativeKernelScales();
        if (nativeScales != null) {
            return NativeKernels.linear(nativeFormat(), x, w, nativeScales, null);
        }
        if (cpu && (cpuTiles || (precision == Precision.INT8 && QuantKernels.hasInt8Cpu()))) {
            // float16 activations run the kernel in bfloat16: libtorch's CPU kernels vectorize bf16 only and ran 8x
            // (int8) to 30x (int4) slower in fp16 (docs/benchmarks.md, Kernels); the weight's quantization error
            // (about 2^-8 of a row's scale) is larger than bf16's rounding of the activations (2^-9).
            ScalarType kernelType = type.value == ScalarType.Half.value ? ScalarType.BFloat16 : type;
            Tensor x2 = x.reshape(-1, in).to(kernelType).contiguous();
            Tensor y2;
            KernelTable t = table(kernelType);
            if (cpuTiles) {
                y2 = QuantKernels.int4Mm(x2, w, t.group(), t.table());
            } else {
                y2 = QuantKernels.int8Mm(x2, w, t.table());
            }
            shape[shape.length - 1] = outFeatures();
            return y2.to(type).view(shape);
        }
        // A view over the layer's own tensors: never closed here, the layer keeps owning them.
        QuantizedWeight view = new QuantizedWeight(w, weightScale.data(), precision, in);
        Tensor dense = WeightQuantizer.dequantize(view, type);
        return torch.linear(x, dense);
    }

    /**
     * The float32 per-row scales bigmodel's native kernels take with this layer's weight as held now, or null where
     * {@link #forward} does not run those kernels (not quantized, weight off the CPU or absent, libtorch's int4
     * tiles, kernels off). They read THUDM's int8/int4 layouts in place, for decode steps and prompts alike
     * (docs/benchmarks.md, "Kernels"); scales in float32, as the kernels accumulate. Built once and owned by the layer
     * (freed when its weight is replaced or released).
     */
    public Tensor nativeKernelScales() {
        if (!isQuantized() || cpuTiles || !NativeKernels.available() || !weight().isMaterialized()
                || !weight().data().is_cpu()) {
            return null;
        }
        return table(ScalarType.Float).table();
    }

    /** The native kernels' layout of this layer's quantized weight. */
    private Format nativeFormat() {
        return precision == Precision.INT4 ? Format.INT4 : Format.INT8;
    }

    /** The CPU kernel table for activations of {@code type}: the published one, or built now under the lock. */
    private KernelTable table(ScalarType type) {
        KernelTable found = find(tables, type.value);
        if (found != null) {
            return found;
        }
        synchronized (tableLock) {
            KernelTable[] current = tables;
            found = find(current, type.value);
            if (found != null) {
                return found; // another thread built it while this one waited
            }
            long in = inFeatures();
            KernelTable made;
            // Kernel tables outlive the forward pass's pointer scope: kept out of it.
            if (cpuTiles) {
                long group = QuantKernels.int4GroupSize(in);
                made = new KernelTable(type.value, group,
                        Scopes.keep(QuantKernels.int4ScalesAndZeros(weightScale.data(), in, group, type)));
            } else {
                made = new KernelTable(type.value, 0, Scopes.keep(weightScale.data().to(type).contiguous()));
            }
            KernelTable[] next = java.util.Arrays.copyOf(current, current.length + 1);
            next[current.length] = made;
            tables = next;
            return made;
        }
    }

    private static KernelTable find(KernelTable[] in, int type) {
        for (KernelTable t : in) {
            if (t.type() == type) {
                return t;
            }
        }
        return null;
    }

    /** Frees the kernel tables; only when no forward of this layer runs (see {@link #tables}). */
    private void releaseKernelState() {
        synchronized (tableLock) {
            KernelTable[] old = tables;
            tables = NO_TABLES;
            for (KernelTable t : old) {
                t.table().close();
            }
            cpuTiles = false;
        }
    }

    /** Number of CPU kernel tables built so far (for tests: one per activation dtype, whatever the threads). */
    int kernelTableCount() {
        return tables.length;
    }

    @Override
    public void toMeta() {
        releaseKernelState();
        super.toMeta();
    }
}
