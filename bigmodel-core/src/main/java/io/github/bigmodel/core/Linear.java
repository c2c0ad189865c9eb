package io.github.bigmodel.core;

import io.github.bigmodel.core.kernel.HalfGemv;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptional;
import org.bytedeco.pytorch.global.torch;

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
     * <p>The kernel is chosen here, for every floating-point linear layer: one row of activations against a
     * bfloat16/float16 weight on the CPU (a decode step) runs {@link HalfGemv} when the JVM has the Vector API
     * module; everything else (prompts, float32, GPUs) runs libtorch's {@code linear}.
     */
    public Tensor forward(Tensor input) {
        try (ForwardScope f = enterForward()) {
            Tensor x = f.input(input);
            Tensor w = weight.data();
            Tensor y;
            if (HalfGemv.applies(x, w)) {
                y = HalfGemv.linear(x, w, bias == null ? null : bias.data());
            } else {
                y = bias == null ? torch.linear(x, w) : torch.linear(x, w, new TensorOptional(bias.data()));
            }
            return f.output(y);
        }
    }
}
