package io.github.bigmodel.chatglm.chat;

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
public final class PromptTooLongException extends RuntimeException {

    private final int promptTokens;
    private final int limit;

    public PromptTooLongException(int promptTokens, int limit, String what) {
        super("The prompt has " + promptTokens + " tokens, which leaves no room for a reply within " + what + " ("
                + limit + " tokens): drop the oldest turns of the history or raise max_length");
        this.promptTokens = promptTokens;
        this.limit = limit;
    }

    /** Tokens of the prompt that was built. */
    public int promptTokens() {
        return promptTokens;
    }

    /** The context limit the prompt must stay below. */
    public int limit() {
        return limit;
    }
}
