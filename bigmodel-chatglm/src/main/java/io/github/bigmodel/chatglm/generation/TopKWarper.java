package io.github.bigmodel.chatglm.generation;

import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;

/**
 * Keeps the {@code k} highest scores of each row and sets the others to {@code -inf}, as transformers'
 * {@code TopKLogitsWarper} (scores tied with the k-th are kept; {@code k} larger than the vocabulary keeps all).
 *
 * <pre>{@code
 * GenerationRequest.builder(prompt).doSample(true).processor(new TopKWarper(50)).build();
 * }</pre>
 */
public final class TopKWarper implements LogitsProcessor {

    private final int topK;

    /** @throws IllegalArgumentException unless {@code topK >= 1} */
    public TopKWarper(int topK) {
        if (topK < 1) {
            throw new IllegalArgumentException("top_k must be >= 1, got " + topK);
        }
        this.topK = topK;
    }

    public int topK() {
        return topK;
    }

    @Override
    public Tensor process(long[][] ids, Tensor scores) {
        long vocab = scores.size(-1);
        long k = Math.min(topK, vocab);
        Tensor kth = torch.topk(scores, k).get0().narrow(-1, k - 1, 1);
        return scores.masked_fill(scores.lt(kth), new Scalar(Float.NEGATIVE_INFINITY));
    }

    @Override
    public String toString() {
        return "TopKWarper(" + topK + ")";
    }
}
