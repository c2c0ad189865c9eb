package io.github.bigmodel.core.kernel;

import io.github.bigmodel.core.NativeRuntime;
import io.github.bigmodel.core.Tensors;
import java.io.File;
import org.bytedeco.javacpp.Loader;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.MemoryFormatOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * bigmodel's own CPU matmul kernels ({@code src/main/native/bigmodel_kernels.c}, built with the module on
 * Linux x86-64): {@code y = x W^T}, times a per-row scale for quantized weights, accumulated in float32 ({@code x} and
 * {@code y} in float32, bfloat16 or float16), the weight read once, in place, in its stored layout: bfloat16, float16, THUDM's int8 or THUDM's
 * packed int4 (two values per byte, high nibble first). They run on libtorch's own OpenMP threads.
 *
 * <p>For int8 and int4 weights each row of {@code x} is first rounded to int16 per {@value #ACTIVATION_BLOCK}
 * values (step: the block's largest {@code |x|} / 32767) and a block's products are summed exactly in integers: each
 * {@code x} value moves by at most 1/65534 of its block's largest, far less than the weights' own rounding (int8: 1/254
 * of a row's largest) or bfloat16 activations' 2<sup>-9</sup>, and the kernels then read the weights at the memory's
 * pace instead of widening each to float32 (docs/benchmarks.md, "Kernels"). An {@code x} block holding a NaN or an
 * infinity makes every output it reaches NaN.
 *
 * <p>Why: libtorch's kernels for these weights at one row of activations (every decode step) read the weight at
 * a third to a half of the memory's bandwidth on this project's AVX-512 CPU, and its int4 kernel needs the weight
 * repacked into tiles at every load (docs/benchmarks.md, "Kernels"). Only CPUs with AVX-512 (F, BW, VL, DQ) are
 * served; elsewhere, or when the library is missing or {@code -D}{@value #PROPERTY}{@code =false},
 * {@link #available()} is false and callers use libtorch.
 *
 * <pre>{@code
 * if (NativeKernels.available()) {
 *     Tensor y = NativeKernels.mm(NativeKernels.Format.INT8, x2d, codes, scalesF32);   // [m, n], x2d's dtype
 * }
 * }</pre>
 */
// PointerScope blocks are used for what they release on close.
@SuppressWarnings("try")
public final class NativeKernels {

    /** System property: {@code false} keeps libtorch's kernels everywhere (for measurements and comparisons). */
    public static final String PROPERTY = "bigmodel.kernels.native";

    /** Values of a row of {@code x} that share one int16 step for int8/int4 weights (see the class comment). */
    public static final int ACTIVATION_BLOCK = 128;

    private static final Logger LOG = LoggerFactory.getLogger(NativeKernels.class);
    private static final String LIBRARY = "linux-x86_64/libbigmodel_kernels.so";

    /** The stored layouts the kernels read; the codes match the C side's. */
    public enum Format {
        /** bfloat16, [n, k]. */
        BF16(0),
        /** IEEE float16, [n, k]. */
        FP16(1),
        /** int8 codes [n, k] with one scale per row. */
        INT8(2),
        /** int4 codes packed two per byte [n, k/2], value 2j in byte j's high nibble, one scale per row. */
        INT4(3);

        final int code;

        Format(int code) {
            this.code = code;
        }

        /** Whether this layout carries a per-row scale. */
        public boolean quantized() {
            return this == INT8 || this == INT4;
        }
    }

    private static final int LEVEL = load();
    private static volatile boolean enabled = LEVEL > 0 && !"false".equalsIgnoreCase(System.getProperty(PROPERTY));

    private NativeKernels() {
    }

    private static int load() {
        String os = System.getProperty("os.name", "").toLowerCase(java.util.Locale.ROOT);
        String arch = System.getProperty("os.arch", "");
        if (!os.contains("linux") || !(arch.equals("amd64") || arch.equals("x86_64"))) {
            LOG.debug("bigmodel's native kernels are built for Linux x86-64 only; libtorch's kernels are used");
            return 0;
        }
        try {
            // libtorch first: the kernels link against the libgomp that libtorch's natives bring.
            NativeRuntime.init();
            Loader.load(torch.class);
            File file = Loader.cacheResource(NativeKernels.class, LIBRARY);
            if (file == null) {
                LOG.info("bigmodel's native kernels are not in this build (no {}): libtorch's kernels are used",
                        LIBRARY);
                return 0;
            }
            System.load(file.getAbsolutePath());
            int level = level();
            if (level == 0) {
                LOG.info("This CPU lacks AVX-512: bigmodel's native kernels unused, libtorch's kernels are used");
            } else {
                LOG.debug("bigmodel's native kernels loaded ({})", level == 2 ? "AVX-512 with BF16" : "AVX-512");
            }
            return level;
        } catch (java.io.IOException | LinkageError | RuntimeException e) {
            LOG.warn("bigmodel's native kernels could not be loaded ({}): libtorch's kernels are used", e.toString());
            return 0;
        }
    }

    /** Whether the kernels run here: library loaded, CPU supported, not turned off. */
    public static boolean available() {
        return enabled;
    }

    /** Whether the kernels could run here, whether or not they are turned off. */
    public static boolean supported() {
        return LEVEL > 0;
    }

    /** Turns the kernels off or back on (when supported) in this JVM: for measurements and tests. */
    public static void setEnabled(boolean on) {
        enabled = on && LEVEL > 0;
    }

    /**
     * {@code x W^T}, times {@code scale} per output column for quantized formats: {@code [m, n]} in {@code x}'s
     * dtype, accumulated in float32 and rounded once.
     *
     * @param x     float32, bfloat16 or float16 {@code [m, k]}, contiguous, on the CPU
     * @param w     the weight in {@code format}'s layout, contiguous, on the CPU: {@code [n, k]} ({@code [n, k/2]}
     *              bytes for int4)
     * @param scale float32 {@code [n]} for int8/int4, else null
     * @throws IllegalStateException    when {@link #available()} is false
     * @throws IllegalArgumentException when a tensor does not match the format
     */
    public static Tensor mm(Format format, Tensor x, Tensor w, Tensor scale) {
        if (!enabled) {
            throw new IllegalStateException("bigmodel's native kernels are not available here");
        }
        int type = check(format, x, w, scale);
        long m = x.size(0);
        long k = x.size(1);
        long n = w.size(0);
        Tensor y;
        try (PointerScope scope = new PointerScope()) {
            y = torch.empty(new long[] {m, n}, new TensorOptions(x.scalar_type()), new MemoryFormatOptional());
            // no rows: the empty result as it is (an empty tensor has no data pointer to pass)
            if (m > 0) {
                int rc = mm0(format.code, w.data_ptr().address(), scale == null ? 0 : scale.data_ptr().address(),
                        x.data_ptr().address(), type, y.data_ptr().address(), type, m, n, k,
                        Math.max(1, torch.get_num_threads()));
                if (rc != 0) {
                    throw new IllegalStateException("native kernel failed (" + rc + ")");
                }
            }
            y.retainReference();
        }
        return Scopes.handOut(y);
    }

    /**
     * What a layer runs: {@link #mm} over the rows of {@code x} of any shape {@code [..., k]}, plus {@code bias},
     * back in {@code x}'s shape with the last dimension {@code n}.
     *
     * @param scale float32 {@code [n]} for int8/int4, else null
     * @param bias  {@code [n]} in any float dtype, or null
     */
    public static Tensor linear(Format format, Tensor x, Tensor w, Tensor scale, Tensor bias) {
        long k = x.size(-1);
        long[] shape = Tensors.shape(x);
        shape[shape.length - 1] = w.size(0);
        Tensor out;
        try (PointerScope scope = new PointerScope()) {
            Tensor y = mm(format, x.reshape(-1, k).contiguous(), w, scale);
            if (bias != null) {
                y = y.add(bias.to(y.scalar_type()));
            }
            out = y.view(shape);
            out.retainReference();
        }
        return Scopes.handOut(out);
    }

    /**
     * The format these kernels compute {@code x W^T} in for a floating-point weight, by what measured fastest on the
     * CPU (docs/benchmarks.md, "Kernels"), or null where libtorch's {@code linear} runs: a float16 weight at any
     * number of rows, a bfloat16 weight at one row (libtorch reads bf16 at one row and fp16 at several rows 2.5 to 5
     * times slower), {@code x} in the weight's dtype; float32 weights and prompts against bfloat16 weights stay with
     * libtorch. The one rule for every floating-point projection, fused or not.
     *
     * @param activationType {@code x}'s {@link ScalarType} value
     * @param rows           rows of {@code x}
     */
    public static Format floatFormat(Tensor w, int activationType, long rows) {
        if (!enabled || rows <= 0 || !w.is_cpu() || w.dim() != 2 || !w.is_contiguous()) {
            return null;
        }
        // ScalarType values from libtorch are not always the enum's own instances: compared by value.
        int type = w.scalar_type().value;
        if (activationType != type) {
            return null;
        }
        if (type == ScalarType.Half.value) {
            return Format.FP16;
        }
        return type == ScalarType.BFloat16.value && rows == 1 ? Format.BF16 : null;
    }

    /** The C side's code for a float tensor's dtype: 0 float32, 1 bfloat16, 2 float16; -1 for any other. */
    static int dtypeCode(Tensor t) {
        int v = t.scalar_type().value;
        return v == ScalarType.Float.value ? 0 : v == ScalarType.BFloat16.value ? 1 : v == ScalarType.Half.value ? 2
                : -1;
    }

    /** Checks the arguments; returns the C side's code for x's dtype (0 float32, 1 bfloat16, 2 float16). */
    private static int check(Format format, Tensor x, Tensor w, Tensor scale) {
        int code = dtypeCode(x);
        if (x.dim() != 2 || code < 0 || !x.is_contiguous() || !x.is_cpu()) {
            throw new IllegalArgumentException("x must be a contiguous float32, bfloat16 or float16 CPU matrix");
        }
        checkWeight("", format, w, x.size(1), scale);
        return code;
    }

    /**
     * Checks a weight in {@code format}'s layout for {@code k} input columns, and its scales (float32 per row for
     * int8/int4, none otherwise): what every caller of the kernels hands them. {@code what} prefixes the message.
     */
    static void checkWeight(String what, Format format, Tensor w, long k, Tensor scale) {
        int expected = switch (format) {
            case BF16 -> ScalarType.BFloat16.value;
            case FP16 -> ScalarType.Half.value;
            case INT8, INT4 -> ScalarType.Char.value;
        };
        long columns = format == Format.INT4 ? k / 2 : k;
        if (w.dim() != 2 || w.scalar_type().value != expected || !w.is_contiguous() || !w.is_cpu()
                || w.size(1) != columns || (format == Format.INT4 && k % 2 != 0) || k == 0 || w.size(0) == 0) {
            throw new IllegalArgumentException(what + format + " weight must be a contiguous CPU tensor [n, " + columns
                    + "] of " + ScalarType.values()[expected] + ", got " + java.util.Arrays.toString(Tensors.shape(w))
                    + " " + w.scalar_type());
        }
        if (format.quantized()) {
            if (scale == null || scale.dim() != 1 || scale.size(0) != w.size(0) || !scale.is_contiguous()
                    || scale.scalar_type().value != ScalarType.Float.value || !scale.is_cpu()) {
                throw new IllegalArgumentException(what + format + " needs float32 scales [" + w.size(0) + "]");
            }
        } else if (scale != null) {
            throw new IllegalArgumentException(what + format + " takes no scales");
        }
    }

    /**
     * Advises the kernel to back the 2 MiB-aligned middle of {@code [address, address + length)} with huge pages
     * ({@code MADV_HUGEPAGE}); false when the library is not loaded or the call failed. For a mapped checkpoint
     * whose pages are not yet cached this makes them come in as 2 MiB folios, read through far fewer TLB entries.
     */
    public static boolean adviseHugePages(long address, long length) {
        return advise("MADV_HUGEPAGE", length, () -> adviseHugePages0(address, length));
    }

    /**
     * Maps every page of {@code [address, address + length)} now, in one call ({@code MADV_POPULATE_READ}), reading
     * what the page cache lacks; false when the library is not loaded or the kernel cannot (then reads fault pages
     * in one by one, as before). For a copy out of a mapped file: one call instead of a fault per page.
     */
    public static boolean populate(long address, long length) {
        return advise("MADV_POPULATE_READ", length, () -> populate0(address, length));
    }

    /** Runs one madvise of the library (returning 0 or an errno); false without the library or on failure. */
    private static boolean advise(String advice, long length, java.util.function.IntSupplier call) {
        if (LEVEL == 0 || length <= 0) {
            return false;
        }
        int rc = call.getAsInt();
        if (rc != 0) {
            LOG.debug("madvise({}) failed: errno {}", advice, rc);
        }
        return rc == 0;
    }

    private static native int level();

    private static native int mm0(int format, long w, long scale, long x, int xType, long y, int yType, long m, long n,
            long k, int threads);

    private static native int adviseHugePages0(long address, long length);

    private static native int populate0(long address, long length);
}
