package io.github.bigmodel.chatglm.tokenizer;

/**
 * Raised for every tokenizer failure that is the caller's or the file's fault: a damaged or unsupported
 * {@code tokenizer.model}, an id outside the vocabulary, a malformed tool call in a model reply.
 *
 * <pre>{@code
 * try {
 *     SentencePieceModel model = SentencePieceModel.load(path);
 * } catch (TokenizerException e) {
 *     if (e.reason() == TokenizerException.Reason.MALFORMED_MODEL) { ... }
 * }
 * }</pre>
 */
public final class TokenizerException extends RuntimeException {

    /** What kind of failure this is, so callers can branch without parsing messages. */
    public enum Reason {
        /** The model file is not a well-formed SentencePiece ModelProto (truncated, bad wire data, bad trie). */
        MALFORMED_MODEL,
        /** The model is well formed but uses something this port does not implement (e.g. WORD/CHAR models). */
        UNSUPPORTED_MODEL,
        /** The model file could not be read. */
        IO_ERROR,
        /** An id is outside the vocabulary. */
        ID_OUT_OF_RANGE,
        /** Input text or arguments that cannot be tokenized (e.g. a lone surrogate). */
        INVALID_INPUT,
        /** A model reply that should contain a tool call could not be parsed. */
        MALFORMED_TOOL_CALL
    }

    private static final long serialVersionUID = 1L;

    private final Reason reason;

    public TokenizerException(Reason reason, String message) {
        super(message);
        this.reason = reason;
    }

    public TokenizerException(Reason reason, String message, Throwable cause) {
        super(message, cause);
        this.reason = reason;
    }

    /** The kind of failure. */
    public Reason reason() {
        return reason;
    }
}
