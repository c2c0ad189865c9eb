package io.github.bigmodel.chatglm.generation;

import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.T_TensorTensor_T;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;

/**
 * Nucleus filtering, as transformers' {@code TopPLogitsWarper}: sorts each row ascending, removes the tokens whose
 * cumulative probability (from the least likely up) is at most {@code 1 - topP}, and always keeps the most likely
 * token. Removed scores become {@code -inf}.
 *
 * <pre>{@code
 * GenerationRequest.builder(prompt).doSample(true).processor(new TopPWarper(0.8)).build();
 * }</pre>
 */
public final class TopPWarper implements LogitsProcessor {

    private final double topP;

    /** @throws IllegalArgumentException unless {@code 0 <= topP <= 1} */
    public TopPWarper(double topP) {
        if (!(topP >= 0 && topP <= 1)) {
            throw new IllegalArgumentException("top_p must be in [0, 1], got " + topP);
        }
        this.topP = topP;
    }

    public double topP() {
        return topP;
    }

    @Override
    public Tensor process(long[][] ids, Tensor scores) {
        long vocab = scores.size(-1);
        T_TensorTensor_T sorted = torch.sort(scores, -1, false);
        Tensor values = sorted.get0();
        Tensor indices = sorted.get1();
        Tensor cumulative = values.softmax(-1).cumsum(-1);
        Tensor removeSorted = cumulative.le(new Scalar(1 - topP));
        // min_tokens_to_keep = 1: the last (most likely) entry always stays.
        removeSorted.narrow(-1, vocab - 1, 1).fill_(new Scalar(0));
        Tensor remove = removeSorted.scatter(-1, indices, removeSorted);
        return scores.masked_fill(remove, new Scalar(Float.NEGATIVE_INFINITY));
    }

    @Override
    public String toString() {
        return "TopPWarper(" + topP + ")";
    }
}
