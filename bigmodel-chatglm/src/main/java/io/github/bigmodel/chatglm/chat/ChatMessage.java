package io.github.bigmodel.chatglm.chat;

import com.fasterxml.jackson.databind.JsonNode;

import java.util.Objects;

/**
 * One ChatGLM3 history item ({@code {"role", "content"[, "metadata"][, "tools"]}}). {@code metadata} and
 * {@code tools} may be absent ({@code null}), which is not the same as empty: the official code stores
 * {@code "metadata": ""} only for assistant replies, and tools only matter on a {@code system} item.
 *
 * <pre>{@code
 * List<ChatMessage> history = new ArrayList<>(List.of(
 *     ChatMessage.system("Answer the following questions...", toolsJson),
 *     ChatMessage.of("user", "帮我查询北京的天气")));
 * }</pre>
 *
 * @param role     {@code system}, {@code user}, {@code assistant} or {@code observation}
 * @param content  message text
 * @param metadata text after the role token (tool name for a tool call), or null when absent
 * @param tools    tool definitions (a JSON array) on a system item, or null
 */
public record ChatMessage(String role, String content, String metadata, JsonNode tools) {

    public ChatMessage {
        Objects.requireNonNull(role, "role");
        Objects.requireNonNull(content, "content");
    }

    /** A message without metadata and tools. */
    public static ChatMessage of(String role, String content) {
        return new ChatMessage(role, content, null, null);
    }

    /** A system message carrying tool definitions. */
    public static ChatMessage system(String content, JsonNode tools) {
        return new ChatMessage("system", content, null, tools);
    }

    /** The metadata, or {@code ""} when absent (Python's {@code item.get("metadata", "")}). */
    public String metadataOrEmpty() {
        return metadata == null ? "" : metadata;
    }
}
