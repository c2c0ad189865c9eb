package io.github.bigmodel.chatglm.chat;

import java.util.Objects;

/**
 * One earlier exchange in the ChatGLM-6B / ChatGLM2-6B history format ({@code (query, response)} tuples).
 *
 * <pre>{@code
 * List<ChatRound> history = List.of(new ChatRound("你好", "你好👋！"));
 * String prompt = glm2.buildPrompt("晚上睡不着应该怎么办", history);
 * }</pre>
 *
 * @param query    what the user asked
 * @param response what the model answered (after {@code process_response})
 */
public record ChatRound(String query, String response) {
    public ChatRound {
        Objects.requireNonNull(query, "query");
        Objects.requireNonNull(response, "response");
    }
}
