package io.github.bigmodel.chatglm.model;

import org.bytedeco.pytorch.Tensor;

/**
 * What a stage needs to run its blocks for one step besides the hidden state: the session (whose KV caches the
 * stage keeps), where the step starts and how long it is, and the positions and attention mask the first stage
 * resolved from the {@link ForwardInput} (defaults filled in), so that every stage computes with the same ones.
 *
 * <p>The tensors are borrowed: the one who made the step closes them.
 *
 * <pre>{@code
 * // A link hands the step on; the receiving stage runs its span:
 * Tensor out = workerModel.forwardStage(step, hidden, cacheOfSession(step.session()));
 * }</pre>
 *
 * @param session the coordinator's session (its {@link KvCache#id()}), 0 for a step without a cache
 * @param batch rows of the step
 * @param length new positions of the step
 * @param past positions cached before the step (where it starts)
 * @param capacity positions the session's caches hold at most (0 without a cache)
 * @param lastLogitOnly whether only the last position's logits are wanted
 * @param fromLayer the first block the receiver runs
 * @param positions ChatGLM2/3 {@code [B, L]}, ChatGLM-6B {@code [B, 2, L]} int64 position ids
 * @param mask boolean {@code [B, 1, L, past+L]} (true = masked), or null when the blocks build the causal one
 */
public record PipelineStep(long session, int batch, int length, long past, long capacity, boolean lastLogitOnly,
        int fromLayer, Tensor positions, Tensor mask) {

    /**
     * @throws IllegalArgumentException for sizes out of range or missing positions
     */
    public PipelineStep {
        if (batch <= 0 || length <= 0 || past < 0 || capacity < 0 || fromLayer < 0) {
            throw new IllegalArgumentException("Bad pipeline step: batch=" + batch + ", length=" + length + ", past="
                    + past + ", capacity=" + capacity + ", fromLayer=" + fromLayer);
        }
        if (positions == null) {
            throw new IllegalArgumentException("A pipeline step carries its position ids");
        }
    }

    /** The same step, handed on at block {@code layer}. */
    public PipelineStep from(int layer) {
        return new PipelineStep(session, batch, length, past, capacity, lastLogitOnly, layer, positions, mask);
    }
}
