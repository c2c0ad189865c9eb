package io.github.bigmodel.chatglm.generation;

import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.Tensors;
import java.util.SplittableRandom;
import org.bytedeco.pytorch.LongOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * Picks the next token of every row from the processed scores {@code [batch, vocab]}: {@link #greedy()} (argmax,
 * transformers' greedy search) or {@link #sampling(long)} (a draw from {@code softmax(scores)}, transformers'
 * {@code multinomial} sampling).
 *
 * <p>Sampling uses its own {@link SplittableRandom} seeded per request rather than libtorch's generator: the same
 * seed gives the same ids on every platform and device, independent of other libtorch work in the process. The
 * draw inverts the cumulative distribution in double precision over the probabilities in id order, so the ids are
 * not the ones PyTorch's {@code torch.multinomial} would draw for the same seed (no port can promise that).
 *
 * <pre>{@code
 * TokenChooser chooser = TokenChooser.sampling(42);
 * long[] next = chooser.choose(scores);
 * }</pre>
 */
public interface TokenChooser {

    /** The chosen id of every row. */
    long[] choose(Tensor scores);

    /** Argmax of every row (the first index on ties). */
    static TokenChooser greedy() {
        return scores -> longs(scores.argmax(new LongOptional(1), false));
    }

    /** Draws from {@code softmax(scores)} with a generator seeded with {@code seed} (one generator per chooser). */
    static TokenChooser sampling(long seed) {
        SplittableRandom random = new SplittableRandom(seed);
        return scores -> sample(scores, random);
    }

    private static long[] sample(Tensor scores, SplittableRandom random) {
        int batch = (int) scores.size(0);
        int vocab = (int) scores.size(1);
        float[] probs;
        try (Tensor p = scores.to(ScalarType.Float).softmax(1);
             Tensor c = p.to(Tensors.toTorch(Device.CPU), ScalarType.Float).contiguous()) {
            probs = new float[batch * vocab];
            c.data_ptr_float().get(probs);
        }
        long[] out = new long[batch];
        for (int b = 0; b < batch; b++) {
            double total = 0;
            for (int v = 0; v < vocab; v++) {
                total += probs[b * vocab + v];
            }
            if (!(total > 0) || Double.isInfinite(total)) {
                throw new IllegalStateException("Row " + b + " has no token with a finite, positive probability "
                        + "(all scores -inf or NaN): cannot sample");
            }
            double target = random.nextDouble() * total;
            double running = 0;
            int chosen = -1;
            for (int v = 0; v < vocab; v++) {
                float pv = probs[b * vocab + v];
                if (pv <= 0) {
                    continue;
                }
                chosen = v;
                running += pv;
                if (running > target) {
                    break;
                }
            }
            out[b] = chosen;
        }
        return out;
    }

    private static long[] longs(Tensor t) {
        try (Tensor c = t.to(Tensors.toTorch(Device.CPU), ScalarType.Long).contiguous()) {
            long[] out = new long[(int) c.numel()];
            c.data_ptr_long().get(out);
            return out;
        }
    }
}
