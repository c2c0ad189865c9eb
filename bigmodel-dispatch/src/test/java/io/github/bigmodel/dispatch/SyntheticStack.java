package io.github.bigmodel.dispatch;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.ForwardScope;
import io.github.bigmodel.core.Linear;
import io.github.bigmodel.core.Module;
import io.github.bigmodel.core.ModuleList;
import io.github.bigmodel.core.Parameter;
import java.util.LinkedHashMap;
import java.util.Map;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;

/** A stack of residual MLP blocks, the test model for dispatch: small, deterministic, with a forward. */
final class SyntheticStack extends Module {

    static final class Block extends Module {
        final Linear up;
        final Linear down;

        Block(int hidden) {
            up = registerModule("up", new Linear(hidden, 2L * hidden, true, DType.FLOAT32));
            down = registerModule("down", new Linear(2L * hidden, hidden, true, DType.FLOAT32));
        }

        @Override
        public String className() {
            return "Block";
        }

        Tensor forward(Tensor hidden) {
            try (ForwardScope f = enterForward()) {
                Tensor x = f.input(hidden);
                try (Tensor h = up.forward(x); Tensor a = torch.gelu(h); Tensor d = down.forward(a)) {
                    return f.output(x.add(d));
                }
            }
        }
    }

    final ModuleList<Block> layers = registerModule("layers", new ModuleList<>());

    SyntheticStack(int blocks, int hidden) {
        super("SyntheticStack");
        for (int i = 0; i < blocks; i++) {
            layers.add(new Block(hidden));
        }
    }

    /** Deterministic random weights (seeded), as CPU tensors by state-dict name. */
    Map<String, Tensor> randomWeights(long seed) {
        torch.manual_seed(seed);
        Map<String, Tensor> out = new LinkedHashMap<>();
        for (Map.Entry<String, Parameter> e : stateDict().entrySet()) {
            Tensor t = torch.randn(e.getValue().shape()).mul_(new org.bytedeco.pytorch.Scalar(0.05));
            out.put(e.getKey(), t);
        }
        return out;
    }

    Tensor forward(Tensor input) {
        Tensor x = input;
        for (Block b : layers.asList()) {
            Tensor next = b.forward(x);
            if (x != input) {
                x.close();
            }
            x = next;
        }
        return x;
    }
}
