package io.github.bigmodel.langchain4j;

import dev.langchain4j.model.chat.StreamingChatModel;
import dev.langchain4j.model.chat.request.ChatRequest;
import dev.langchain4j.model.chat.request.ChatRequestParameters;
import dev.langchain4j.model.chat.response.ChatResponse;
import dev.langchain4j.model.chat.response.StreamingChatResponseHandler;
import io.github.bigmodel.chatglm.chat.ChatGLM;
import java.util.concurrent.Executor;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A LangChain4j {@link StreamingChatModel} over an in-process {@link ChatGLM}: the reply's text arrives through
 * {@code onPartialResponse} as it is generated (no delta splits a character), then {@code onCompleteResponse} with
 * the whole message, token usage and finish reason; a tool call arrives only complete, as a
 * {@code ToolExecutionRequest}. Mapping and settings as {@link ChatGlmChatModel}.
 *
 * <pre>{@code
 * StreamingChatModel model = ChatGlmStreamingChatModel.builder().chatGlm(glm).build();
 * model.chat("你好", new StreamingChatResponseHandler() {
 *     public void onPartialResponse(String partial) { System.out.print(partial); }
 *     public void onCompleteResponse(ChatResponse response) { System.out.println(); }
 *     public void onError(Throwable error) { error.printStackTrace(); }
 * });
 * }</pre>
 *
 * <p>Each request runs on the builder's executor (default: a new daemon thread per request), so {@code chat}
 * returns at once.
 */
public final class ChatGlmStreamingChatModel implements StreamingChatModel {

    private static final Logger LOG = LoggerFactory.getLogger(ChatGlmStreamingChatModel.class);

    private final ChatGLM glm;
    private final ChatRequestParameters defaults;
    private final Long seed;
    private final Executor executor;

    private ChatGlmStreamingChatModel(Builder b) {
        this.glm = b.requireGlm();
        this.defaults = b.parameters();
        this.seed = b.seed;
        this.executor = b.executor != null ? b.executor : task -> {
            Thread t = new Thread(task, "chatglm-stream");
            t.setDaemon(true);
            t.start();
        };
    }

    public static Builder builder() {
        return new Builder();
    }

    @Override
    public ChatRequestParameters defaultRequestParameters() {
        return defaults;
    }

    @Override
    public void doChat(ChatRequest request, StreamingChatResponseHandler handler) {
        ChatGlmTurn turn;
        try {
            turn = ChatGlmTurn.of(glm, request, seed);
        } catch (RuntimeException e) {
            handler.onError(e);
            return;
        }
        executor.execute(() -> {
            ChatResponse response;
            try {
                response = turn.run(handler::onPartialResponse);
            } catch (RuntimeException e) {
                LOG.debug("Streaming chat failed", e);
                handler.onError(e);
                return;
            }
            handler.onCompleteResponse(response);
        });
    }

    /** Builder of {@link ChatGlmStreamingChatModel}. */
    public static final class Builder extends ChatGlmModelBuilder<Builder> {
        private Executor executor;

        private Builder() {
        }

        /** Where requests run (default: a new daemon thread each). */
        public Builder executor(Executor executor) {
            this.executor = executor;
            return this;
        }

        public ChatGlmStreamingChatModel build() {
            return new ChatGlmStreamingChatModel(this);
        }
    }
}
