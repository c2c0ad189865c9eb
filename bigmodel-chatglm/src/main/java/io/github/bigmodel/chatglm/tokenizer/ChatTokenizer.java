package io.github.bigmodel.chatglm.tokenizer;

import java.util.List;

/**
 * What the three ChatGLM tokenizers share: THUDM's Hugging Face tokenizer surface ({@code tokenize},
 * {@code encode}, {@code decode}, token/id conversion) on top of a {@link SentencePieceProcessor}. The chat-format
 * helpers differ per generation and live on {@link ChatGLM3Tokenizer}, {@link ChatGLM2Tokenizer} and
 * {@link ChatGLM1Tokenizer}.
 *
 * <pre>{@code
 * ChatTokenizer tok = ChatGLM3Tokenizer.load(Path.of("tokenizer.model"));
 * int[] ids = tok.encode("你好");        // [gMASK, sop, ...]
 * String text = tok.decode(ids);
 * }</pre>
 */
public interface ChatTokenizer {

    /** The SentencePiece model underneath. */
    SentencePieceProcessor sentencePiece();

    /** Number of ids the tokenizer can produce (SentencePiece pieces plus the added specials). */
    int vocabSize();

    /** Hugging Face {@code tokenizer.tokenize(text)}: the token strings of {@code text}. */
    List<String> tokenize(String text);

    /** Hugging Face {@code tokenizer.encode(text)}: ids with the model's special tokens added. */
    default int[] encode(String text) {
        return encode(text, true);
    }

    /** Hugging Face {@code tokenizer.encode(text, add_special_tokens=...)}. */
    int[] encode(String text, boolean addSpecialTokens);

    /** Hugging Face {@code tokenizer.decode(ids)}, as the official {@code chat()} decodes replies. */
    String decode(int[] ids);

    /** Token string of one id (Hugging Face {@code _convert_id_to_token}). */
    String convertIdToToken(int id);

    /** Id of one token string (Hugging Face {@code _convert_token_to_id}). */
    int convertTokenToId(String token);

    /** The end-of-sequence id. */
    int eosTokenId();

    /** The padding id. */
    int padTokenId();
}
