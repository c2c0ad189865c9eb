package io.github.bigmodel.chatglm.tokenizer;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.function.Supplier;
import io.github.bigmodel.chatglm.chat.ChatInput;

/**
 * What the tokenizers may do with any text, any ids and any model bytes, for the fuzz and mutation tests.
 *
 * <ul>
 *   <li>encode: every path of the ChatGLM-6B, ChatGLM2 and ChatGLM3 tokenizers gives ids inside the vocabulary, or
 *       -- exactly when the text has a lone surrogate -- a {@link TokenizerException} {@code INVALID_INPUT}
 *       (README section 6 rule 1: no reference behaviour exists for them); {@code convertTokenToId} of any text
 *       gives an id. On {@code tokenizer.model} (identity normaliser, byte fallback) {@code decode(encode(s))} is
 *       {@code s} with U+2581 read as a space (rules 1-4, 7, 8); on {@code ice_text.model} it is the normalised
 *       text with U+2581 read as a space and the dummy-prefix space dropped.</li>
 *   <li>decode: ids inside each path's range decode to well-formed text; an id outside it gives a
 *       {@code TokenizerException} {@code ID_OUT_OF_RANGE}, except where THUDM's code maps it to nothing
 *       (ChatGLM3 {@code tokenizer.decode}: any id outside the pieces and specials is {@code ""}, rule 15; negative
 *       ids in ChatGLM2's decode and ChatGLM-6B's {@code SPTokenizer.decode}).</li>
 *   <li>model bytes: a model, or a {@code TokenizerException}; a model that parses encodes and decodes with
 *       nothing but {@code TokenizerException}s.</li>
 * </ul>
 * Anything else (NullPointerException, IndexOutOfBounds, NumberFormatException, ...) is a finding.
 */
final class TokenizerOracle {

    static final SentencePieceProcessor BPE = SentencePieceProcessor.load(Fixtures.dir().resolve("tokenizer.model"));
    static final SentencePieceProcessor UNIGRAM =
            SentencePieceProcessor.load(Fixtures.dir().resolve("ice_text.model"));
    static final ChatGLM1Tokenizer GLM1 = new ChatGLM1Tokenizer(UNIGRAM, 0);
    static final ChatGLM2Tokenizer GLM2 = new ChatGLM2Tokenizer(BPE);
    static final ChatGLM3Tokenizer GLM3 = new ChatGLM3Tokenizer(BPE, false);
    static final ChatGLM3Tokenizer GLM3_SPECIAL = new ChatGLM3Tokenizer(BPE, true);
    private static final String[] SAMPLE_TEXTS = {"", "hello world", "你好", "  a\n\tb  ", "\uD83D\uDC4B<|user|>",
        "[gMASK]sop<n>"};

    private TokenizerOracle() {
    }

    /** Bytes to text: an even first byte reads the rest as UTF-8, an odd one as UTF-16BE code units (lone surrogates). */
    static String text(byte[] data) {
        if (data.length == 0) {
            return "";
        }
        if ((data[0] & 1) == 0) {
            return new String(data, 1, data.length - 1, StandardCharsets.UTF_8);
        }
        char[] chars = new char[(data.length - 1) / 2];
        ByteBuffer.wrap(data, 1, chars.length * 2).asCharBuffer().get(chars);
        return new String(chars);
    }

    /** Bytes to ids: the first byte picks raw signed 16-bit ids (odd) or ids near the vocabulary (even). */
    static int[] ids(byte[] data) {
        if (data.length == 0) {
            return new int[0];
        }
        boolean raw = (data[0] & 1) == 1;
        int[] ids = new int[(data.length - 1) / 2];
        for (int i = 0; i < ids.length; i++) {
            int v = ((data[1 + 2 * i] & 0xFF) << 8) | (data[2 + 2 * i] & 0xFF);
            ids[i] = raw ? (short) v : v % (GLM3.vocabSize() + 20) - 10;
        }
        return ids;
    }

    static boolean hasLoneSurrogate(String s) {
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (Character.isHighSurrogate(c) && i + 1 < s.length() && Character.isLowSurrogate(s.charAt(i + 1))) {
                i++;
            } else if (Character.isSurrogate(c)) {
                return true;
            }
        }
        return false;
    }

    private static void assertIds(int[] ids, int vocab, String what) {
        for (int id : ids) {
            assertThat(id).as(what + " id").isBetween(0, vocab - 1);
        }
    }

    /** Runs {@code encode}; returns its ids, or null after checking the lone-surrogate failure. */
    private static <T> T encodes(String text, Supplier<T> encode) {
        boolean lone = hasLoneSurrogate(text);
        try {
            T out = encode.get();
            assertThat(lone).as("text with a lone surrogate was encoded").isFalse();
            return out;
        } catch (TokenizerException e) {
            assertThat(e.reason()).as(e.getMessage()).isEqualTo(TokenizerException.Reason.INVALID_INPUT);
            assertThat(lone).as("encode failed on well-formed text: " + e.getMessage()).isTrue();
            return null;
        }
    }

    static void encode(String text) {
        int[] bpe = encodes(text, () -> BPE.encode(text));
        if (bpe != null) {
            assertIds(bpe, BPE.vocabSize(), "tokenizer.model");
            assertThat(BPE.decode(bpe)).as("round trip").isEqualTo(text.replace('\u2581', ' '));
            assertThat(BPE.encodeAsPieces(text)).hasSize(bpe.length);
        }
        int[] unigram = encodes(text, () -> UNIGRAM.encode(text));
        if (unigram != null) {
            assertIds(unigram, UNIGRAM.vocabSize(), "ice_text.model");
            String normalized = UNIGRAM.normalize(text).replace('\u2581', ' ');
            assertThat(UNIGRAM.decode(unigram)).as("round trip")
                    .isEqualTo(normalized.startsWith(" ") ? normalized.substring(1) : normalized);
        }
        int[] glm1 = encodes(text, () -> GLM1.encode(text, true));
        if (glm1 != null) {
            assertIds(glm1, GLM1.vocabSize(), "ChatGLM-6B");
            assertThat(glm1).endsWith(GLM1.gmaskTokenId(), GLM1.bosTokenId());
        }
        int[] glm2 = encodes(text, () -> GLM2.encode(text, true));
        if (glm2 != null) {
            assertIds(glm2, GLM2.vocabSize(), "ChatGLM2");
            assertThat(glm2).startsWith(GLM2.prefixTokens());
        }
        for (ChatGLM3Tokenizer glm3 : List.of(GLM3, GLM3_SPECIAL)) {
            int[] ids = encodes(text, () -> glm3.encode(text, true));
            if (ids != null) {
                assertIds(ids, glm3.vocabSize(), "ChatGLM3");
                assertThat(ids).startsWith(glm3.prefixTokens());
            }
            ChatInput input = encodes(text, () -> glm3.buildChatInput(text, List.of(), "user"));
            if (input != null) {
                assertIds(input.inputIds(), glm3.vocabSize(), "ChatGLM3 chat input");
            }
        }
        // A token is looked up, never encoded: any text gives an id.
        try {
            assertThat(GLM1.convertTokenToId(text)).isNotNegative();
        } catch (TokenizerException e) {
            // <image_N> with an N past int: THUDM returns N itself, which no vocabulary holds.
            assertThat(e.reason()).isEqualTo(TokenizerException.Reason.ID_OUT_OF_RANGE);
            assertThat(text).startsWith("<image_");
        }
        assertThat(GLM2.convertTokenToId(text)).isBetween(0, GLM2.vocabSize() - 1);
        assertThat(GLM3.convertTokenToId(text)).isBetween(0, GLM3.vocabSize() - 1);
    }

    /** Runs {@code decode}: it must succeed when {@code inRange}, else give ID_OUT_OF_RANGE. */
    private static void decodes(boolean inRange, Supplier<String> decode, String what) {
        try {
            String text = decode.get();
            assertThat(inRange).as(what + " decoded an id outside its range").isTrue();
            assertThat(hasLoneSurrogate(text)).as(what + " output is well-formed").isFalse();
        } catch (TokenizerException e) {
            assertThat(e.reason()).as(e.getMessage()).isEqualTo(TokenizerException.Reason.ID_OUT_OF_RANGE);
            assertThat(inRange).as(what + " refused ids inside its range: " + e.getMessage()).isFalse();
        }
    }

    private static boolean all(int[] ids, int from, int to) {
        for (int id : ids) {
            if (id < from || id >= to) {
                return false;
            }
        }
        return true;
    }

    static void decode(int[] ids) {
        int n = BPE.vocabSize();
        decodes(all(ids, 0, n), () -> BPE.decode(ids), "tokenizer.model decode");
        decodes(all(ids, 0, UNIGRAM.vocabSize()), () -> UNIGRAM.decode(ids), "ice_text.model decode");
        decodes(all(ids, 0, GLM1.vocabSize()), () -> GLM1.decode(ids), "ChatGLM-6B decode");
        decodes(all(ids, Integer.MIN_VALUE, GLM1.vocabSize()), () -> GLM1.spDecode(ids), "ChatGLM-6B spDecode");
        decodes(all(ids, Integer.MIN_VALUE, GLM2.vocabSize()), () -> GLM2.decode(ids), "ChatGLM2 decode");
        decodes(true, () -> GLM3.decode(ids), "ChatGLM3 decode");
        decodes(true, () -> GLM3.decode(ids, true), "ChatGLM3 decode skipping specials");
        decodes(all(ids, 0, GLM3.vocabSize()), () -> GLM3.spDecode(ids), "ChatGLM3 spDecode");
    }

    /** Parses model bytes; a model that parses must encode and decode with only TokenizerExceptions. */
    static boolean model(byte[] data) {
        SentencePieceProcessor sp;
        try {
            sp = new SentencePieceProcessor(SentencePieceModel.parse(data));
        } catch (TokenizerException e) {
            assertThat(e.reason()).as(e.getMessage()).isIn(TokenizerException.Reason.MALFORMED_MODEL,
                    TokenizerException.Reason.UNSUPPORTED_MODEL);
            return false;
        }
        for (String text : SAMPLE_TEXTS) {
            try {
                int[] ids = sp.encode(text);
                assertIds(ids, sp.vocabSize(), "mutated model");
                sp.decode(ids);
                sp.decodePieces(sp.encodeAsPieces(text));
            } catch (TokenizerException e) {
                // A damaged charsmap is only found when a rule is used.
                assertThat(e.reason()).as(e.getMessage()).isEqualTo(TokenizerException.Reason.MALFORMED_MODEL);
            }
        }
        int[] all = new int[Math.min(sp.vocabSize(), 512)];
        for (int i = 0; i < all.length; i++) {
            all[i] = i;
        }
        sp.decode(all);
        for (int id = 0; id < Math.min(sp.vocabSize(), 64); id++) {
            sp.idToPiece(id);
            sp.pieceToId(sp.idToPiece(id));
        }
        try {
            new ChatGLM3Tokenizer(sp, true).encode("<|user|>hi", true);
            new ChatGLM1Tokenizer(sp, 0).encode("a\n\tb   c<sop>", true);
        } catch (TokenizerException e) {
            assertThat(e.reason()).as(e.getMessage()).isIn(TokenizerException.Reason.MALFORMED_MODEL,
                    TokenizerException.Reason.UNSUPPORTED_MODEL);
        }
        return true;
    }
}
