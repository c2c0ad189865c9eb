package io.github.bigmodel.chatglm.generation;

import org.bytedeco.javacpp.LongPointer;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * transformers' {@code RepetitionPenaltyLogitsProcessor} (CTRL's penalty): for every id already in the row (prompt
 * included), a positive score is divided by {@code penalty} and a negative one multiplied by it, so that a penalty
 * above 1 makes repeats less likely. Each id is penalised once, however often it occurs.
 *
 * <pre>{@code
 * GenerationRequest.builder(prompt).processor(new RepetitionPenaltyProcessor(1.1)).build();
 * }</pre>
 */
public final class RepetitionPenaltyProcessor implements LogitsProcessor {

    private final double penalty;

    /** @throws IllegalArgumentException unless {@code penalty > 0} and finite */
    public RepetitionPenaltyProcessor(double penalty) {
        if (!(penalty > 0) || Double.isInfinite(penalty)) {
            throw new IllegalArgumentException("repetition_penalty must be a finite number > 0, got " + penalty);
        }
        this.penalty = penalty;
    }

    public double penalty() {
        return penalty;
    }

    @Override
    public Tensor process(long[][] ids, Tensor scores) {
        int batch = ids.length;
        int len = ids[0].length;
        long vocab = scores.size(-1);
        long[] flat = new long[batch * len];
        for (int b = 0; b < batch; b++) {
            for (int i = 0; i < len; i++) {
                long id = ids[b][i];
                if (id < 0 || id >= vocab) {
                    throw new IllegalArgumentException("Token id " + id + " in row " + b
                            + " is outside the scores' vocabulary [0, " + vocab + ")");
                }
                flat[b * len + i] = id;
            }
        }
        Tensor index;
        try (LongPointer p = new LongPointer(flat)) {
            index = torch.from_blob(p, new long[] {batch, len}, new TensorOptions(ScalarType.Long)).clone()
                    .to(scores.device(), ScalarType.Long);
        }
        Tensor picked = scores.gather(1, index, false);
        Tensor penalised = torch.where(picked.lt(new Scalar(0)), picked.mul(new Scalar(penalty)),
                picked.div(new Scalar(penalty)));
        return scores.scatter(1, index, penalised);
    }

    @Override
    public String toString() {
        return "RepetitionPenaltyProcessor(" + penalty + ")";
    }
}
