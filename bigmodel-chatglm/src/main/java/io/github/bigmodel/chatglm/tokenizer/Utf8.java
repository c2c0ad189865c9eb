package io.github.bigmodel.chatglm.tokenizer;

import java.nio.charset.StandardCharsets;

/** UTF-8 helpers with SentencePiece's rules (strict decoding, one U+FFFD per byte that starts no valid sequence). */
final class Utf8 {

    private Utf8() {
    }

    /** UTF-8 of {@code text}; a lone surrogate is rejected (SentencePiece's bindings refuse it too). */
    static byte[] encodeStrict(String text) {
        for (int i = 0; i < text.length(); i++) {
            char c = text.charAt(i);
            if (Character.isHighSurrogate(c)) {
                if (i + 1 < text.length() && Character.isLowSurrogate(text.charAt(i + 1))) {
                    i++;
                    continue;
                }
                throw loneSurrogate(i);
            }
            if (Character.isLowSurrogate(c)) {
                throw loneSurrogate(i);
            }
        }
        return text.getBytes(StandardCharsets.UTF_8);
    }

    private static TokenizerException loneSurrogate(int index) {
        return new TokenizerException(TokenizerException.Reason.INVALID_INPUT,
                "text has a lone surrogate at index " + index + "; it cannot be encoded as UTF-8");
    }

    /** Length of the valid UTF-8 sequence at {@code pos}, or 0 when the byte there starts none. */
    static int validCharLength(byte[] b, int pos, int end) {
        int c0 = b[pos] & 0xFF;
        if (c0 < 0x80) {
            return 1;
        }
        int need;
        int min2;
        int max2 = 0xBF;
        if (c0 >= 0xC2 && c0 <= 0xDF) {
            need = 2;
            min2 = 0x80;
        } else if (c0 >= 0xE0 && c0 <= 0xEF) {
            need = 3;
            min2 = c0 == 0xE0 ? 0xA0 : 0x80;
            if (c0 == 0xED) {
                max2 = 0x9F; // surrogates are not characters
            }
        } else if (c0 >= 0xF0 && c0 <= 0xF4) {
            need = 4;
            min2 = c0 == 0xF0 ? 0x90 : 0x80;
            if (c0 == 0xF4) {
                max2 = 0x8F; // above U+10FFFF
            }
        } else {
            return 0;
        }
        if (end - pos < need) {
            return 0;
        }
        int c1 = b[pos + 1] & 0xFF;
        if (c1 < min2 || c1 > max2) {
            return 0;
        }
        for (int i = 2; i < need; i++) {
            int c = b[pos + i] & 0xFF;
            if (c < 0x80 || c > 0xBF) {
                return 0;
            }
        }
        return need;
    }

    /** Decodes bytes, turning every byte that starts no valid sequence into one U+FFFD. */
    static void decodeLenient(byte[] b, int from, int to, StringBuilder out) {
        int pos = from;
        while (pos < to) {
            int length = validCharLength(b, pos, to);
            if (length == 0) {
                out.append('\uFFFD');
                pos++;
            } else {
                out.append(new String(b, pos, length, StandardCharsets.UTF_8));
                pos += length;
            }
        }
    }
}
