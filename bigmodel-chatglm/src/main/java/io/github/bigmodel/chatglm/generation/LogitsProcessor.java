package io.github.bigmodel.chatglm.generation;

import org.bytedeco.pytorch.Tensor;

/**
 * A step of logits processing in the generation loop (temperature, repetition penalty, top-k/top-p filters,
 * ...), applied in order to the last position's scores before the next token is chosen. Processors compose: each
 * gets what the previous one returned.
 *
 * <pre>{@code
 * LogitsProcessor temperature = (ids, scores) -> scores.div(new Scalar(0.8));
 * GenerationRequest req = GenerationRequest.builder(prompt).maxNewTokens(32).processor(temperature).build();
 * }</pre>
 */
@FunctionalInterface
public interface LogitsProcessor {

    /**
     * Returns the processed scores {@code [batch, vocab]} (float32, on the model's output device).
     *
     * @param ids the ids of every row so far (prompt and generated tokens)
     * @param scores the scores so far; the loop releases every tensor made during the step
     */
    Tensor process(long[][] ids, Tensor scores);
}
