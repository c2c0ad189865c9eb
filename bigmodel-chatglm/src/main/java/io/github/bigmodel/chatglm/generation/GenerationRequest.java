package io.github.bigmodel.chatglm.generation;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import org.bytedeco.pytorch.Tensor;
import io.github.bigmodel.chatglm.model.ForwardInput;

/**
 * One generation job: the prompt rows (left-padded to one length for a batch), optional padding mask, position
 * ids and attention mask as the tokenizer makes them, how many tokens to make, when to stop and which
 * {@link LogitsProcessor}s run before the next token is chosen. The tensors are borrowed: the caller closes them
 * after {@link Generator#generate} returns.
 *
 * <pre>{@code
 * GenerationRequest req = GenerationRequest.builder(new long[][] {promptIds})
 *         .maxNewTokens(16)
 *         .stopAtEos(false)          // exactly 16 tokens
 *         .keepStepScores(true)
 *         .build();
 * GenerationRequest sampled = GenerationRequest.builder(new long[][] {promptIds})
 *         .processor(new TemperatureWarper(0.8)).processor(new TopPWarper(0.8))
 *         .doSample(true).seed(42)
 *         .build();
 * }</pre>
 */
public final class GenerationRequest {

    private final long[][] promptIds;
    private final Tensor positionIds;
    private final Tensor paddingMask;
    private final Tensor attentionMask;
    private final int maxNewTokens;
    private final boolean stopAtEos;
    private final List<Long> eosTokenIds;
    private final List<LogitsProcessor> processors;
    private final boolean keepStepScores;
    private final boolean doSample;
    private final Long seed;

    private GenerationRequest(Builder b) {
        this.promptIds = b.promptIds;
        this.positionIds = b.positionIds;
        this.paddingMask = b.paddingMask;
        this.attentionMask = b.attentionMask;
        this.maxNewTokens = b.maxNewTokens;
        this.stopAtEos = b.stopAtEos;
        this.eosTokenIds = b.eosTokenIds == null ? null : Collections.unmodifiableList(new ArrayList<>(b.eosTokenIds));
        this.processors = Collections.unmodifiableList(new ArrayList<>(b.processors));
        this.keepStepScores = b.keepStepScores;
        this.doSample = b.doSample;
        this.seed = b.seed;
    }

    /** A builder for these prompt rows (all of one length). */
    public static Builder builder(long[][] promptIds) {
        ForwardInput.builder(promptIds); // validates the rows
        return new Builder(promptIds);
    }

    public long[][] promptIds() {
        return promptIds;
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

    public int maxNewTokens() {
        return maxNewTokens;
    }

    public boolean stopAtEos() {
        return stopAtEos;
    }

    /** EOS ids to stop at, or null for the model config's. */
    public List<Long> eosTokenIds() {
        return eosTokenIds;
    }

    public List<LogitsProcessor> processors() {
        return processors;
    }

    public boolean keepStepScores() {
        return keepStepScores;
    }

    /** Whether the next token is drawn from {@code softmax(scores)} (else it is the argmax). */
    public boolean doSample() {
        return doSample;
    }

    /** The sampling seed, or null for a fresh one per run (logged at debug level so a run can be repeated). */
    public Long seed() {
        return seed;
    }

    /** Builder of {@link GenerationRequest}. */
    public static final class Builder {
        private final long[][] promptIds;
        private Tensor positionIds;
        private Tensor paddingMask;
        private Tensor attentionMask;
        private int maxNewTokens = 32;
        private boolean stopAtEos = true;
        private List<Long> eosTokenIds;
        private final List<LogitsProcessor> processors = new ArrayList<>();
        private boolean keepStepScores;
        private boolean doSample;
        private Long seed;

        private Builder(long[][] promptIds) {
            this.promptIds = promptIds;
        }

        /** ChatGLM2/3: {@code [B, P]}; ChatGLM-6B: {@code [B, 2, P]}. Absent: built as the official code does. */
        public Builder positionIds(Tensor positionIds) {
            this.positionIds = positionIds;
            return this;
        }

        /** ChatGLM2/3: the tokenizer's {@code attention_mask} {@code [B, P]} (1 real, 0 pad). */
        public Builder paddingMask(Tensor paddingMask) {
            this.paddingMask = paddingMask;
            return this;
        }

        /** A boolean {@code [B, 1, P, P]} mask (true = masked), ChatGLM-6B's padded-batch mask. */
        public Builder attentionMask(Tensor attentionMask) {
            this.attentionMask = attentionMask;
            return this;
        }

        /**
         * How many tokens to make at most.
         *
         * @throws IllegalArgumentException when not positive
         */
        public Builder maxNewTokens(int maxNewTokens) {
            if (maxNewTokens <= 0) {
                throw new IllegalArgumentException("maxNewTokens must be > 0, got " + maxNewTokens);
            }
            this.maxNewTokens = maxNewTokens;
            return this;
        }

        /** Whether a row stops (and then emits pad ids) at EOS; false runs exactly {@code maxNewTokens} steps. */
        public Builder stopAtEos(boolean stopAtEos) {
            this.stopAtEos = stopAtEos;
            return this;
        }

        /**
         * The ids that end a row (ChatGLM3 chat: {@code </s>}, {@code <|user|>}, {@code <|observation|>}); absent:
         * the model config's {@code eos_token_id}.
         */
        public Builder eosTokenIds(List<Long> eosTokenIds) {
            this.eosTokenIds = eosTokenIds;
            return this;
        }

        public Builder processor(LogitsProcessor processor) {
            if (processor == null) {
                throw new IllegalArgumentException("processor must not be null");
            }
            processors.add(processor);
            return this;
        }

        /** Keep every step's processed scores in the result (costs batch x steps x vocab floats). */
        public Builder keepStepScores(boolean keepStepScores) {
            this.keepStepScores = keepStepScores;
            return this;
        }

        /**
         * Draw each token from {@code softmax(scores)} after the processors (transformers' {@code do_sample=True});
         * the warpers ({@code TemperatureWarper}, {@code TopKWarper}, {@code TopPWarper}) are processors too.
         */
        public Builder doSample(boolean doSample) {
            this.doSample = doSample;
            return this;
        }

        /** Seeds the sampler: the same seed, prompt and processors give the same ids. */
        public Builder seed(long seed) {
            this.seed = seed;
            return this;
        }

        public GenerationRequest build() {
            return new GenerationRequest(this);
        }
    }
}
