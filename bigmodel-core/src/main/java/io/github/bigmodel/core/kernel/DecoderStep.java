package io.github.bigmodel.core.kernel;

import io.github.bigmodel.core.Tensors;
import io.github.bigmodel.core.kernel.NativeKernels.Format;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.MemoryFormatOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;

/**
 * One position of one sequence (a decode step) through a pre-norm decoder block in a single native call, ChatGLM2/3's
 * {@code GLMBlock}:
 * <pre>
 *   n1 = rmsNorm(x); qkv = W_qkv n1 (+ b); interleaved rotary on the query and key heads;
 *   key and value written into the cache at {@code position}; ctx = the query heads' attention over positions
 *   [0, position]; h = (n1 or x) + W_o ctx (+ b); n2 = rmsNorm(h); out = (n2 or h) + W_down swiglu(W_up n2 (+ b)) (+ b)
 * </pre>
 * Each part is the native operation the op-by-op form runs ({@link NativeOps#rmsNorm}, {@link NativeKernels#mm},
 * {@link NativeOps#rotaryInPlace}, {@link NativeOps#attendOne}, {@link NativeOps#swiglu}) with the same roundings
 * to the activations' dtype, so the result equals that form's bit for bit when each projection is given the format
 * the op-by-op form would pick for it.
 *
 * <p>Why: between its matmuls a block's op-by-op decode step spends about 0.3 ms on one thread (Java handles, JNI,
 * libtorch dispatch, a parallel region per matmul) while the other threads wait: 8% of a 6B int4 step. Here the block
 * is one call and one parallel region whose threads meet at barriers.
 *
 * <pre>{@code
 * if (DecoderStep.available()) {
 *     Tensor out = DecoderStep.run(x, norm1, qkv, cos, sin, keys, values, cache.length(), dense, norm2, up, down,
 *             new DecoderStep.Shape(32, 2, 128, 1e-5, preScale, postScale, false));
 * }
 * }</pre>
 */
// PointerScope blocks are used for what they release on close.
@SuppressWarnings("try")
public final class DecoderStep {

    /** System property: {@code false} keeps the op-by-op form (for measurements and comparisons). */
    public static final String PROPERTY = "bigmodel.kernels.fusedBlock";

    private static volatile boolean enabled = !"false".equalsIgnoreCase(System.getProperty(PROPERTY));
    private static final java.util.concurrent.atomic.LongAdder CALLS = new java.util.concurrent.atomic.LongAdder();

    private DecoderStep() {
    }

    /**
     * A projection's weight as the native kernels read it.
     *
     * @param format the weight's stored layout
     * @param weight {@code [n, k]} in the format's dtype ({@code [n, k/2]} bytes for int4), contiguous, on the CPU
     * @param scale  float32 {@code [n]} for int8/int4, else null
     * @param bias   {@code [n]} in any float dtype, or null
     */
    public record Projection(Format format, Tensor weight, Tensor scale, Tensor bias) {
    }

    /**
     * The block's sizes and constants.
     *
     * @param heads            query heads
     * @param groups           key/value heads, each shared by {@code heads / groups} query heads
     * @param headDim          values per head
     * @param eps              both norms' epsilon
     * @param preScale         attention scores: {@code round(q.k) * preScale} rounded to the dtype,
     * @param postScale        then times {@code postScale} in float32 ({@link NativeOps#attendOne})
     * @param residualFromNorm whether the residuals start from the norms' outputs instead of their inputs
     */
    public record Shape(long heads, long groups, long headDim, double eps, double preScale, double postScale,
            boolean residualFromNorm) {
    }

    /** Whether {@link #run} works here: the native kernels are available and the fused step is not turned off. */
    public static boolean available() {
        return enabled && NativeKernels.available();
    }

    /** Blocks run by {@link #run} in this JVM so far: for tests and diagnostics (which form a model took). */
    public static long calls() {
        return CALLS.sum();
    }

    /** Turns the fused step off or back on in this JVM: for measurements and tests. */
    public static void setEnabled(boolean on) {
        enabled = on;
    }

    /**
     * Runs the block for one position, writing its key and value into row {@code position} of the cache buffers.
     *
     * @param x        {@code [..., hidden]} with one position of one sequence ({@code hidden} values), contiguous,
     *                 float32, bfloat16 or float16 on the CPU
     * @param norm1    the first RMSNorm's weight {@code [hidden]}
     * @param qkv      {@code [(heads + 2 groups) headDim, hidden]}: queries, keys, values
     * @param cos      {@code rot/2} values for this position (rotary on the first {@code rot} values of each head)
     * @param sin      as cos
     * @param keys     the layer's key buffer {@code [capacity, 1, groups, headDim]}, x's dtype, contiguous
     * @param values   as keys
     * @param position the position written and attended up to; keys and values of {@code [0, position)} are read
     * @param dense    {@code [hidden, heads headDim]}
     * @param norm2    the second RMSNorm's weight {@code [hidden]}
     * @param up       {@code [2 ffn, hidden]}: the gate half, then the value half
     * @param down     {@code [hidden, ffn]}
     * @return a new tensor shaped and typed as {@code x}
     * @throws IllegalStateException    when {@link #available()} is false
     * @throws IllegalArgumentException when a tensor does not fit the others
     */
    public static Tensor run(Tensor x, Tensor norm1, Projection qkv, Tensor cos, Tensor sin, Tensor keys,
            Tensor values, long position, Projection dense, Tensor norm2, Projection up, Projection down,
            Shape shape) {
        if (!available()) {
            throw new IllegalStateException("the fused decoder step is not available here");
        }
        int type = NativeOps.requireType("x", x);
        if (!x.is_contiguous()) {
            throw new IllegalArgumentException("x must be contiguous");
        }
        long hidden = x.size(-1);
        long heads = shape.heads();
        long groups = shape.groups();
        long headDim = shape.headDim();
        if (x.numel() != hidden || groups <= 0 || heads <= 0 || heads % groups != 0 || headDim <= 0) {
            throw new IllegalArgumentException("one position of one sequence and heads divisible by groups, got x "
                    + java.util.Arrays.toString(Tensors.shape(x)) + ", " + heads + " heads, " + groups + " groups");
        }
        long ffn = up.weight().size(0) / 2;
        long[] args = new long[ARG_COUNT];
        Tensor out;
        try (PointerScope scope = new PointerScope()) {
            args[X] = x.data_ptr().address();
            args[NORM1_TYPE] = NativeOps.requireType("norm1", norm1);
            args[NORM1] = vector("norm1", norm1, hidden);
            args[NORM2_TYPE] = NativeOps.requireType("norm2", norm2);
            args[NORM2] = vector("norm2", norm2, hidden);
            long half = cos.numel();
            if (2 * half > headDim || half == 0) {
                throw new IllegalArgumentException("rotary of " + 2 * half + " values does not fit heads of " + headDim);
            }
            args[COS_TYPE] = NativeOps.requireType("cos", cos);
            args[COS] = vector("cos", cos, half);
            args[SIN] = vector("sin", sin, half);
            if (NativeOps.requireType("sin", sin) != args[COS_TYPE]) {
                throw new IllegalArgumentException("cos and sin must have one dtype");
            }
            projection(0, "qkv", qkv, (heads + 2 * groups) * headDim, hidden, args);
            projection(1, "dense", dense, hidden, heads * headDim, args);
            projection(2, "up", up, 2 * ffn, hidden, args);
            projection(3, "down", down, hidden, ffn, args);
            if (ffn == 0 || up.weight().size(0) % 2 != 0) {
                throw new IllegalArgumentException("up must have an even, non-zero number of rows");
            }
            args[KEYS] = cache("keys", keys, type, position, groups, headDim);
            args[VALUES] = cache("values", values, type, position, groups, headDim);
            if (keys.stride(0) != values.stride(0)) {
                throw new IllegalArgumentException("keys and values must have one layout");
            }
            out = torch.empty(Tensors.shape(x), new TensorOptions(x.scalar_type()), new MemoryFormatOptional());
            args[OUT] = out.data_ptr().address();
            args[TYPE] = type;
            args[HEADS] = heads;
            args[GROUPS] = groups;
            args[HEAD_DIM] = headDim;
            args[ROT] = 2 * half;
            args[POS] = position;
            args[KV_POS] = keys.stride(0);
            args[RESIDUAL_FROM_NORM] = shape.residualFromNorm() ? 1 : 0;
            args[THREADS] = Math.max(1, torch.get_num_threads());
            int rc = step0(args, (float) shape.eps(), (float) shape.preScale(), (float) shape.postScale());
            if (rc == 12) {
                throw new OutOfMemoryError("the fused decoder step could not allocate its scratch");
            }
            if (rc != 0) {
                throw new IllegalStateException("the fused decoder step failed (" + rc + ")");
            }
            out.retainReference();
        }
        CALLS.increment();
        return Scopes.handOut(out);
    }

    // The argument array's layout; the C side (bigmodel_kernels.c, "a decoder block at one position") mirrors it.
    private static final int X = 0;
    private static final int OUT = 1;
    private static final int NORM1 = 2;
    private static final int NORM2 = 3;
    private static final int COS = 4;
    private static final int SIN = 5;
    private static final int KEYS = 6;
    private static final int VALUES = 7;
    private static final int PROJ = 8;
    private static final int TYPE = PROJ + 28;
    private static final int NORM1_TYPE = TYPE + 1;
    private static final int NORM2_TYPE = TYPE + 2;
    private static final int COS_TYPE = TYPE + 3;
    private static final int HEADS = TYPE + 4;
    private static final int GROUPS = TYPE + 5;
    private static final int HEAD_DIM = TYPE + 6;
    private static final int ROT = TYPE + 7;
    private static final int POS = TYPE + 8;
    private static final int KV_POS = TYPE + 9;
    private static final int RESIDUAL_FROM_NORM = TYPE + 10;
    private static final int THREADS = TYPE + 11;
    private static final int ARG_COUNT = TYPE + 12;

    /** The address of {@code t}, which must hold {@code n} contiguous values. */
    private static long vector(String what, Tensor t, long n) {
        if (t.numel() != n || !t.is_contiguous()) {
            throw new IllegalArgumentException(what + " must be " + n + " contiguous values, got "
                    + java.util.Arrays.toString(Tensors.shape(t)));
        }
        return t.data_ptr().address();
    }

    private static void projection(int index, String what, Projection p, long n, long k, long[] args) {
        Tensor w = p.weight();
        Format format = p.format();
        NativeKernels.checkWeight(what + ": ", format, w, k, p.scale());
        if (w.size(0) != n) {
            throw new IllegalArgumentException(what + ": the weight must have " + n + " rows, got "
                    + java.util.Arrays.toString(Tensors.shape(w)));
        }
        int base = PROJ + 7 * index;
        args[base] = format.code;
        args[base + 1] = w.data_ptr().address();
        if (format.quantized()) {
            args[base + 2] = p.scale().data_ptr().address();
        }
        if (p.bias() != null) {
            args[base + 4] = NativeOps.requireType(what + " bias", p.bias());
            args[base + 3] = vector(what + " bias", p.bias(), n);
        }
        args[base + 5] = n;
        args[base + 6] = k;
    }

    /** A cache buffer {@code [capacity, 1, groups, headDim]} with room for {@code position}: its address. */
    private static long cache(String what, Tensor t, int type, long position, long groups, long headDim) {
        if (NativeOps.requireType(what, t) != type || t.dim() != 4 || t.size(1) != 1 || t.size(2) != groups
                || t.size(3) != headDim || !t.is_contiguous()) {
            throw new IllegalArgumentException(what + " must be a contiguous [capacity, 1, " + groups + ", " + headDim
                    + "] buffer in x's dtype, got " + java.util.Arrays.toString(Tensors.shape(t)) + " "
                    + t.scalar_type());
        }
        if (position < 0 || position >= t.size(0)) {
            throw new IllegalArgumentException("position " + position + " is outside the " + what + " buffer of "
                    + t.size(0));
        }
        return t.data_ptr().address();
    }

    private static native int step0(long[] args, float eps, float preScale, float postScale);
}
