package io.github.bigmodel.chatglm;

/**
 * A ChatGLM {@code config.json} (or a preset name) that cannot describe a model: unreadable JSON, a missing or
 * out-of-range field, inconsistent sizes.
 *
 * <pre>{@code
 * try {
 *     ChatGLMConfig.fromJson(Path.of("config.json"));
 * } catch (ChatGLMConfigException e) {
 *     log.error("bad config: {}", e.getMessage());   // names the field and the value
 * }
 * }</pre>
 */
public class ChatGLMConfigException extends IllegalArgumentException {

    private static final long serialVersionUID = 1L;

    public ChatGLMConfigException(String message) {
        super(message);
    }

    public ChatGLMConfigException(String message, Throwable cause) {
        super(message, cause);
    }
}
