package io.github.bigmodel.chatglm.tokenizer;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import io.github.bigmodel.chatglm.chat.ChatRound;

/**
 * ChatGLM-6B (v1) tokenizer on {@code ice_text.model} (THUDM {@code tokenization_chatglm.py}, September 2023):
 * {@code \n}/{@code \t}/space-run pre-processing into {@code <n>}, {@code <|tab|>}, {@code <|blank_N|>}, ids
 * offset by {@code num_image_tokens}, the {@code [gMASK] <sop>} suffix, Hugging Face's no-split special tokens,
 * decoding with post-processing and {@code clean_up_tokenization}, the v1 chat prompt and {@code process_response}.
 *
 * <pre>{@code
 * ChatGLM1Tokenizer tok = ChatGLM1Tokenizer.load(Path.of("ice_text.model"), 0);
 * int[] ids = tok.encode(tok.buildPrompt("你好", List.of()));   // ... [gMASK] <sop>
 * ChatGLM1Tokenizer.Turn turn = tok.finishTurn("你好", List.of(), generatedIds);
 * }</pre>
 */
public final class ChatGLM1Tokenizer implements ChatTokenizer {

    /** Longest run of spaces that becomes one blank token. */
    public static final int MAX_BLANK_LENGTH = 80;
    private static final String TAB_TOKEN = "<|tab|>";
    private static final String BOS = "<sop>";
    private static final String EOS = "<eop>";
    private static final String UNK = "<unk>";
    private static final String PAD = "<pad>";
    private static final String MASK = "[MASK]";
    private static final String GMASK = "[gMASK]";
    private static final String END = "</s>";
    /** Tokens transformers registers as special (never split, whitespace around them stripped). */
    private static final List<String> NO_SPLIT_TOKENS = List.of(EOS, PAD, BOS, UNK, MASK);
    private static final Pattern[][] PUNCTUATION = punctuationRules();

    /** Result of one {@code chat()} turn. */
    public record Turn(String decodedOutput, String response, List<ChatRound> history) {
    }

    private final SentencePieceProcessor sp;
    private final int numImageTokens;

    /**
     * A tokenizer over {@code sp}.
     *
     * @param numImageTokens ids reserved in front of the text pieces (0 in the final ChatGLM-6B release, 20000 in
     *                       early revisions)
     */
    public ChatGLM1Tokenizer(SentencePieceProcessor sp, int numImageTokens) {
        if (numImageTokens < 0) {
            throw new IllegalArgumentException("numImageTokens must be >= 0, got " + numImageTokens);
        }
        this.sp = sp;
        this.numImageTokens = numImageTokens;
        for (String piece : List.of(BOS, EOS, UNK, PAD, MASK, GMASK, "<n>", TAB_TOKEN)) {
            if (sp.pieceToId(piece) == sp.unkId() && !piece.equals(UNK)) {
                throw new TokenizerException(TokenizerException.Reason.UNSUPPORTED_MODEL,
                        "not a ChatGLM-6B ice_text model: piece " + piece + " is missing");
            }
        }
    }

    /** Loads {@code ice_text.model}. */
    public static ChatGLM1Tokenizer load(Path modelFile, int numImageTokens) {
        return new ChatGLM1Tokenizer(SentencePieceProcessor.load(modelFile), numImageTokens);
    }

    @Override
    public SentencePieceProcessor sentencePiece() {
        return sp;
    }

    /** Number of ids: image tokens plus text pieces. */
    @Override
    public int vocabSize() {
        return numImageTokens + sp.vocabSize();
    }

    public int numImageTokens() {
        return numImageTokens;
    }

    /** {@code <sop>}, used as bos. */
    public int bosTokenId() {
        return convertTokenToId(BOS);
    }

    /** {@code <eop>}, the end of a reply. */
    @Override
    public int eosTokenId() {
        return convertTokenToId(EOS);
    }

    @Override
    public int padTokenId() {
        return convertTokenToId(PAD);
    }

    public int gmaskTokenId() {
        return convertTokenToId(GMASK);
    }

    public int maskTokenId() {
        return convertTokenToId(MASK);
    }

    /** {@code </s>}. */
    public int endTokenId() {
        return convertTokenToId(END);
    }

    /** Ids of the registered special tokens in transformers' order: bos, eos, unk, pad, mask. */
    public int[] allSpecialIds() {
        return new int[]{bosTokenId(), eosTokenId(), convertTokenToId(UNK), padTokenId(), maskTokenId()};
    }

    /** The tokens transformers never splits. */
    public static List<String> noSplitTokens() {
        return NO_SPLIT_TOKENS;
    }

    /** {@code SPTokenizer._preprocess}: {@code \n} to {@code <n>}, tab to {@code <|tab|>}, space runs to blanks. */
    public static String preprocess(String text) {
        String out = text.replace("\n", "<n>").replace("\t", TAB_TOKEN);
        for (int i = MAX_BLANK_LENGTH; i > 1; i--) {
            out = out.replace(" ".repeat(i), "<|blank_" + i + "|>");
        }
        return out;
    }

    /** {@code SPTokenizer.postprocess}: the inverse replacements on decoded text. */
    public static String postprocess(String text) {
        String out = text.replace("<n>", "\n").replace(TAB_TOKEN, "\t");
        for (int i = 2; i <= MAX_BLANK_LENGTH; i++) {
            out = out.replace("<|blank_" + i + "|>", " ".repeat(i));
        }
        return out;
    }

    /** {@code SPTokenizer.encode(text, add_dummy_prefix=...)}. */
    public int[] spEncode(String text, boolean addDummyPrefix) {
        String pre = preprocess(text);
        int[] ids = sp.encode(addDummyPrefix ? pre : "<n>" + pre);
        for (int i = 0; i < ids.length; i++) {
            ids[i] += numImageTokens;
        }
        // Without the dummy prefix the text is encoded after "<n>" and the "▁" and "<n>" ids are dropped.
        return addDummyPrefix ? ids : Arrays.copyOfRange(ids, Math.min(2, ids.length), ids.length);
    }

    /** {@code SPTokenizer.tokenize(text, add_dummy_prefix=...)}. */
    public List<String> spTokenize(String text, boolean addDummyPrefix) {
        String pre = preprocess(text);
        List<String> pieces = sp.encodeAsPieces(addDummyPrefix ? pre : "<n>" + pre);
        return addDummyPrefix ? pieces : new ArrayList<>(pieces.subList(Math.min(2, pieces.size()), pieces.size()));
    }

    /**
     * {@code SPTokenizer.decode}: image ids dropped, SentencePiece decode, post-processing.
     *
     * @throws TokenizerException {@code ID_OUT_OF_RANGE} for an id past the vocabulary
     */
    public String spDecode(int[] ids) {
        int[] text = Arrays.stream(ids).map(id -> id - numImageTokens).filter(id -> id >= 0).toArray();
        return postprocess(sp.decode(text));
    }

    /**
     * Hugging Face {@code tokenize}: cut at the no-split specials, strip whitespace around them, pre-process and
     * SentencePiece-tokenize every remaining segment on its own.
     */
    @Override
    public List<String> tokenize(String text) {
        List<String> segments = splitOnSpecials(text);
        for (int i = 0; i < segments.size(); i++) {
            if (NO_SPLIT_TOKENS.contains(segments.get(i))) {
                if (i + 1 < segments.size() && !segments.get(i + 1).isEmpty()) {
                    segments.set(i + 1, PythonText.lstrip(segments.get(i + 1)));
                }
                if (i > 0 && !segments.get(i - 1).isEmpty()) {
                    segments.set(i - 1, PythonText.rstrip(segments.get(i - 1)));
                }
            }
        }
        List<String> out = new ArrayList<>();
        for (String segment : segments) {
            if (segment.isEmpty()) {
                continue;
            }
            if (NO_SPLIT_TOKENS.contains(segment)) {
                out.add(segment);
            } else {
                out.addAll(spTokenize(segment, true));
            }
        }
        return out;
    }

    private static List<String> splitOnSpecials(String text) {
        List<String> out = new ArrayList<>();
        int last = 0;
        int i = 0;
        while (i < text.length()) {
            String hit = null;
            for (String token : NO_SPLIT_TOKENS) {
                if (text.startsWith(token, i)) {
                    hit = token;
                    break;
                }
            }
            if (hit == null) {
                i++;
                continue;
            }
            if (last < i) {
                out.add(text.substring(last, i));
            }
            out.add(hit);
            i += hit.length();
            last = i;
        }
        if (last < text.length()) {
            out.add(text.substring(last));
        }
        return out;
    }

    /** Hugging Face ids; with special tokens {@code [gMASK], <sop>} are appended. */
    @Override
    public int[] encode(String text, boolean addSpecialTokens) {
        List<String> tokens = tokenize(text);
        int[] ids = new int[tokens.size() + (addSpecialTokens ? 2 : 0)];
        for (int i = 0; i < tokens.size(); i++) {
            ids[i] = convertTokenToId(tokens.get(i));
        }
        if (addSpecialTokens) {
            ids[tokens.size()] = gmaskTokenId();
            ids[tokens.size() + 1] = bosTokenId();
        }
        return ids;
    }

    /**
     * {@code <image_N>} gives N; anything else its piece id plus the image offset.
     *
     * @throws TokenizerException {@code ID_OUT_OF_RANGE} for an {@code <image_N>} whose N is no int
     */
    @Override
    public int convertTokenToId(String token) {
        if (token.startsWith("<image_") && token.endsWith(">") && token.length() > 8) {
            String digits = token.substring(7, token.length() - 1);
            if (digits.chars().allMatch(Character::isDigit)) {
                try {
                    return Integer.parseInt(digits);
                } catch (NumberFormatException e) {
                    // Python's int() takes any length; no id of ours can be that large.
                    throw new TokenizerException(TokenizerException.Reason.ID_OUT_OF_RANGE,
                            "image token " + token + " names an id beyond any vocabulary", e);
                }
            }
        }
        return sp.pieceToId(token) + numImageTokens;
    }

    @Override
    public String convertIdToToken(int id) {
        if (id >= 0 && id < numImageTokens) {
            return "<image_" + id + ">";
        }
        return sp.idToPiece(id - numImageTokens);
    }

    /** {@code tokenizer.decode(ids)} with clean-up, keeping special tokens. */
    @Override
    public String decode(int[] ids) {
        return decode(ids, false, true);
    }

    /**
     * {@code tokenizer.decode(ids, skip_special_tokens=..., clean_up_tokenization_spaces=...)}: {@code <pad>} ids
     * dropped, tokens joined by one {@code DecodePieces}, post-processed, then cleaned up.
     */
    public String decode(int[] ids, boolean skipSpecialTokens, boolean cleanUpTokenizationSpaces) {
        if (ids.length == 0) {
            return "";
        }
        int pad = padTokenId();
        int[] special = allSpecialIds();
        List<String> tokens = new ArrayList<>();
        for (int id : ids) {
            if (id == pad) {
                continue;
            }
            if (skipSpecialTokens && Arrays.stream(special).anyMatch(s -> s == id)) {
                continue;
            }
            tokens.add(convertIdToToken(id));
        }
        String text = postprocess(sp.decodePieces(tokens));
        return cleanUpTokenizationSpaces ? cleanUpTokenization(text) : text;
    }

    /** transformers' {@code clean_up_tokenization}: glue punctuation and English contractions. */
    public static String cleanUpTokenization(String text) {
        return text.replace(" .", ".").replace(" ?", "?").replace(" !", "!").replace(" ,", ",")
                .replace(" ' ", "'").replace(" n't", "n't").replace(" 'm", "'m").replace(" 's", "'s")
                .replace(" 've", "'ve").replace(" 're", "'re");
    }

    /** The v1 chat prompt: the bare query without history, else {@code [Round i]} blocks counted from 0. */
    public String buildPrompt(String query, List<ChatRound> history) {
        if (history == null || history.isEmpty()) {
            return query;
        }
        StringBuilder prompt = new StringBuilder();
        for (int i = 0; i < history.size(); i++) {
            prompt.append("[Round ").append(i).append("]\n问：").append(history.get(i).query())
                    .append("\n答：").append(history.get(i).response()).append('\n');
        }
        prompt.append("[Round ").append(history.size()).append("]\n问：").append(query).append("\n答：");
        return prompt.toString();
    }

    private static Pattern[][] punctuationRules() {
        String[][] pairs = {{",", "，"}, {"!", "！"}, {":", "："}, {";", "；"}, {"?", "？"}};
        Pattern[][] rules = new Pattern[pairs.length][];
        for (int i = 0; i < pairs.length; i++) {
            String ascii = Pattern.quote(pairs[i][0]);
            rules[i] = new Pattern[]{Pattern.compile("([\\u4e00-\\u9fff])" + ascii),
                    Pattern.compile(ascii + "([\\u4e00-\\u9fff])")};
        }
        return rules;
    }

    /**
     * v1 {@code process_response}: strip, fill in the training-time placeholder, and turn {@code , ! : ; ?} next to
     * a CJK ideograph into their full-width forms.
     */
    public String processResponse(String response) {
        String out = PythonText.strip(response).replace("[[训练时间]]", "2023年");
        String[] fullWidth = {"，", "！", "：", "；", "？"};
        for (int i = 0; i < PUNCTUATION.length; i++) {
            String wide = Matcher.quoteReplacement(fullWidth[i]);
            out = PUNCTUATION[i][0].matcher(out).replaceAll("$1" + wide);
            out = PUNCTUATION[i][1].matcher(out).replaceAll(wide + "$1");
        }
        return out;
    }

    /** The bookkeeping of the official {@code chat()}: decode every generated id, process, extend the history. */
    public Turn finishTurn(String query, List<ChatRound> history, int[] generatedIds) {
        String decoded = decode(generatedIds);
        String response = processResponse(decoded);
        List<ChatRound> out = new ArrayList<>(history == null ? List.of() : history);
        out.add(new ChatRound(query, response));
        return new Turn(decoded, response, out);
    }
}
