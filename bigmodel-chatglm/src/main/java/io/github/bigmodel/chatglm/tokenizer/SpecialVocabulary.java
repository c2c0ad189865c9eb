package io.github.bigmodel.chatglm.tokenizer;

import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A SentencePiece vocabulary followed by a model's special tokens, numbered on from its last piece, as ChatGLM2 and
 * ChatGLM3 add {@code [MASK]}, {@code [gMASK]}, ..., {@code <|observation|>}. {@code <bos>}/{@code <eos>}/{@code <pad>}
 * are SentencePiece's own ids ({@code <pad>} is the unknown id, as THUDM's code has it).
 */
final class SpecialVocabulary {

    private final SentencePieceProcessor sp;
    private final String model;
    private final Map<String, Integer> ids = new LinkedHashMap<>();
    private final Map<Integer, String> tokens = new LinkedHashMap<>();
    private final int size;

    SpecialVocabulary(SentencePieceProcessor sp, List<String> specials, String model) {
        this.sp = sp;
        this.model = model;
        int n = sp.vocabSize();
        for (String token : specials) {
            ids.put(token, n);
            tokens.put(n, token);
            n++;
        }
        this.size = n;
    }

    /** Pieces plus specials. */
    int size() {
        return size;
    }

    /** Special token text to id, in id order (read-only). */
    Map<String, Integer> ids() {
        return Collections.unmodifiableMap(ids);
    }

    /** The id of a special token, or null. */
    Integer idOf(String token) {
        return ids.get(token);
    }

    /** The special token with this id, or null. */
    String tokenOf(int id) {
        return tokens.get(id);
    }

    boolean isSpecial(int id) {
        return tokens.containsKey(id);
    }

    /** The id of a special or of {@code <bos>}/{@code <eos>}/{@code <pad>}. */
    int command(String token) {
        switch (token) {
            case "<bos>":
                return sp.bosId();
            case "<eos>":
                return sp.eosId();
            case "<pad>":
                return sp.unkId();
            default:
                Integer id = ids.get(token);
                if (id == null) {
                    throw new IllegalArgumentException(token + " is not a special token of " + model);
                }
                return id;
        }
    }

    /** {@code [gMASK], sop}: the prefix both models put before a prompt. */
    int[] prefix() {
        return new int[] {command("[gMASK]"), command("sop")};
    }
}
