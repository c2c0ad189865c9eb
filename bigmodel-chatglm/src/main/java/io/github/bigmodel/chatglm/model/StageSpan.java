package io.github.bigmodel.chatglm.model;

/**
 * The part of a model one pipeline stage holds: the word embedding or not, the blocks {@code [firstLayer, endLayer)}
 * and the head (final norm and output layer) or not. A model without a span set holds everything
 * ({@link #whole(int)}); a stage's model loads and runs only what its span names, and hands the rest of a step to a
 * {@link PipelineLink}.
 *
 * <pre>{@code
 * // 28 blocks over two processes: the coordinator embeds and runs 0..13, the worker 14..27 and the head.
 * StageSpan coordinator = new StageSpan(true, 0, 14, false);
 * StageSpan worker = new StageSpan(false, 14, 28, true);
 * }</pre>
 *
 * @param embedding whether the word embedding is held here (the stage that takes token ids)
 * @param firstLayer the first block held here
 * @param endLayer one past the last block held here ({@code == firstLayer} when none)
 * @param head whether the final norm and the output layer are held here
 */
public record StageSpan(boolean embedding, int firstLayer, int endLayer, boolean head) {

    /**
     * @throws IllegalArgumentException for a negative or reversed block range
     */
    public StageSpan {
        if (firstLayer < 0 || endLayer < firstLayer) {
            throw new IllegalArgumentException("A stage holds blocks [firstLayer, endLayer) with 0 <= firstLayer <= "
                    + "endLayer, got [" + firstLayer + ", " + endLayer + ")");
        }
    }

    /** Everything of a model of {@code layers} blocks: the single-process case. */
    public static StageSpan whole(int layers) {
        return new StageSpan(true, 0, layers, true);
    }

    /** Whether block {@code layer} is held here. */
    public boolean holdsLayer(int layer) {
        return layer >= firstLayer && layer < endLayer;
    }

    /** Whether this span is everything of a model of {@code layers} blocks. */
    public boolean isWhole(int layers) {
        return embedding && head && firstLayer == 0 && endLayer == layers;
    }
}
