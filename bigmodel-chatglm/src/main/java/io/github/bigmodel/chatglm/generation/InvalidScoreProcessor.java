package io.github.bigmodel.chatglm.generation;

import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;

/**
 * ChatGLM's {@code InvalidScoreLogitsProcessor}, which THUDM's {@code chat()} always adds: when any score of the
 * batch is NaN or infinite (a half-precision overflow), every score becomes 0 and token 5 gets 5e4, so that
 * generation goes on with a harmless token instead of failing in the sampler.
 *
 * <pre>{@code
 * GenerationRequest.builder(prompt).processor(new InvalidScoreProcessor()).build();
 * }</pre>
 *
 * <p>Put it before the warpers, as transformers does (processors first, then temperature / top-k / top-p): top-k
 * and top-p write {@code -inf} on purpose.
 */
public final class InvalidScoreProcessor implements LogitsProcessor {

    /** The id THUDM's code boosts (the same in all three generations). */
    public static final long FALLBACK_TOKEN_ID = 5;

    @Override
    public Tensor process(long[][] ids, Tensor scores) {
        boolean invalid = scores.isnan().any().item_bool() || torch.isinf(scores).any().item_bool();
        if (!invalid) {
            return scores;
        }
        Tensor fixed = torch.zeros_like(scores);
        fixed.narrow(-1, FALLBACK_TOKEN_ID, 1).fill_(new Scalar(5e4));
        return fixed;
    }

    @Override
    public String toString() {
        return "InvalidScoreProcessor";
    }
}
