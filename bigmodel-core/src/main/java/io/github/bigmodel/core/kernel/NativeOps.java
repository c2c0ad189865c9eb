package io.github.bigmodel.core.kernel;

import io.github.bigmodel.core.Tensors;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.MemoryFormatOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * A transformer layer's small CPU operations, each done in one native call (the library of {@link NativeKernels}):
 * RMSNorm, interleaved rotary in place, SwiGLU gating, and attention of one query position against a key/value
 * cache with grouped key/value heads.
 *
 * <p>Why: besides its matmuls a decode step runs some 80 small libtorch operations per layer (each a dispatch, an
 * allocation and a Java handle; about 0.7 ms per layer whatever the width, while the other threads wait). Each
 * method rounds every intermediate to the tensor's dtype where the operation-by-operation libtorch form does, so
 * results are that form's to the last bit (rotary), or within a rounding of a float32 sum or of {@code exp}.
 * Tensors are float32, bfloat16 or float16 on the CPU; callers check {@link #available()} and otherwise keep their
 * libtorch form.
 *
 * <pre>{@code
 * if (NativeOps.available() && x.is_cpu()) {
 *     Tensor normed = NativeOps.rmsNorm(x, weight, 1e-5);   // x [..., width], weight [width]
 * }
 * }</pre>
 */
// PointerScope blocks are used for what they release on close.
@SuppressWarnings("try")
public final class NativeOps {

    private NativeOps() {
    }

    /** Whether the operations run here: the same switch as {@link NativeKernels#available()}. */
    public static boolean available() {
        return NativeKernels.available();
    }

    /** Whether {@code t}'s dtype is one the operations take. */
    public static boolean supports(Tensor t) {
        return NativeKernels.dtypeCode(t) >= 0 && t.is_cpu();
    }

    /**
     * RMSNorm as ChatGLM2/3 computes it: per row, {@code r = 1/sqrt(mean(x^2) + eps)} in float32, then
     * {@code weight * (x * r)} rounded once to x's dtype.
     *
     * @param x      {@code [..., width]}, any float dtype the operations take
     * @param weight {@code [width]}, float32, bfloat16 or float16
     * @return a new tensor shaped and typed as {@code x}
     */
    public static Tensor rmsNorm(Tensor x, Tensor weight, double eps) {
        requireAvailable();
        int xt = requireType("x", x);
        int wt = requireType("weight", weight);
        long width = x.size(-1);
        if (weight.dim() != 1 || weight.size(0) != width) {
            throw new IllegalArgumentException("RMSNorm weight must be [" + width + "], got "
                    + java.util.Arrays.toString(Tensors.shape(weight)));
        }
        Tensor out;
        try (PointerScope scope = new PointerScope()) {
            Tensor xc = x.contiguous();
            Tensor wc = weight.contiguous();
            out = torch.empty(Tensors.shape(x), new TensorOptions(x.scalar_type()), new MemoryFormatOptional());
            long rows = width == 0 ? 0 : x.numel() / width;
            if (rows > 0) {
                check(rmsNorm0(xc.data_ptr().address(), xt, wc.data_ptr().address(), wt, out.data_ptr().address(),
                        rows, width, (float) eps, threads()));
            }
            out.retainReference();
        }
        return Scopes.handOut(out);
    }

    /**
     * Interleaved rotary, in place: in every row of {@code x}, each of the first {@code heads} heads of
     * {@code headDim} values has its first {@code 2 * cos.size(-1)} values taken as pairs {@code (x0, x1)} and
     * replaced by {@code (x0 c - x1 s, x1 c + x0 s)}, every product and sum rounded to x's dtype (what the same
     * elementwise libtorch operations give).
     *
     * @param x   contiguous {@code [..., width]}; a row is the last dimension, {@code heads * headDim <= width}
     * @param cos {@code [rows, rot/2]} (any leading shape with that many elements), x's dtype or float32, row r for
     *            row r of x
     * @param sin as cos
     */
    public static void rotaryInPlace(Tensor x, long heads, long headDim, Tensor cos, Tensor sin) {
        requireAvailable();
        int xt = requireType("x", x);
        int ct = requireType("cos", cos);
        if (requireType("sin", sin) != ct) {
            throw new IllegalArgumentException("cos and sin must have one dtype");
        }
        if (!x.is_contiguous()) {
            throw new IllegalArgumentException("rotaryInPlace needs a contiguous x");
        }
        long width = x.size(-1);
        long rows = width == 0 ? 0 : x.numel() / width;
        long half = cos.size(-1);
        if (heads < 0 || headDim <= 0 || heads * headDim > width || 2 * half > headDim
                || cos.numel() != rows * half || sin.numel() != rows * half) {
            throw new IllegalArgumentException("rotary: " + heads + " heads of " + headDim + " in rows of " + width
                    + ", cos/sin " + java.util.Arrays.toString(Tensors.shape(cos)) + " for " + rows + " rows");
        }
        if (rows == 0) {
            return;
        }
        try (PointerScope scope = new PointerScope()) {
            Tensor c = cos.contiguous();
            Tensor s = sin.contiguous();
            check(rotary0(x.data_ptr().address(), xt, rows, width, heads, headDim, 2 * half, c.data_ptr().address(),
                    s.data_ptr().address(), ct));
        }
    }

    /**
     * The same interleaved rotary as {@link #rotaryInPlace}, in libtorch operations on any device, returning a new
     * tensor: what runs where the native form does not (a GPU, another dtype, no library), and the form the native
     * one is checked against bit for bit.
     *
     * @param x   {@code [L, B, heads, headDim]}
     * @param cos {@code [L, B, 1, rot/2]}, broadcast over the heads
     * @param sin as cos
     */
    public static Tensor rotaryOps(Tensor x, Tensor cos, Tensor sin) {
        long len = x.size(0);
        long batch = x.size(1);
        long n = x.size(2);
        long half = cos.size(3);
        long rot = half * 2;
        Tensor rotated = x.narrow(3, 0, rot).reshape(len, batch, n, half, 2);
        Tensor x0 = rotated.select(4, 0);
        Tensor x1 = rotated.select(4, 1);
        Tensor out0 = x0.mul(cos).sub(x1.mul(sin));
        Tensor out1 = x1.mul(cos).add(x0.mul(sin));
        Tensor merged = torch.stack(new TensorVector(out0, out1), -1).flatten(3, 4);
        Tensor pass = x.narrow(3, rot, x.size(3) - rot);
        return torch.cat(new TensorVector(merged, pass), 3);
    }

    /**
     * SwiGLU gating: {@code silu(a) * b} for the halves {@code a}, {@code b} of the last dimension of {@code up},
     * silu rounded to up's dtype before the product (as libtorch's two operations do).
     *
     * @param up {@code [..., 2 ffn]}
     * @return a new tensor {@code [..., ffn]} in up's dtype
     */
    public static Tensor swiglu(Tensor up) {
        requireAvailable();
        int t = requireType("up", up);
        long width = up.size(-1);
        if (width % 2 != 0) {
            throw new IllegalArgumentException("SwiGLU needs an even last dimension, got " + width);
        }
        long[] shape = Tensors.shape(up);
        shape[shape.length - 1] = width / 2;
        Tensor out;
        try (PointerScope scope = new PointerScope()) {
            Tensor u = up.contiguous();
            out = torch.empty(shape, new TensorOptions(up.scalar_type()), new MemoryFormatOptional());
            long rows = width == 0 ? 0 : up.numel() / width;
            if (rows > 0 && width > 0) {
                check(swiglu0(u.data_ptr().address(), t, out.data_ptr().address(), rows, width / 2, threads()));
            }
            out.retainReference();
        }
        return Scopes.handOut(out);
    }

    /**
     * Attention of one query position per batch row against {@code T} cached positions, {@code groups} key/value
     * heads each shared by {@code heads / groups} consecutive query heads:
     * {@code s_t = round(round(q . k_t) * preScale) * postScale} (rounding to the dtype; the second product in
     * float32), masked keys at {@code -inf}, softmax in float32 rounded to the dtype, then
     * {@code round(sum_t p_t v_t)}.
     *
     * @param q      {@code [batch, >= heads * headDim]} rows (a view with last-dimension stride 1; rows may be
     *               further apart, as in a fused projection's output)
     * @param keys   {@code [T, batch, groups, headDim]}, contiguous in its last three dimensions (a prefix of a
     *               cache buffer); q's dtype
     * @param values as keys
     * @param mask   bool {@code [batch, T]} (true = masked), or null
     * @return a new contiguous {@code [batch, heads * headDim]} tensor in q's dtype
     */
    public static Tensor attendOne(Tensor q, Tensor keys, Tensor values, long heads, long groups, Tensor mask,
            double preScale, double postScale) {
        requireAvailable();
        int t = requireType("q", q);
        if (requireType("keys", keys) != t || requireType("values", values) != t) {
            throw new IllegalArgumentException("q, keys and values must have one dtype");
        }
        if (keys.dim() != 4 || values.dim() != 4 || !java.util.Arrays.equals(Tensors.shape(keys), Tensors.shape(values))
                || keys.stride(0) != values.stride(0) || keys.stride(1) != values.stride(1)
                || values.stride(2) != keys.stride(2) || values.stride(3) != 1) {
            throw new IllegalArgumentException("keys and values must be [T, batch, groups, headDim] alike");
        }
        long positions = keys.size(0);
        long batch = keys.size(1);
        long headDim = keys.size(3);
        if (keys.size(2) != groups || groups <= 0 || heads % groups != 0 || keys.stride(3) != 1
                || keys.stride(2) != headDim || keys.stride(1) != groups * headDim) {
            throw new IllegalArgumentException("keys must be [T, batch, " + groups + ", headDim] with contiguous"
                    + " rows, got " + java.util.Arrays.toString(Tensors.shape(keys)));
        }
        if (q.dim() != 2 || q.size(0) != batch || q.size(1) < heads * headDim || q.stride(1) != 1) {
            throw new IllegalArgumentException("q must be [" + batch + ", " + heads * headDim + "] rows, got "
                    + java.util.Arrays.toString(Tensors.shape(q)));
        }
        if (positions == 0) {
            throw new IllegalArgumentException("attention needs at least one key");
        }
        Tensor out;
        try (PointerScope scope = new PointerScope()) {
            Tensor m = null;
            if (mask != null) {
                if (!Tensors.hasType(mask, ScalarType.Bool) || mask.numel() != batch * positions || !mask.is_cpu()) {
                    throw new IllegalArgumentException("mask must be bool [" + batch + ", " + positions + "]");
                }
                m = mask.contiguous();
            }
            out = torch.empty(new long[] {batch, heads * headDim}, new TensorOptions(q.scalar_type()),
                    new MemoryFormatOptional());
            check(attend0(t, q.data_ptr().address(), q.stride(0), keys.data_ptr().address(),
                    values.data_ptr().address(), keys.stride(0), keys.stride(1), positions, batch, heads, groups,
                    headDim, m == null ? 0 : m.data_ptr().address(), (float) preScale, (float) postScale,
                    out.data_ptr().address(), threads()));
            out.retainReference();
        }
        return Scopes.handOut(out);
    }

    private static int threads() {
        return Math.max(1, torch.get_num_threads());
    }

    private static void requireAvailable() {
        if (!available()) {
            throw new IllegalStateException("bigmodel's native kernels are not available here");
        }
    }

    /** The C side's dtype code of {@code t}, which must be a float32, bfloat16 or float16 CPU tensor. */
    static int requireType(String what, Tensor t) {
        int code = NativeKernels.dtypeCode(t);
        if (code < 0 || !t.is_cpu()) {
            throw new IllegalArgumentException(what + " must be a float32, bfloat16 or float16 CPU tensor, got "
                    + t.scalar_type() + (t.is_cpu() ? "" : " off the CPU"));
        }
        return code;
    }

    private static void check(int rc) {
        if (rc == 12) {
            throw new OutOfMemoryError("native operation could not allocate its scratch");
        }
        if (rc != 0) {
            throw new IllegalStateException("native operation failed (" + rc + ")");
        }
    }

    private static native int rmsNorm0(long x, int xType, long w, int wType, long y, long rows, long width, float eps,
            int threads);

    private static native int rotary0(long x, int type, long rows, long rowStride, long heads, long headDim, long rot,
            long cos, long sin, int cosType);

    private static native int swiglu0(long up, int type, long out, long rows, long ffn, int threads);

    private static native int attend0(int type, long q, long qBatch, long k, long v, long kvPos, long kvBatch,
            long keys, long batch, long heads, long groups, long dim, long mask, float pre, float post, long out,
            int threads);
}
