package io.github.bigmodel.chatglm.chat;

import io.github.bigmodel.core.SettingMessage;
import java.util.function.UnaryOperator;

/**
 * The prompt (history plus the new query) leaves no room for a reply within the context: the model's positions
 * ({@code seq_length} / {@code max_sequence_length}) or the requested {@code max_length}. Nothing was run. Drop the
 * oldest turns of the history (or raise {@code max_length}) and ask again.
 *
 * <pre>{@code
 * try {
 *     glm.chat(query, history);
 * } catch (PromptTooLongException e) {
 *     history = history.subList(2, history.size());   // forget the oldest exchange
 * }
 * }</pre>
 */
public final class PromptTooLongException extends RuntimeException implements SettingMessage.Carrier {

    private static final long serialVersionUID = 1L;

    private final int promptTokens;
    private final int limit;
    private final transient SettingMessage settingMessage;

    /**
     * @param what the limit that was hit: {@code "max_length"} (the request's own) or a description of the model's
     *             positions, which no setting can raise
     */
    public PromptTooLongException(int promptTokens, int limit, String what) {
        this(promptTokens, limit, message(promptTokens, limit, what));
    }

    private PromptTooLongException(int promptTokens, int limit, Object message) {
        super(message.toString());
        this.promptTokens = promptTokens;
        this.limit = limit;
        this.settingMessage = message instanceof SettingMessage ? (SettingMessage) message : null;
    }

    private static Object message(int promptTokens, int limit, String what) {
        String start = "The prompt has " + promptTokens + " tokens, which leaves no room for a reply within ";
        if ("max_length".equals(what)) {
            return new SettingMessage("max_length", "max_length", start + "the requested limit of " + limit
                    + " tokens: drop the oldest turns of the history or raise ", "");
        }
        // The model's positions: only a shorter prompt helps, there is no setting to name.
        return start + what + " (" + limit + " tokens): drop the oldest turns of the history";
    }

    /** Tokens of the prompt that was built. */
    public int promptTokens() {
        return promptTokens;
    }

    /** The context limit the prompt must stay below. */
    public int limit() {
        return limit;
    }

    /** {@code max_length} when the request's limit was hit; null when the model's positions were. */
    @Override
    public SettingMessage settingMessage() {
        return settingMessage;
    }

    @Override
    public String message(UnaryOperator<String> naming) {
        return settingMessage == null ? getMessage() : settingMessage.render(naming);
    }
}
