package io.github.bigmodel.chatglm.internal;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.Parameter;
import io.github.bigmodel.core.Tensors;
import io.github.bigmodel.core.kernel.NativeKernels;
import io.github.bigmodel.core.kernel.NativeOps;
import io.github.bigmodel.core.kernel.Scopes;
import org.bytedeco.javacpp.LongPointer;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.MemoryFormatOptional;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.ScalarTypeOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptional;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/** libtorch helpers shared by the ChatGLM modules. Every returned tensor is a new handle the caller owns. */
public final class Ops {

    private Ops() {
    }

    /** {@code x} on the device of {@code like}, without a copy when it is already there. */
    public static Tensor onDeviceOf(Tensor x, Tensor like) {
        if (Tensors.deviceOf(x).equals(Tensors.deviceOf(like))) {
            return x;
        }
        return x.to(like.device(), x.scalar_type());
    }

    /** {@code x} on {@code device}, without a copy when it is already there. */
    public static Tensor onDevice(Tensor x, Device device) {
        if (Tensors.deviceOf(x).equals(device)) {
            return x;
        }
        return x.to(Tensors.toTorch(device), x.scalar_type());
    }

    public static Tensor to(Tensor x, Device device, ScalarType type) {
        return x.to(Tensors.toTorch(device), type);
    }

    /**
     * {@code a.matmul(b)} for the attention's batched products ({@code [..., m, k] x [..., k, n]}, the same leading
     * dimensions), except for float16 on the CPU: libtorch has no fast float16 GEMM there (its reference loop ran the
     * attention of the 6B's 256-token prompt at about 2 GMAC/s, 27% of the prompt's time). There each product runs in
     * bigmodel's float16 kernel ({@link NativeKernels#mm}: float32 sums, rounded to float16 once, as libtorch's own
     * float16 path rounds, on the OpenMP threads the rest of the step uses), {@code b} transposed into the kernel's
     * row layout first. Without the native kernels: widened to float32 for libtorch's float32 BLAS, whose own
     * threads then compete with OpenMP's (a 16-token prompt of the 6B took twice as long that way).
     *
     * <pre>{@code Tensor scores = Ops.matmul(queries, keys);}</pre>
     */
    public static Tensor matmul(Tensor a, Tensor b) {
        boolean halfOnCpu = Tensors.hasType(a, ScalarType.Half) && Tensors.hasType(b, ScalarType.Half)
                && Tensors.deviceOf(a).isCpu() && Tensors.deviceOf(b).isCpu();
        if (!halfOnCpu) {
            return a.matmul(b);
        }
        long[] as = Tensors.shape(a);
        long[] bs = Tensors.shape(b);
        int d = as.length;
        boolean sameLeading = d >= 2 && bs.length == d && as[d - 1] == bs[d - 2];
        for (int i = 0; sameLeading && i < d - 2; i++) {
            sameLeading = as[i] == bs[i];
        }
        if (!NativeKernels.available() || !sameLeading) {
            return a.to(ScalarType.Float).matmul(b.to(ScalarType.Float)).to(ScalarType.Half);
        }
        long m = as[d - 2];
        long k = as[d - 1];
        long n = bs[d - 1];
        long[] outShape = as.clone();
        outShape[d - 1] = n;
        Tensor out;
        try (PointerScope scope = new PointerScope()) {
            Tensor x = a.reshape(-1, m, k).contiguous();
            Tensor w = b.transpose(-2, -1).reshape(-1, n, k).contiguous();
            Tensor y = torch.empty(new long[] {x.size(0), m, n}, new TensorOptions(ScalarType.Half),
                    new MemoryFormatOptional());
            for (long i = 0; i < x.size(0); i++) {
                y.select(0, i).copy_(NativeKernels.mm(NativeKernels.Format.FP16, x.select(0, i), w.select(0, i), null));
            }
            out = y.view(outShape);
            out.retainReference();
        }
        return Scopes.handOut(out);
    }

    /**
     * RMSNorm as ChatGLM2/3 computes it: statistics in float32, scaled by the weight, back to the input dtype. On the
     * CPU one native call ({@link NativeOps#rmsNorm}) instead of seven operations.
     */
    public static Tensor rmsNorm(Tensor x, Parameter weight, double eps) {
        Tensor w = weight.data();
        if (NativeOps.available() && NativeOps.supports(x) && NativeOps.supports(w)) {
            return NativeOps.rmsNorm(x, w, eps);
        }
        ScalarType inputType = x.scalar_type();
        Tensor xf = Tensors.hasType(x, ScalarType.Float) ? x : x.to(ScalarType.Float);
        Tensor variance = xf.mul(xf).mean(new long[] {-1}, true, new ScalarTypeOptional());
        Tensor normed = x.mul(variance.add(new Scalar(eps)).rsqrt());
        Tensor out = weight.data().mul(normed);
        return Tensors.sameType(out, x) ? out : out.to(inputType);
    }

    public static Tensor layerNorm(Tensor x, Parameter weight, Parameter bias, double eps) {
        return torch.layer_norm(x, new long[] {weight.dim(0)}, new TensorOptional(weight.data()),
                bias == null ? new TensorOptional() : new TensorOptional(bias.data()), eps, true);
    }

    /** The tanh GELU in the operation order of ChatGLM-6B's scripted {@code gelu_impl}. */
    public static Tensor geluTanh(Tensor x) {
        Tensor half = x.mul(new Scalar(0.5));
        Tensor inner = x.mul(new Scalar(0.7978845608028654))
                .mul(x.mul(new Scalar(0.044715)).mul(x).add(new Scalar(1.0)));
        return half.mul(torch.tanh(inner).add(new Scalar(1.0)));
    }

    /** A CPU int64 tensor with these values. */
    public static Tensor longTensor(long[] values, long... shape) {
        try (LongPointer p = new LongPointer(values)) {
            return torch.from_blob(p, shape, new TensorOptions(ScalarType.Long)).clone();
        }
    }

    /** The values of an integer tensor (any device, any integer dtype) in row-major order. */
    public static long[] longs(Tensor t) {
        try (Tensor c = t.to(Tensors.toTorch(Device.CPU), ScalarType.Long).contiguous()) {
            long[] out = new long[(int) c.numel()];
            c.data_ptr_long().get(out);
            return out;
        }
    }

    public static float[] floats(Tensor t) {
        try (Tensor c = t.to(Tensors.toTorch(Device.CPU), ScalarType.Float).contiguous()) {
            float[] out = new float[(int) c.numel()];
            c.data_ptr_float().get(out);
            return out;
        }
    }

    public static long[][] rows(Tensor t2d) {
        long[] shape = Tensors.shape(t2d);
        if (shape.length != 2) {
            throw new IllegalArgumentException("Expected a 2-d tensor, got shape " + java.util.Arrays.toString(shape));
        }
        long[] flat = longs(t2d);
        long[][] out = new long[(int) shape[0]][(int) shape[1]];
        for (int i = 0; i < out.length; i++) {
            System.arraycopy(flat, i * (int) shape[1], out[i], 0, (int) shape[1]);
        }
        return out;
    }

    public static long[] flatten(long[][] rows) {
        int width = rows.length == 0 ? 0 : rows[0].length;
        long[] flat = new long[rows.length * width];
        for (int i = 0; i < rows.length; i++) {
            System.arraycopy(rows[i], 0, flat, i * width, width);
        }
        return flat;
    }

    public static ScalarType scalarType(DType d) {
        return d.scalarType();
    }
}
