package io.github.bigmodel.chatglm.tokenizer;

import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.ByteBuffer;

/**
 * A minimal protobuf wire-format reader over a byte range: just what a ModelProto needs. Every read is bounds
 * checked and failures surface as {@link TokenizerException} with {@code MALFORMED_MODEL}.
 */
final class ProtoReader {

    static final int VARINT = 0;
    static final int FIXED64 = 1;
    static final int LENGTH_DELIMITED = 2;
    static final int START_GROUP = 3;
    static final int END_GROUP = 4;
    static final int FIXED32 = 5;

    private final byte[] data;
    private final int end;
    private final String context;
    private int pos;

    ProtoReader(byte[] data, int offset, int length, String context) {
        this.data = data;
        this.pos = offset;
        this.end = offset + length;
        this.context = context;
    }

    boolean hasMore() {
        return pos < end;
    }

    /** Reads a field key; returns {@code fieldNumber << 3 | wireType}. */
    int readTag() {
        long tag = readVarint();
        if (tag <= 0 || tag > Integer.MAX_VALUE || (tag >>> 3) == 0) {
            throw malformed("invalid field tag " + tag);
        }
        return (int) tag;
    }

    long readVarint() {
        long result = 0;
        for (int shift = 0; shift < 64; shift += 7) {
            if (pos >= end) {
                throw malformed("truncated varint");
            }
            byte b = data[pos++];
            result |= (long) (b & 0x7F) << shift;
            if ((b & 0x80) == 0) {
                return result;
            }
        }
        throw malformed("varint longer than 10 bytes");
    }

    /** An int32 field: negative values are sign-extended 10-byte varints, truncation to 32 bits is protobuf's rule. */
    int readInt32() {
        return (int) readVarint();
    }

    boolean readBool() {
        return readVarint() != 0;
    }

    int readFixed32() {
        require(4);
        int v = (data[pos] & 0xFF) | (data[pos + 1] & 0xFF) << 8 | (data[pos + 2] & 0xFF) << 16
                | (data[pos + 3] & 0xFF) << 24;
        pos += 4;
        return v;
    }

    float readFloat() {
        return Float.intBitsToFloat(readFixed32());
    }

    double readDouble() {
        require(8);
        long v = 0;
        for (int i = 7; i >= 0; i--) {
            v = (v << 8) | (data[pos + i] & 0xFF);
        }
        pos += 8;
        return Double.longBitsToDouble(v);
    }

    /** Reads a length prefix and returns a reader over that sub-message, advancing past it. */
    ProtoReader readMessage(String subContext) {
        int length = readLength();
        ProtoReader sub = new ProtoReader(data, pos, length, subContext);
        pos += length;
        return sub;
    }

    byte[] readBytes() {
        int length = readLength();
        byte[] out = new byte[length];
        System.arraycopy(data, pos, out, 0, length);
        pos += length;
        return out;
    }

    String readString() {
        int length = readLength();
        try {
            String s = StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT)
                    .decode(ByteBuffer.wrap(data, pos, length)).toString();
            pos += length;
            return s;
        } catch (CharacterCodingException e) {
            throw malformed("string field is not valid UTF-8");
        }
    }

    void skip(int tag) {
        int wireType = tag & 7;
        switch (wireType) {
            case VARINT -> readVarint();
            case FIXED64 -> {
                require(8);
                pos += 8;
            }
            case LENGTH_DELIMITED -> {
                int length = readLength();
                pos += length;
            }
            case FIXED32 -> {
                require(4);
                pos += 4;
            }
            case START_GROUP -> skipGroup(tag >>> 3);
            default -> throw malformed("unsupported wire type " + wireType + " for field " + (tag >>> 3));
        }
    }

    private void skipGroup(int fieldNumber) {
        while (true) {
            if (!hasMore()) {
                throw malformed("unterminated group " + fieldNumber);
            }
            int tag = readTag();
            if ((tag & 7) == END_GROUP) {
                if ((tag >>> 3) != fieldNumber) {
                    throw malformed("mismatched end of group " + fieldNumber);
                }
                return;
            }
            skip(tag);
        }
    }

    void expectWireType(int tag, int wireType) {
        if ((tag & 7) != wireType) {
            throw malformed("field " + (tag >>> 3) + " has wire type " + (tag & 7) + ", expected " + wireType);
        }
    }

    private int readLength() {
        long length = readVarint();
        if (length < 0 || length > end - pos) {
            throw malformed("length " + length + " runs past the end of the data (" + (end - pos) + " bytes left)");
        }
        return (int) length;
    }

    private void require(int n) {
        if (end - pos < n) {
            throw malformed("truncated field: need " + n + " bytes, " + (end - pos) + " left");
        }
    }

    TokenizerException malformed(String what) {
        return new TokenizerException(TokenizerException.Reason.MALFORMED_MODEL,
                "malformed SentencePiece model (" + context + " at byte " + pos + "): " + what);
    }
}
