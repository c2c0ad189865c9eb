package io.github.bigmodel.chatglm.model;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.ForwardScope;
import io.github.bigmodel.core.Module;
import io.github.bigmodel.core.Parameter;
import org.bytedeco.pytorch.Tensor;
import io.github.bigmodel.chatglm.internal.Ops;

/** RMSNorm (ChatGLM2/3, weight only) or LayerNorm (weight and bias), reporting the official class name. */
final class Norm extends Module {

    private final boolean rms;
    private final double eps;
    private final Parameter weight;
    private final Parameter bias;

    Norm(boolean rms, long size, double eps, DType dtype) {
        super(rms ? "RMSNorm" : "LayerNorm");
        this.rms = rms;
        this.eps = eps;
        this.weight = registerParameter("weight", Parameter.empty(dtype, size));
        this.bias = rms ? null : registerParameter("bias", Parameter.empty(dtype, size));
    }

    boolean isRms() {
        return rms;
    }

    double eps() {
        return eps;
    }

    Parameter weight() {
        return weight;
    }

    Tensor forward(Tensor x) {
        try (ForwardScope f = enterForward()) {
            Tensor in = Ops.onDeviceOf(f.input(x), weight.data());
            return f.output(rms ? Ops.rmsNorm(in, weight, eps) : Ops.layerNorm(in, weight, bias, eps));
        }
    }
}
