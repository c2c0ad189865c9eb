package io.github.bigmodel.chatglm.generation;

import io.github.bigmodel.chatglm.ChatGLMConfig;
import java.util.ArrayList;
import java.util.List;
import java.util.OptionalInt;
import java.util.OptionalLong;

/**
 * Decoding settings with the names and defaults of transformers' {@code GenerationConfig}, turned into the
 * processor chain transformers builds for {@code generate()}: repetition penalty, then ChatGLM's
 * {@link InvalidScoreProcessor} (THUDM's {@code chat()} passes it as a custom processor), then, only when sampling,
 * temperature, top-k and top-p (each only when it changes something: temperature != 1, top_k > 0, top_p < 1).
 *
 * <pre>{@code
 * // Python: model.chat(tokenizer, "你好", history=[], top_p=0.8, temperature=0.8)   (do_sample=True, top_k=50)
 * GenerationConfig g = GenerationConfig.chatDefaults(ChatGLMConfig.Version.CHATGLM2).toBuilder()
 *         .seed(42).maxNewTokens(256).build();
 * GenerationRequest req = g.applyTo(GenerationRequest.builder(new long[][] {prompt})).build();
 * }</pre>
 */
public final class GenerationConfig {

    private final Integer maxLength;
    private final Integer maxNewTokens;
    private final boolean doSample;
    private final double temperature;
    private final int topK;
    private final double topP;
    private final double repetitionPenalty;
    private final Long seed;
    private final boolean ignoreEos;
    private final boolean invalidScoreGuard;

    private GenerationConfig(Builder b) {
        this.maxLength = b.maxLength;
        this.maxNewTokens = b.maxNewTokens;
        this.doSample = b.doSample;
        this.temperature = b.temperature;
        this.topK = b.topK;
        this.topP = b.topP;
        this.repetitionPenalty = b.repetitionPenalty;
        this.seed = b.seed;
        this.ignoreEos = b.ignoreEos;
        this.invalidScoreGuard = b.invalidScoreGuard;
    }

    /** transformers' defaults: greedy, temperature 1, top_k 50, top_p 1, no penalty, no length limit set. */
    public static Builder builder() {
        return new Builder();
    }

    /** Greedy decoding with transformers' defaults otherwise. */
    public static GenerationConfig greedy() {
        return builder().build();
    }

    /**
     * The settings of THUDM's {@code chat()} / {@code stream_chat()}: sampling with top_p 0.8 and temperature 0.8
     * and {@code max_length} 8192 for ChatGLM2/3; top_p 0.7, temperature 0.95 and {@code max_length} 2048 for
     * ChatGLM-6B; top_k stays transformers' default 50.
     */
    public static GenerationConfig chatDefaults(ChatGLMConfig.Version version) {
        if (version == ChatGLMConfig.Version.CHATGLM_6B) {
            return builder().doSample(true).topP(0.7).temperature(0.95).maxLength(2048).build();
        }
        return builder().doSample(true).topP(0.8).temperature(0.8).maxLength(8192).build();
    }

    /**
     * The settings of an OpenAI-style request (the server's {@code /v1/chat/completions}, the LangChain4j adapter):
     * temperature 0 is greedy; otherwise sampling with the request's temperature, top_p and top_k, and
     * {@link #chatDefaults THUDM's chat defaults} for the temperature and top_p it leaves out. Every argument may be
     * null (not in the request).
     *
     * <pre>{@code
     * GenerationConfig g = GenerationConfig.ofRequest(ChatGLMConfig.Version.CHATGLM2, 0.0, null, null, 64, 7L);
     * g.doSample();      // false: temperature 0 is greedy
     * }</pre>
     */
    public static GenerationConfig ofRequest(ChatGLMConfig.Version version, Double temperature, Double topP,
            Integer topK, Integer maxNewTokens, Long seed) {
        GenerationConfig defaults = chatDefaults(version);
        Builder b = builder();
        double t = temperature != null ? temperature : defaults.temperature();
        if (t == 0) {
            b.doSample(false);
        } else {
            b.doSample(true).temperature(t).topP(topP != null ? topP : defaults.topP());
            if (topK != null) {
                b.topK(topK);
            }
        }
        if (maxNewTokens != null) {
            b.maxNewTokens(maxNewTokens);
        }
        if (seed != null) {
            b.seed(seed);
        }
        return b.build();
    }

    /** A builder holding these settings, to change some. */
    public Builder toBuilder() {
        Builder b = new Builder();
        b.maxLength = maxLength;
        b.maxNewTokens = maxNewTokens;
        b.doSample = doSample;
        b.temperature = temperature;
        b.topK = topK;
        b.topP = topP;
        b.repetitionPenalty = repetitionPenalty;
        b.seed = seed;
        b.ignoreEos = ignoreEos;
        b.invalidScoreGuard = invalidScoreGuard;
        return b;
    }

    /** {@code max_length}: prompt plus new tokens, if set. */
    public OptionalInt maxLength() {
        return maxLength == null ? OptionalInt.empty() : OptionalInt.of(maxLength);
    }

    /** {@code max_new_tokens}, if set (it wins over {@code max_length} when both are, as in transformers). */
    public OptionalInt maxNewTokens() {
        return maxNewTokens == null ? OptionalInt.empty() : OptionalInt.of(maxNewTokens);
    }

    public boolean doSample() {
        return doSample;
    }

    public double temperature() {
        return temperature;
    }

    public int topK() {
        return topK;
    }

    public double topP() {
        return topP;
    }

    public double repetitionPenalty() {
        return repetitionPenalty;
    }

    /** The sampling seed, if set (otherwise each request draws a fresh one). */
    public OptionalLong seed() {
        return seed == null ? OptionalLong.empty() : OptionalLong.of(seed);
    }

    /** Whether EOS and the stop tokens are ignored (generate exactly the token budget). */
    public boolean ignoreEos() {
        return ignoreEos;
    }

    public boolean invalidScoreGuard() {
        return invalidScoreGuard;
    }

    /** The processors in transformers' order (see the class comment). */
    public List<LogitsProcessor> processors() {
        List<LogitsProcessor> out = new ArrayList<>();
        if (repetitionPenalty != 1.0) {
            out.add(new RepetitionPenaltyProcessor(repetitionPenalty));
        }
        if (invalidScoreGuard) {
            out.add(new InvalidScoreProcessor());
        }
        if (doSample) {
            if (temperature != 1.0) {
                out.add(new TemperatureWarper(temperature));
            }
            if (topK > 0) {
                out.add(new TopKWarper(topK));
            }
            if (topP < 1.0) {
                out.add(new TopPWarper(topP));
            }
        }
        return out;
    }

    /**
     * The number of new tokens for a prompt of {@code promptLength}: {@code max_new_tokens} when set, else
     * {@code max_length - promptLength}, else {@code fallback}.
     */
    public int newTokenBudget(int promptLength, int fallback) {
        if (maxNewTokens != null) {
            return maxNewTokens;
        }
        if (maxLength != null) {
            return maxLength - promptLength;
        }
        return fallback;
    }

    /** Puts the processors, sampling mode, seed and EOS handling on {@code builder} (lengths are the caller's). */
    public GenerationRequest.Builder applyTo(GenerationRequest.Builder builder) {
        processors().forEach(builder::processor);
        builder.doSample(doSample).stopAtEos(!ignoreEos);
        if (seed != null) {
            builder.seed(seed);
        }
        return builder;
    }

    @Override
    public String toString() {
        return "GenerationConfig(maxLength=" + maxLength + ", maxNewTokens=" + maxNewTokens + ", doSample=" + doSample
                + ", temperature=" + temperature + ", topK=" + topK + ", topP=" + topP + ", repetitionPenalty="
                + repetitionPenalty + ", seed=" + seed + ", ignoreEos=" + ignoreEos + ")";
    }

    /** Builder of {@link GenerationConfig}; every setter validates its value. */
    public static final class Builder {
        private Integer maxLength;
        private Integer maxNewTokens;
        private boolean doSample;
        private double temperature = 1.0;
        private int topK = 50;
        private double topP = 1.0;
        private double repetitionPenalty = 1.0;
        private Long seed;
        private boolean ignoreEos;
        private boolean invalidScoreGuard = true;

        private Builder() {
        }

        public Builder maxLength(int maxLength) {
            if (maxLength <= 0) {
                throw new IllegalArgumentException("max_length must be > 0, got " + maxLength);
            }
            this.maxLength = maxLength;
            return this;
        }

        public Builder maxNewTokens(int maxNewTokens) {
            if (maxNewTokens <= 0) {
                throw new IllegalArgumentException("max_new_tokens must be > 0, got " + maxNewTokens);
            }
            this.maxNewTokens = maxNewTokens;
            return this;
        }

        public Builder doSample(boolean doSample) {
            this.doSample = doSample;
            return this;
        }

        public Builder temperature(double temperature) {
            new TemperatureWarper(temperature); // validates
            this.temperature = temperature;
            return this;
        }

        /** 0 switches top-k off. */
        public Builder topK(int topK) {
            if (topK < 0) {
                throw new IllegalArgumentException("top_k must be >= 0, got " + topK);
            }
            this.topK = topK;
            return this;
        }

        public Builder topP(double topP) {
            new TopPWarper(topP); // validates
            this.topP = topP;
            return this;
        }

        public Builder repetitionPenalty(double repetitionPenalty) {
            new RepetitionPenaltyProcessor(repetitionPenalty); // validates
            this.repetitionPenalty = repetitionPenalty;
            return this;
        }

        public Builder seed(long seed) {
            this.seed = seed;
            return this;
        }

        /** Generate the whole budget, never stopping at EOS or a stop token. */
        public Builder ignoreEos(boolean ignoreEos) {
            this.ignoreEos = ignoreEos;
            return this;
        }

        /** Whether {@link InvalidScoreProcessor} runs (default true, as in THUDM's chat). */
        public Builder invalidScoreGuard(boolean invalidScoreGuard) {
            this.invalidScoreGuard = invalidScoreGuard;
            return this;
        }

        public GenerationConfig build() {
            return new GenerationConfig(this);
        }
    }
}
