package io.github.bigmodel.chatglm.chat;

/**
 * Why a reply ended.
 *
 * <pre>{@code
 * if (response.finishReason() == FinishReason.LENGTH) { ... the reply was cut ... }
 * }</pre>
 */
public enum FinishReason {
    /** The model produced a stop token (ChatGLM3: {@code </s>}, {@code <|user|>} or {@code <|observation|>}). */
    STOP,
    /** The token budget ({@code max_new_tokens} / {@code max_length} / the context) ran out. */
    LENGTH
}
