package io.github.bigmodel.chatglm.chat;

import io.github.bigmodel.chatglm.generation.LogitsProcessor;
import io.github.bigmodel.chatglm.generation.GenerationConfig;
import java.util.ArrayList;
import java.util.List;

/**
 * Per-call settings of {@link ChatGLM#chat} / {@link ChatGLM#streamChat}: the role of the new message (ChatGLM3),
 * the decoding settings (absent: THUDM's chat defaults, {@link GenerationConfig#chatDefaults}) and extra logits
 * processors, which run after the configured ones (Python's {@code logits_processor=} argument).
 *
 * <pre>{@code
 * // Python: model.chat(tokenizer, json.dumps(result), history=history, role="observation")
 * ChatOptions opts = ChatOptions.builder().role("observation")
 *         .generation(GenerationConfig.builder().doSample(true).topP(0.8).temperature(0.8).seed(7).build())
 *         .build();
 * }</pre>
 */
public final class ChatOptions {

    private static final List<String> ROLES = List.of("system", "user", "assistant", "observation");

    private final String role;
    private final GenerationConfig generation;
    private final List<LogitsProcessor> processors;

    private ChatOptions(Builder b) {
        this.role = b.role;
        this.generation = b.generation;
        this.processors = List.copyOf(b.processors);
    }

    /** User role, chat defaults, no extra processors. */
    public static ChatOptions defaults() {
        return builder().build();
    }

    public static Builder builder() {
        return new Builder();
    }

    public String role() {
        return role;
    }

    /** The decoding settings, or null for the model's chat defaults. */
    public GenerationConfig generation() {
        return generation;
    }

    public List<LogitsProcessor> processors() {
        return processors;
    }

    /** Builder of {@link ChatOptions}. */
    public static final class Builder {
        private String role = "user";
        private GenerationConfig generation;
        private final List<LogitsProcessor> processors = new ArrayList<>();

        private Builder() {
        }

        /**
         * The role of the new message: {@code user} (default), or with ChatGLM3 also {@code system},
         * {@code assistant} and {@code observation} (a tool's result).
         */
        public Builder role(String role) {
            if (!ROLES.contains(role)) {
                throw new IllegalArgumentException("Unknown role '" + role + "': expected one of " + ROLES);
            }
            this.role = role;
            return this;
        }

        public Builder generation(GenerationConfig generation) {
            this.generation = generation;
            return this;
        }

        public Builder processor(LogitsProcessor processor) {
            if (processor == null) {
                throw new IllegalArgumentException("processor must not be null");
            }
            processors.add(processor);
            return this;
        }

        public ChatOptions build() {
            return new ChatOptions(this);
        }
    }
}
