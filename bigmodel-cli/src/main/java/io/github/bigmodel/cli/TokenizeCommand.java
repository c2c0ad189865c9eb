package io.github.bigmodel.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.github.bigmodel.chatglm.ChatGLMConfig;
import io.github.bigmodel.chatglm.ChatGLMFamily;
import io.github.bigmodel.chatglm.chat.ChatFormat;
import io.github.bigmodel.chatglm.tokenizer.ChatGLM3Tokenizer;
import io.github.bigmodel.chatglm.chat.ChatInput;
import io.github.bigmodel.chatglm.chat.ChatMessage;
import io.github.bigmodel.chatglm.tokenizer.ChatTokenizer;
import java.io.PrintWriter;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import picocli.CommandLine.ArgGroup;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.ParameterException;
import picocli.CommandLine.Spec;

/**
 * {@code bigmodel tokenize}: encode, decode or build chat inputs with a ChatGLM tokenizer, as THUDM's code does.
 *
 * <pre>
 * bigmodel tokenize --tokenizer tokenizer.model --text "你好" --json
 * bigmodel tokenize --model chatglm3-6b --chat messages.json
 * bigmodel tokenize --tokenizer tokenizer.model --decode 64790,64792,36474
 * </pre>
 */
@Command(name = "tokenize", description = "Encode text, decode ids or build ChatGLM3 chat inputs.")
final class TokenizeCommand implements Callable<Integer> {

    static final class Source {
        @Option(names = "--tokenizer", paramLabel = "FILE", description = "A SentencePiece tokenizer.model.")
        Path tokenizer;

        @Option(names = "--model", paramLabel = "DIR",
                description = "A model folder (tokenizer.model or ice_text.model, and config.json for the version).")
        Path model;
    }

    static final class Input {
        @Option(names = "--text", paramLabel = "TEXT", description = "Text to encode.")
        String text;

        @Option(names = "--text-file", paramLabel = "FILE", description = "UTF-8 file whose text to encode.")
        Path textFile;

        @Option(names = "--decode", paramLabel = "IDS", split = ",", description = "Ids to decode, e.g. 1,2,3.")
        List<Integer> decode;

        @Option(names = "--chat", paramLabel = "MESSAGES.json",
                description = "[{\"role\", \"content\", \"tools\"?}, ...]: the ids build_chat_input gives "
                        + "(ChatGLM3); the last message is the query.")
        Path chat;
    }

    @ArgGroup(exclusive = true, multiplicity = "1")
    Source source;

    @ArgGroup(exclusive = true, multiplicity = "1")
    Input input;

    @Option(names = "--kind", paramLabel = "KIND",
            description = "chatglm3, chatglm2 or chatglm (v1); default: from config.json, else from the file name.")
    String kind;

    @Option(names = "--raw", description = "Plain SentencePiece: no prefix tokens, no special-token handling.")
    boolean raw;

    @Option(names = "--json", description = "Print {\"ids\", \"pieces\"} (encode) or {\"text\"} (decode).")
    boolean json;

    @Spec
    CommandSpec spec;

    @Override
    public Integer call() throws Exception {
        ChatFormat member = member();
        ChatTokenizer tokenizer = source.tokenizer != null ? ChatGLMFamily.tokenizer(member, source.tokenizer, 0)
                : ChatGLMFamily.ofFolder(source.model).tokenizer(source.model);
        PrintWriter out = spec.commandLine().getOut();
        ObjectMapper mapper = new ObjectMapper();
        if (input.decode != null) {
            int[] ids = input.decode.stream().mapToInt(Integer::intValue).toArray();
            // THUDM's decode turns unknown ids into "" (the library follows it); a user who typed them wants to know.
            int vocab = raw ? tokenizer.sentencePiece().vocabSize() : tokenizer.vocabSize();
            List<Integer> outside = input.decode.stream().filter(id -> id < 0 || id >= vocab).toList();
            if (!outside.isEmpty()) {
                throw new ParameterException(spec.commandLine(), "--decode: id" + (outside.size() == 1 ? " " : "s ")
                        + outside.stream().map(String::valueOf).collect(java.util.stream.Collectors.joining(", "))
                        + (outside.size() == 1 ? " is" : " are") + " outside the tokenizer's vocabulary [0, " + vocab
                        + ")");
            }
            String text = raw ? tokenizer.sentencePiece().decode(ids) : tokenizer.decode(ids);
            if (json) {
                ObjectNode root = mapper.createObjectNode();
                root.put("text", text);
                out.println(mapper.writeValueAsString(root));
            } else {
                out.println(text);
            }
            return 0;
        }
        int[] ids;
        if (input.chat != null) {
            if (!(tokenizer instanceof ChatGLM3Tokenizer)) {
                throw new ParameterException(spec.commandLine(), "--chat builds ChatGLM3 inputs: use a ChatGLM3 tokenizer");
            }
            ids = chatIds((ChatGLM3Tokenizer) tokenizer, mapper.readTree(input.chat.toFile()));
        } else {
            String text = input.text != null ? input.text : Files.readString(input.textFile, StandardCharsets.UTF_8);
            ids = raw ? tokenizer.sentencePiece().encode(text) : tokenizer.encode(text, true);
        }
        List<String> pieces = new ArrayList<>();
        for (int id : ids) {
            pieces.add(tokenizer.convertIdToToken(id));
        }
        if (json) {
            ObjectNode root = mapper.createObjectNode();
            ArrayNode idArray = root.putArray("ids");
            for (int id : ids) {
                idArray.add(id);
            }
            ArrayNode pieceArray = root.putArray("pieces");
            pieces.forEach(pieceArray::add);
            out.println(mapper.writeValueAsString(root));
        } else {
            StringBuilder sb = new StringBuilder();
            for (int i = 0; i < ids.length; i++) {
                sb.append(i == 0 ? "" : " ").append(ids[i]).append(':').append(pieces.get(i));
            }
            out.println(sb);
            out.println(ids.length + " tokens");
        }
        return 0;
    }

    private static int[] chatIds(ChatGLM3Tokenizer tokenizer, JsonNode messages) {
        if (!messages.isArray() || messages.isEmpty()) {
            throw new IllegalArgumentException("--chat expects a non-empty JSON array of messages");
        }
        List<ChatMessage> history = new ArrayList<>();
        for (int i = 0; i < messages.size() - 1; i++) {
            history.add(message(messages.get(i)));
        }
        ChatMessage last = message(messages.get(messages.size() - 1));
        ChatInput in = tokenizer.buildChatInput(last.content(), history, last.role());
        return in.inputIds();
    }

    private static ChatMessage message(JsonNode m) {
        if (!m.path("role").isTextual() || !m.path("content").isTextual()) {
            throw new IllegalArgumentException("each message needs a string \"role\" and \"content\": " + m);
        }
        String metadata = m.path("metadata").isTextual() ? m.get("metadata").asText() : null;
        JsonNode tools = m.has("tools") ? m.get("tools") : null;
        return new ChatMessage(m.get("role").asText(), m.get("content").asText(), metadata, tools);
    }

    /**
     * The family member whose tokenizer to use: {@code --kind}, else the model folder's config, else the file name
     * (ChatGLM-6B ships {@code ice_text.model}). The final chatglm-6b revision has no image tokens (0).
     */
    private ChatFormat member() {
        if (kind != null) {
            return switch (kind.toLowerCase(java.util.Locale.ROOT)) {
                case "chatglm3" -> ChatFormat.CHATGLM3;
                case "chatglm2" -> ChatFormat.CHATGLM2;
                case "chatglm", "chatglm-6b", "chatglm1" -> ChatFormat.CHATGLM_6B;
                default -> throw new ParameterException(spec.commandLine(),
                        "--kind must be chatglm3, chatglm2 or chatglm, not '" + kind + "'");
            };
        }
        if (source.model != null) {
            return ChatGLMFamily.ofFolder(source.model).member();
        }
        return source.tokenizer.getFileName().toString().startsWith("ice_text") ? ChatFormat.CHATGLM_6B
                : ChatFormat.CHATGLM3;
    }
}
