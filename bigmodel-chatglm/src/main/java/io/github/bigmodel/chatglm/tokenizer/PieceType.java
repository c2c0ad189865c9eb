package io.github.bigmodel.chatglm.tokenizer;

/**
 * The type of a SentencePiece vocabulary entry, with the wire numbers of {@code ModelProto.SentencePiece.Type}.
 *
 * <pre>{@code
 * if (model.pieceType(id) == PieceType.BYTE) { ... }
 * }</pre>
 */
public enum PieceType {
    /** Ordinary piece produced by the encoder. */
    NORMAL(1),
    /** The unknown piece ({@code <unk>}). */
    UNKNOWN(2),
    /** Control symbols such as {@code <s>}; never produced from text and invisible when decoded. */
    CONTROL(3),
    /** Symbols that are always matched as one unit in the input text. */
    USER_DEFINED(4),
    /** Pieces kept in the vocabulary but never produced by the encoder. */
    UNUSED(5),
    /** Byte-fallback pieces {@code <0xNN>}. */
    BYTE(6);

    private final int wireNumber;

    PieceType(int wireNumber) {
        this.wireNumber = wireNumber;
    }

    /** The enum number used in the protobuf encoding. */
    public int wireNumber() {
        return wireNumber;
    }

    static PieceType fromWire(int number) {
        for (PieceType t : values()) {
            if (t.wireNumber == number) {
                return t;
            }
        }
        throw new TokenizerException(TokenizerException.Reason.MALFORMED_MODEL,
                "unknown SentencePiece piece type " + number);
    }
}
