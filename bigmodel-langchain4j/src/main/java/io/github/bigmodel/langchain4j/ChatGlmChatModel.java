package io.github.bigmodel.langchain4j;

import dev.langchain4j.model.chat.ChatModel;
import dev.langchain4j.model.chat.request.ChatRequest;
import dev.langchain4j.model.chat.request.ChatRequestParameters;
import dev.langchain4j.model.chat.response.ChatResponse;
import io.github.bigmodel.chatglm.chat.ChatGLM;

/**
 * A LangChain4j {@link ChatModel} over an in-process {@link ChatGLM}: messages become ChatGLM turns, tool
 * specifications become ChatGLM3's tool system prompt, and a tool call the model writes comes back as a
 * {@code ToolExecutionRequest} (arguments as JSON, parsed from the model's Python literals, never evaluated) with
 * {@code FinishReason.TOOL_EXECUTION}. Token usage counts the prompt and the reply (without its stop token).
 *
 * <pre>{@code
 * ChatGLM glm = ChatGLM.load(Path.of("chatglm3-6b"), options);
 * ChatModel model = ChatGlmChatModel.builder().chatGlm(glm).modelName("chatglm3-6b").temperature(0.0).build();
 * Assistant assistant = AiServices.builder(Assistant.class).chatModel(model).tools(new WeatherTools()).build();
 * String answer = assistant.chat("What is the weather in Beijing?");
 * }</pre>
 *
 * <p>Temperature 0 decodes greedily; parameters left out take THUDM's chat defaults. Stop sequences cut the reply
 * before the first one. Frequency/presence penalties and JSON response formats throw
 * {@code UnsupportedFeatureException}. {@code ToolChoice.NONE} leaves the tools out of the prompt; ChatGLM3 has no
 * constrained decoding, so {@code REQUIRED} cannot force a call. Thread-safe: one {@code ChatGLM} serves concurrent
 * calls, each with its own KV cache. The caller keeps and closes the {@code ChatGLM}.
 */
public final class ChatGlmChatModel implements ChatModel {

    private final ChatGLM glm;
    private final ChatRequestParameters defaults;
    private final Long seed;

    private ChatGlmChatModel(Builder b) {
        this.glm = b.requireGlm();
        this.defaults = b.parameters();
        this.seed = b.seed;
    }

    public static Builder builder() {
        return new Builder();
    }

    @Override
    public ChatRequestParameters defaultRequestParameters() {
        return defaults;
    }

    @Override
    public ChatResponse doChat(ChatRequest request) {
        return ChatGlmTurn.of(glm, request, seed).run(delta -> { });
    }

    /** Builder of {@link ChatGlmChatModel}. */
    public static final class Builder extends ChatGlmModelBuilder<Builder> {
        private Builder() {
        }

        public ChatGlmChatModel build() {
            return new ChatGlmChatModel(this);
        }
    }
}
