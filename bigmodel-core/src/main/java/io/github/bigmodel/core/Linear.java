package io.github.bigmodel.core;

import io.github.bigmodel.core.kernel.NativeKernels;
import io.github.bigmodel.core.kernel.NativeKernels.Format;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptional;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * {@code y = x W^T + b}, PyTorch's {@code nn.Linear}: {@code weight} of shape [out, in] and an optional
 * {@code bias} of shape [out].
 *
 * <pre>{@code
 * Linear fc = new Linear(10000, 10000, true, DType.FLOAT32);   // on meta: no memory
 * fc.weight().set(loaded);                                      // materialize
 * Tensor y = fc.forward(x);
 * }</pre>
 */
public class Linear extends Module {

    private final Parameter weight;
    private final Parameter bias;

    public Linear(long inFeatures, long outFeatures, boolean bias, DType dtype) {
        this.weight = registerParameter("weight", Parameter.empty(dtype, outFeatures, inFeatures));
        this.bias = bias ? registerParameter("bias", Parameter.empty(dtype, outFeatures)) : null;
    }

    public Parameter weight() {
        return weight;
    }

    /** The bias, or null when the layer has none. */
    public Parameter bias() {
        return bias;
    }

    public long inFeatures() {
        return weight.dim(1);
    }

    public long outFeatures() {
        return weight.dim(0);
    }

    /**
     * Applies the layer. Without hooks the input must be on the weight's device and in its dtype; an
     * alignment hook moves it there.
     *
     * <p>The kernel is chosen here, for every floating-point linear layer, by what measured fastest on the CPU
     * (docs/benchmarks.md, "Kernels"): a bfloat16 weight with one row of activations (a decode step) and a float16
     * weight with any number of rows run bigmodel's native kernels ({@link NativeKernels}: libtorch reads bf16
     * at one row and fp16 at several rows 2.5 to 5 times slower); prompts against bfloat16 weights, float32
     * weights and GPUs run libtorch's {@code linear}.
     */
    public Tensor forward(Tensor input) {
        try (ForwardScope f = enterForward()) {
            Tensor x = f.input(input);
            return f.output(compute(x, weight.data(), bias == null ? null : bias.data()));
        }
    }

    /**
     * {@code x W^T + b} with the kernel {@link #forward} would choose: the one rule for every floating-point
     * projection, also for modules that hold their weight elsewhere (a head tied to the embeddings).
     *
     * <pre>{@code
     * Tensor logits = Linear.compute(hidden, embeddings, null);
     * }</pre>
     *
     * @param bias {@code [out]} or null
     */
    public static Tensor compute(Tensor x, Tensor w, Tensor bias) {
        Format format = nativeFormat(x, w);
        if (format != null) {
            return NativeKernels.linear(format, x, w, null, bias);
        }
        return bias == null ? torch.linear(x, w) : torch.linear(x, w, new TensorOptional(bias));
    }

    /** The native kernel's format for {@code x W^T}, or null where libtorch's {@code linear} runs. */
    private static Format nativeFormat(Tensor x, Tensor w) {
        if (x.dim() < 1 || w.dim() != 2 || x.size(-1) != w.size(1) || x.numel() == 0) {
            return null;
        }
        return NativeKernels.floatFormat(w, x.scalar_type().value, x.numel() / x.size(-1));
    }
}
