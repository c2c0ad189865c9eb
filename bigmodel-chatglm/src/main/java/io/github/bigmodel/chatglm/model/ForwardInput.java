package io.github.bigmodel.chatglm.model;

import org.bytedeco.pytorch.Tensor;

/**
 * The inputs of one ChatGLM forward call, with the meaning the official {@code forward} gives them.
 *
 * <ul>
 *   <li>{@code inputIds}: {@code [batch][L]} token ids (equal-length rows; pad on the left).</li>
 *   <li>{@code positionIds} (optional): ChatGLM2/3 {@code [B, L]}; ChatGLM-6B {@code [B, 2, L]} (positions, block
 *       positions). Absent: ChatGLM2/3 uses {@code 0..L-1} (even with a cache, as the official code does, so a
 *       cached step must pass its absolute position); ChatGLM-6B builds them from the ids (first call only).</li>
 *   <li>{@code paddingMask} (ChatGLM2/3, optional): the tokenizer's {@code attention_mask} {@code [B, past+L]},
 *       1 for real tokens, 0 for pads.</li>
 *   <li>{@code attentionMask} (optional): a boolean {@code [B, 1, L, past+L]} mask, true = masked out: ChatGLM-6B's
 *       {@code attention_mask} or ChatGLM2/3's {@code full_attention_mask}. Absent: built as the official code
 *       does.</li>
 *   <li>{@code cache} (optional): the session's {@link KvCache}; positions are appended to it.</li>
 *   <li>{@code lastLogitOnly}: compute logits for the last position only ({@code return_last_logit}).</li>
 * </ul>
 *
 * The tensors are borrowed, not owned: the caller closes them after the call.
 *
 * <pre>{@code
 * ForwardInput in = ForwardInput.builder(new long[][] {{64790, 64792, 30910}})
 *         .cache(cache)
 *         .lastLogitOnly(true)
 *         .build();
 * try (Tensor logits = model.forward(in)) { ... }   // [1, 1, vocab] float32
 * }</pre>
 */
public final class ForwardInput {

    private final long[][] inputIds;
    private final Tensor positionIds;
    private final Tensor paddingMask;
    private final Tensor attentionMask;
    private final KvCache cache;
    private final boolean lastLogitOnly;

    private ForwardInput(Builder b) {
        this.inputIds = b.inputIds;
        this.positionIds = b.positionIds;
        this.paddingMask = b.paddingMask;
        this.attentionMask = b.attentionMask;
        this.cache = b.cache;
        this.lastLogitOnly = b.lastLogitOnly;
    }

    /**
     * Starts a builder for these ids.
     *
     * @throws IllegalArgumentException for an empty batch, empty rows or rows of different lengths
     */
    public static Builder builder(long[][] inputIds) {
        return new Builder(inputIds);
    }

    public long[][] inputIds() {
        return inputIds;
    }

    public int batchSize() {
        return inputIds.length;
    }

    public int length() {
        return inputIds[0].length;
    }

    public Tensor positionIds() {
        return positionIds;
    }

    public Tensor paddingMask() {
        return paddingMask;
    }

    public Tensor attentionMask() {
        return attentionMask;
    }

    public KvCache cache() {
        return cache;
    }

    public boolean lastLogitOnly() {
        return lastLogitOnly;
    }

    /** Builder of {@link ForwardInput}. */
    public static final class Builder {
        private final long[][] inputIds;
        private Tensor positionIds;
        private Tensor paddingMask;
        private Tensor attentionMask;
        private KvCache cache;
        private boolean lastLogitOnly;

        private Builder(long[][] inputIds) {
            if (inputIds == null || inputIds.length == 0) {
                throw new IllegalArgumentException("inputIds must hold at least one row");
            }
            int len = inputIds[0] == null ? 0 : inputIds[0].length;
            if (len == 0) {
                throw new IllegalArgumentException("inputIds rows must not be empty");
            }
            for (int i = 0; i < inputIds.length; i++) {
                if (inputIds[i] == null || inputIds[i].length != len) {
                    throw new IllegalArgumentException("inputIds row " + i + " has length "
                            + (inputIds[i] == null ? "null" : inputIds[i].length) + ", row 0 has " + len
                            + ": pad rows to one length");
                }
            }
            this.inputIds = inputIds;
        }

        public Builder positionIds(Tensor positionIds) {
            this.positionIds = positionIds;
            return this;
        }

        public Builder paddingMask(Tensor paddingMask) {
            this.paddingMask = paddingMask;
            return this;
        }

        public Builder attentionMask(Tensor attentionMask) {
            this.attentionMask = attentionMask;
            return this;
        }

        public Builder cache(KvCache cache) {
            this.cache = cache;
            return this;
        }

        public Builder lastLogitOnly(boolean lastLogitOnly) {
            this.lastLogitOnly = lastLogitOnly;
            return this;
        }

        public ForwardInput build() {
            return new ForwardInput(this);
        }
    }
}
