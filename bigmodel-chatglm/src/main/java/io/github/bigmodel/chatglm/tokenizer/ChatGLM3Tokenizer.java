package io.github.bigmodel.chatglm.tokenizer;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import io.github.bigmodel.chatglm.chat.AssistantReply;
import io.github.bigmodel.chatglm.chat.ChatInput;
import io.github.bigmodel.chatglm.chat.ChatMessage;

/**
 * ChatGLM3-6B's tokenizer (THUDM {@code tokenization_chatglm.py}, December 2023 revision): nine special tokens
 * after the SentencePiece vocabulary, the {@code [gMASK] sop} prefix, {@code build_chat_input} with roles,
 * metadata and tools, both decode paths and {@code process_response}.
 *
 * <pre>{@code
 * ChatGLM3Tokenizer tok = ChatGLM3Tokenizer.load(Path.of("tokenizer.model"));
 * List<ChatMessage> history = new ArrayList<>();
 * ChatInput input = tok.buildChatInput("你好", history, "user");
 * // ... generate until one of tok.stopTokenIds() ...
 * ChatGLM3Tokenizer.Turn turn = tok.finishTurn("你好", "user", history, generatedIds);
 * System.out.println(turn.reply().toPythonValue());
 * }</pre>
 */
public final class ChatGLM3Tokenizer implements ChatTokenizer {

    /** The role tokens, in id order after the five GLM specials. */
    public static final List<String> ROLE_TOKENS =
            List.of("<|system|>", "<|user|>", "<|assistant|>", "<|observation|>");
    private static final List<String> SPECIAL_TOKENS = List.of("[MASK]", "[gMASK]", "[sMASK]", "sop", "eop",
            "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>");
    private static final Pattern ROLE_PATTERN = Pattern.compile(
            String.join("|", ROLE_TOKENS.stream().map(Pattern::quote).toList()));

    /** Result of one {@code chat()} turn: the decoded reply, the processed reply and the new history. */
    public record Turn(String decodedOutput, AssistantReply reply, List<ChatMessage> history) {
    }

    /** Result of {@code process_response}: the reply and the history with the assistant entries appended. */
    public record ProcessedResponse(AssistantReply reply, List<ChatMessage> history) {
    }

    private final SentencePieceProcessor sp;
    private final boolean encodeSpecialTokens;
    private final SpecialVocabulary specials;

    /**
     * A tokenizer over {@code sp}.
     *
     * @param encodeSpecialTokens when true, role tokens typed in text passed to {@link #tokenize}/{@link #encode}
     *                            become their ids (THUDM's {@code encode_special_tokens}); chat inputs never parse
     *                            them
     */
    public ChatGLM3Tokenizer(SentencePieceProcessor sp, boolean encodeSpecialTokens) {
        this.sp = sp;
        this.encodeSpecialTokens = encodeSpecialTokens;
        this.specials = new SpecialVocabulary(sp, SPECIAL_TOKENS, "ChatGLM3");
    }

    /** Loads {@code tokenizer.model} with {@code encode_special_tokens=False}. */
    public static ChatGLM3Tokenizer load(Path modelFile) {
        return new ChatGLM3Tokenizer(SentencePieceProcessor.load(modelFile), false);
    }

    /** Loads {@code tokenizer.model}. */
    public static ChatGLM3Tokenizer load(Path modelFile, boolean encodeSpecialTokens) {
        return new ChatGLM3Tokenizer(SentencePieceProcessor.load(modelFile), encodeSpecialTokens);
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

    /** The id of a special ({@code [gMASK]}, {@code <|user|>}, ...) or of {@code <bos>}/{@code <eos>}/{@code <pad>}. */
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

    /** The ids that end a chat reply: {@code </s>}, {@code <|user|>}, {@code <|observation|>}. */
    public int[] stopTokenIds() {
        return new int[]{eosTokenId(), command("<|user|>"), command("<|observation|>")};
    }

    /** {@code SPTokenizer.encode}: plain SentencePiece ids, special-looking text stays text. */
    public int[] spEncode(String text) {
        return sp.encode(text);
    }

    @Override
    public List<String> tokenize(String text) {
        return tokenize(text, encodeSpecialTokens);
    }

    /** Tokens of {@code text}; with {@code encodeSpecialTokens} role tokens are cut out and each segment encoded alone. */
    public List<String> tokenize(String text, boolean encodeSpecialTokens) {
        if (!encodeSpecialTokens) {
            return sp.encodeAsPieces(text);
        }
        List<String> out = new ArrayList<>();
        Matcher m = ROLE_PATTERN.matcher(text);
        int last = 0;
        while (m.find()) {
            if (last < m.start()) {
                out.addAll(sp.encodeAsPieces(text.substring(last, m.start())));
            }
            out.add(m.group());
            last = m.end();
        }
        if (last < text.length()) {
            out.addAll(sp.encodeAsPieces(text.substring(last)));
        }
        return out;
    }

    @Override
    public int[] encode(String text, boolean addSpecialTokens) {
        return encode(text, addSpecialTokens, encodeSpecialTokens);
    }

    /** HF-path ids: tokens mapped with {@link #convertTokenToId} and the prefix in front when asked. */
    public int[] encode(String text, boolean addSpecialTokens, boolean encodeSpecialTokens) {
        List<String> tokens = tokenize(text, encodeSpecialTokens);
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

    /** {@code tokenizer(text)}: ids with the prefix, mask and positions. */
    public ChatInput call(String text) {
        return ChatInput.of(encode(text, true));
    }

    /** Specials first (so a piece spelled {@code sop} maps to the special id, as THUDM's code does). */
    @Override
    public int convertTokenToId(String token) {
        Integer id = specials.idOf(token);
        return id != null ? id : sp.pieceToId(token);
    }

    @Override
    public String convertIdToToken(int id) {
        String special = specials.tokenOf(id);
        if (special != null) {
            return special;
        }
        if (id == sp.eosId() || id == sp.bosId() || id == sp.unkId() || id < 0 || id > sp.vocabSize()) {
            return "";
        }
        return sp.idToPiece(id);
    }

    /** The tokens of {@code ids} ({@code convert_ids_to_tokens}). */
    public List<String> convertIdsToTokens(int[] ids) {
        List<String> out = new ArrayList<>(ids.length);
        for (int id : ids) {
            out.add(convertIdToToken(id));
        }
        return out;
    }

    /** {@code tokenizer.decode(ids)}: tokens joined by one SentencePiece {@code DecodePieces}; specials stay as text. */
    @Override
    public String decode(int[] ids) {
        return sp.decodePieces(convertIdsToTokens(ids));
    }

    /**
     * Decode that can drop the special tokens. {@code skipSpecialTokens=false} is {@link #decode(int[])}; with
     * {@code true} the nine specials and {@code </s> <s> <unk>} are removed before decoding (transformers 4.30
     * ignores the flag for this tokenizer; this is the behaviour the flag promises).
     */
    public String decode(int[] ids, boolean skipSpecialTokens) {
        if (!skipSpecialTokens) {
            return decode(ids);
        }
        return decode(Arrays.stream(ids).filter(id -> !specials.isSpecial(id) && id != sp.eosId()
                && id != sp.bosId() && id != sp.unkId()).toArray());
    }

    /**
     * {@code SPTokenizer.decode}: runs between specials are decoded by SentencePiece on their own, specials as text.
     *
     * @throws TokenizerException {@code ID_OUT_OF_RANGE} for an id that is neither a piece nor a special
     */
    public String spDecode(int[] ids) {
        StringBuilder text = new StringBuilder();
        List<Integer> buffer = new ArrayList<>();
        for (int id : ids) {
            String special = specials.tokenOf(id);
            if (special != null) {
                flush(buffer, text);
                text.append(special);
            } else {
                buffer.add(id);
            }
        }
        flush(buffer, text);
        return text.toString();
    }

    private void flush(List<Integer> buffer, StringBuilder text) {
        if (!buffer.isEmpty()) {
            text.append(sp.decode(buffer.stream().mapToInt(Integer::intValue).toArray()));
            buffer.clear();
        }
    }

    /** {@code build_single_message}: role token, {@code encode(metadata + "\n")}, {@code encode(message)}. */
    public int[] buildSingleMessage(String role, String metadata, String message) {
        if (!List.of("system", "user", "assistant", "observation").contains(role)) {
            throw new IllegalArgumentException("unknown ChatGLM3 role '" + role + "'");
        }
        int[] roleIds = sp.encode(metadata + "\n");
        int[] messageIds = sp.encode(message);
        int[] out = new int[1 + roleIds.length + messageIds.length];
        out[0] = command("<|" + role + "|>");
        System.arraycopy(roleIds, 0, out, 1, roleIds.length);
        System.arraycopy(messageIds, 0, out, 1 + roleIds.length, messageIds.length);
        return out;
    }

    /** The text a history item contributes: its content, plus the tools JSON on a system item with tools. */
    public static String renderedContent(ChatMessage item) {
        if (item.role().equals("system") && item.tools() != null) {
            return item.content() + "\n" + PythonJson.dumps(item.tools());
        }
        return item.content();
    }

    /** {@code build_chat_input(query, history, role)}: prefix, every history item, the new message, {@code <|assistant|>}. */
    public ChatInput buildChatInput(String query, List<ChatMessage> history, String role) {
        List<int[]> parts = new ArrayList<>();
        parts.add(prefixTokens());
        if (history != null) {
            for (ChatMessage item : history) {
                parts.add(buildSingleMessage(item.role(), item.metadataOrEmpty(), renderedContent(item)));
            }
        }
        parts.add(buildSingleMessage(role, "", query));
        parts.add(new int[]{command("<|assistant|>")});
        int total = parts.stream().mapToInt(p -> p.length).sum();
        int[] ids = new int[total];
        int at = 0;
        for (int[] p : parts) {
            System.arraycopy(p, 0, ids, at, p.length);
            at += p.length;
        }
        return ChatInput.of(ids);
    }

    /**
     * {@code process_response(output, history)}: splits on {@code <|assistant|>}, appends one assistant entry per
     * segment to a copy of {@code history} and returns the last segment's reply.
     */
    public ProcessedResponse processResponse(String output, List<ChatMessage> history) {
        List<ChatMessage> out = new ArrayList<>(history);
        AssistantReply reply = new AssistantReply.Text("");
        for (String response : output.split(Pattern.quote("<|assistant|>"), -1)) {
            String metadata;
            String content;
            int nl = response.indexOf('\n');
            if (nl >= 0) {
                metadata = response.substring(0, nl);
                content = response.substring(nl + 1);
            } else {
                metadata = "";
                content = response;
            }
            if (PythonText.strip(metadata).isEmpty()) {
                content = PythonText.strip(content);
                out.add(new ChatMessage("assistant", content, metadata, null));
                reply = new AssistantReply.Text(content.replace("[[训练时间]]", "2023年"));
            } else {
                out.add(new ChatMessage("assistant", content, metadata, null));
                ChatMessage first = out.get(0);
                if (first.role().equals("system") && first.tools() != null) {
                    String[] lines = content.split("\n", -1);
                    String code = lines.length <= 2 ? ""
                            : String.join("\n", Arrays.asList(lines).subList(1, lines.length - 1));
                    reply = new AssistantReply.ToolCall(PythonText.strip(metadata), ToolCallParser.parse(code));
                } else {
                    reply = new AssistantReply.Named(PythonText.strip(metadata), content);
                }
            }
        }
        return new ProcessedResponse(reply, out);
    }

    /**
     * The bookkeeping of the official {@code chat()} after generation: drops the last generated id (the stop
     * token), decodes, appends the query to a copy of {@code history} and processes the response.
     *
     * @param generatedIds the ids generated after the prompt, ending with the stop token
     */
    public Turn finishTurn(String query, String role, List<ChatMessage> history, int[] generatedIds) {
        int[] output = generatedIds.length == 0 ? generatedIds : Arrays.copyOf(generatedIds, generatedIds.length - 1);
        String decoded = decode(output);
        List<ChatMessage> withQuery = new ArrayList<>(history);
        withQuery.add(ChatMessage.of(role, query));
        ProcessedResponse processed = processResponse(decoded, withQuery);
        return new Turn(decoded, processed.reply(), processed.history());
    }
}
