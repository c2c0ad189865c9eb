package io.github.bigmodel.benchmarks.dispatch;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.ForwardScope;
import io.github.bigmodel.core.Linear;
import io.github.bigmodel.core.Module;
import io.github.bigmodel.core.ModuleList;
import io.github.bigmodel.core.Parameter;
import io.github.bigmodel.safetensors.SafetensorsWriter;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;

/**
 * The benchmarks' model: a stack of residual MLP blocks ({@code x + down(gelu(up(x)))}), float32, each block
 * {@code 16 * hidden^2} bytes of weights.
 *
 * <pre>{@code
 * BenchStack s = new BenchStack(28, 512);
 * BenchStack.writeCheckpoint(s, Path.of("model.safetensors"), 1);
 * }</pre>
 */
public final class BenchStack extends Module {

    /** One residual MLP block. */
    public static final class Block extends Module {
        final Linear up;
        final Linear down;

        Block(int hidden) {
            super("Block");
            up = registerModule("up", new Linear(hidden, 2L * hidden, true, DType.FLOAT32));
            down = registerModule("down", new Linear(2L * hidden, hidden, true, DType.FLOAT32));
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

    public BenchStack(int blocks, int hidden) {
        super("BenchStack");
        for (int i = 0; i < blocks; i++) {
            layers.add(new Block(hidden));
        }
    }

    public List<Block> blocks() {
        return layers.asList();
    }

    /** Runs every block; the caller owns the result. */
    public Tensor forward(Tensor input) {
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

    /** Writes seeded random weights for {@code shape}'s state dict tensor by tensor. */
    public static void writeCheckpoint(Module shape, Path file, long seed) {
        List<SafetensorsWriter.Entry> entries = new ArrayList<>();
        shape.stateDict().forEach((n, p) -> entries.add(SafetensorsWriter.Entry.of(n, DType.FLOAT32, p.shape())));
        torch.manual_seed(seed);
        try (SafetensorsWriter w = SafetensorsWriter.create(file, entries, Map.of())) {
            for (Map.Entry<String, Parameter> e : shape.stateDict().entrySet()) {
                try (Tensor t = torch.randn(e.getValue().shape())) {
                    t.mul_(new org.bytedeco.pytorch.Scalar(0.02));
                    w.write(e.getKey(), t);
                }
            }
        }
    }
}
