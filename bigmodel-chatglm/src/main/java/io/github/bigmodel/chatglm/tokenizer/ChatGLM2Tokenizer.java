package io.github.bigmodel.chatglm.tokenizer;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import io.github.bigmodel.chatglm.chat.ChatInput;
import io.github.bigmodel.chatglm.chat.ChatRound;

/**
 * ChatGLM2-6B's tokenizer (THUDM {@code tokenization_chatglm.py}, September 2023): five specials after the
 * SentencePiece vocabulary, the {@code [gMASK] sop} prefix, the {@code [Round n]} prompt, {@code build_inputs},
 * {@code build_stream_inputs}, decoding that drops specials and {@code process_response}.
 *
 * <pre>{@code
 * ChatGLM2Tokenizer tok = ChatGLM2Tokenizer.load(Path.of("tokenizer.model"));
 * ChatInput in = tok.buildInputs("你好", List.of());
 * // ... generate until tok.eosTokenId() ...
 * ChatGLM2Tokenizer.Turn turn = tok.finishTurn("你好", List.of(), generatedIds);
 * }</pre>
 */
public final class ChatGLM2Tokenizer implements ChatTokenizer {

    private static final List<String> SPECIAL_TOKENS = List.of("[MASK]", "[gMASK]", "[sMASK]", "sop", "eop");

    /** Result of one {@code chat()} turn. */
    public record Turn(String decodedOutput, String response, List<ChatRound> history) {
    }

    private final SentencePieceProcessor sp;
    private final SpecialVocabulary specials;

    /** A tokenizer over {@code sp}. */
    public ChatGLM2Tokenizer(SentencePieceProcessor sp) {
        this.sp = sp;
        this.specials = new SpecialVocabulary(sp, SPECIAL_TOKENS, "ChatGLM2");
    }

    /** Loads {@code tokenizer.model}. */
    public static ChatGLM2Tokenizer load(Path modelFile) {
        return new ChatGLM2Tokenizer(SentencePieceProcessor.load(modelFile));
    }

    @Override
    public SentencePieceProcessor sentencePiece() {
        return sp;
    }

    @Override
    public int vocabSize() {
        return specials.size();
    }

    /** Special token text to id, in id order. */
    public Map<String, Integer> specialTokens() {
        return specials.ids();
    }

    /** The id of a special or of {@code <bos>}/{@code <eos>}/{@code <pad>}. */
    public int command(String token) {
        return specials.command(token);
    }

    /** {@code [gMASK], sop}. */
    public int[] prefixTokens() {
        return specials.prefix();
    }

    @Override
    public int eosTokenId() {
        return sp.eosId();
    }

    @Override
    public int padTokenId() {
        return sp.unkId();
    }

    @Override
    public List<String> tokenize(String text) {
        return sp.encodeAsPieces(text);
    }

    @Override
    public int[] encode(String text, boolean addSpecialTokens) {
        List<String> tokens = tokenize(text);
        int offset = addSpecialTokens ? 2 : 0;
        int[] ids = new int[tokens.size() + offset];
        if (addSpecialTokens) {
            ids[0] = command("[gMASK]");
            ids[1] = command("sop");
        }
        for (int i = 0; i < tokens.size(); i++) {
            ids[offset + i] = convertTokenToId(tokens.get(i));
        }
        return ids;
    }

    /** Specials first, so a piece spelled {@code sop}/{@code eop} becomes the special id (THUDM's behaviour). */
    @Override
    public int convertTokenToId(String token) {
        Integer id = specials.idOf(token);
        return id != null ? id : sp.pieceToId(token);
    }

    /** Specials and {@code </s> <s> <unk>} give {@code ""}. */
    @Override
    public String convertIdToToken(int id) {
        if (specials.isSpecial(id) || id == sp.eosId() || id == sp.bosId() || id == sp.unkId() || id < 0) {
            return "";
        }
        return sp.idToPiece(id);
    }

    /** The tokens of {@code ids}. */
    public List<String> convertIdsToTokens(int[] ids) {
        List<String> out = new ArrayList<>(ids.length);
        for (int id : ids) {
            out.add(convertIdToToken(id));
        }
        return out;
    }

    @Override
    public String decode(int[] ids) {
        return sp.decodePieces(convertIdsToTokens(ids));
    }

    /** {@code build_prompt}: earlier rounds from 1, then the open round with the query. */
    public String buildPrompt(String query, List<ChatRound> history) {
        StringBuilder prompt = new StringBuilder();
        int round = 1;
        if (history != null) {
            for (ChatRound r : history) {
                prompt.append("[Round ").append(round++).append("]\n\n问：").append(r.query())
                        .append("\n\n答：").append(r.response()).append("\n\n");
            }
        }
        prompt.append("[Round ").append(round).append("]\n\n问：").append(query).append("\n\n答：");
        return prompt.toString();
    }

    /** {@code build_inputs}: {@code tokenizer([build_prompt(query, history)])}. */
    public ChatInput buildInputs(String query, List<ChatRound> history) {
        return ChatInput.of(encode(buildPrompt(query, history), true));
    }

    /**
     * {@code build_stream_inputs}: with history only the new round ({@code "\n\n[Round n]..."}) without prefix and
     * without its first id (the lone dummy-prefix piece), for continuing from cached keys/values.
     */
    public ChatInput buildStreamInputs(String query, List<ChatRound> history) {
        if (history == null || history.isEmpty()) {
            return buildInputs(query, history);
        }
        String prompt = "\n\n[Round " + (history.size() + 1) + "]\n\n问：" + query + "\n\n答：";
        int[] ids = encode(prompt, false);
        return ChatInput.of(ids.length == 0 ? ids : Arrays.copyOfRange(ids, 1, ids.length));
    }

    /** {@code process_response}: strip and fill in the training-time placeholder. */
    public String processResponse(String response) {
        return PythonText.strip(response).replace("[[训练时间]]", "2023年");
    }

    /**
     * The bookkeeping of the official {@code chat()} after generation: decodes every generated id (the final
     * {@code </s>} decodes to nothing), processes the response and returns the history with the new round.
     */
    public Turn finishTurn(String query, List<ChatRound> history, int[] generatedIds) {
        String decoded = decode(generatedIds);
        String response = processResponse(decoded);
        List<ChatRound> out = new ArrayList<>(history == null ? List.of() : history);
        out.add(new ChatRound(query, response));
        return new Turn(decoded, response, out);
    }
}
