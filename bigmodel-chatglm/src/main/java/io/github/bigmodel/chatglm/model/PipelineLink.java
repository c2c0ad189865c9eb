package io.github.bigmodel.chatglm.model;

import org.bytedeco.pytorch.Tensor;

/**
 * Where a model's forward pass goes for the blocks (and possibly the head) that other pipeline stages hold. The
 * model runs what its {@link StageSpan} holds, calls {@link #forward} with the hidden state after its last block,
 * and continues with what comes back: the hidden state after the model's last block when it holds the head itself,
 * else the float32 logits. A link is what makes one model out of several processes; bigmodel-pipeline's Gloo
 * transport is one, a test's in-process stand-in another.
 *
 * <pre>{@code
 * model.setStage(new StageSpan(true, 0, 14, false), link);
 * try (Tensor logits = model.forward(input)) { ... }        // blocks 14.. and the head run behind the link
 * }</pre>
 *
 * <p>Threads: a model calls a link from every thread that runs a forward pass; a link orders the steps it carries.
 */
public interface PipelineLink {

    /**
     * Runs blocks {@code step.fromLayer()} to the last of the model on the other stages, then the head when this
     * stage does not hold it.
     *
     * @param hidden {@code [L, B, hidden]} in the model's dtype
     * @return {@code [L', B, hidden]} (L' = 1 with {@link PipelineStep#lastLogitOnly()} only when the head ran
     *     remotely; else L) when this stage holds the head, otherwise float32 logits {@code [B, L or 1, vocab]}; the
     *     caller owns it
     */
    Tensor forward(PipelineStep step, Tensor hidden);

    /**
     * Releases what the other stages keep for {@code session} (their KV caches). Called when the session's
     * {@link KvCache} is closed; never throws (a stage that cannot be reached has nothing left to free).
     */
    void free(long session);
}
