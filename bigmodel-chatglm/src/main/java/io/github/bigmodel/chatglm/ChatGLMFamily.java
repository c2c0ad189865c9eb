package io.github.bigmodel.chatglm;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.github.bigmodel.chatglm.chat.ChatFormat;
import io.github.bigmodel.chatglm.tokenizer.ChatGLM1Tokenizer;
import io.github.bigmodel.chatglm.tokenizer.ChatGLM2Tokenizer;
import io.github.bigmodel.chatglm.tokenizer.ChatGLM3Tokenizer;
import io.github.bigmodel.chatglm.tokenizer.ChatTokenizer;
import io.github.bigmodel.core.DType;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Locale;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;

/**
 * What a ChatGLM model folder (or config) is, answered in one place: which member of the family it is
 * (ChatGLM-6B, ChatGLM2-6B or ChatGLM3-6B), its config, which tokenizer file it ships and how to load it, the prompt
 * convention its chat uses, and the model to build for it. {@code ChatGLM.load} and every CLI command ask this
 * descriptor instead of deciding on their own.
 *
 * <p>The member is read from the config: ChatGLM-6B has its own architecture; ChatGLM2-6B and ChatGLM3-6B share
 * config and tokenizer files, so a config whose {@code _name_or_path} names chatglm2 is ChatGLM2-6B and any other is
 * ChatGLM3-6B (the newer default).
 *
 * <pre>{@code
 * ChatGLMFamily f = ChatGLMFamily.ofFolder(Path.of("chatglm3-6b"));
 * f.member();                                   // CHATGLM3
 * f.displayName();                              // "ChatGLM3-6B"
 * ChatTokenizer tok = f.tokenizer(Path.of("chatglm3-6b"));        // tokenizer.model
 * ChatGLMLanguageModel model = f.createModel(DType.FLOAT16);       // on meta
 * ChatGLMFamily.ofPreset("chatglm3-6b").config().numLayers();      // 28, no files needed
 * }</pre>
 */
public final class ChatGLMFamily {

    private final ChatGLMConfig config;
    private final ChatFormat member;

    private ChatGLMFamily(ChatGLMConfig config, ChatFormat member) {
        this.config = config;
        this.member = member;
    }

    /** The member a config describes (see the class comment). */
    public static ChatGLMFamily of(ChatGLMConfig config) {
        if (config == null) {
            throw new IllegalArgumentException("config must not be null");
        }
        return new ChatGLMFamily(config, detect(config));
    }

    /**
     * A config read as the given member, for the one case the files cannot tell apart (ChatGLM2-6B vs ChatGLM3-6B).
     *
     * @param member null to detect
     * @throws IllegalArgumentException when the member's architecture is not the config's (ChatGLM-6B vs the others)
     */
    public static ChatGLMFamily of(ChatGLMConfig config, ChatFormat member) {
        ChatGLMFamily detected = of(config);
        if (member == null || member == detected.member) {
            return detected;
        }
        boolean v1Config = config.version() == ChatGLMConfig.Version.CHATGLM_6B;
        if (v1Config != (member == ChatFormat.CHATGLM_6B)) {
            throw new IllegalArgumentException("The config describes a " + detected.displayName()
                    + "-architecture model; it cannot be read as " + displayName(member));
        }
        return new ChatGLMFamily(config, member);
    }

    /**
     * The member of the model folder {@code dir}, from its {@code config.json}.
     *
     * @throws ChatGLMConfigException when the folder or its config.json is missing or invalid
     */
    public static ChatGLMFamily ofFolder(Path dir) {
        if (dir == null) {
            throw new IllegalArgumentException("model folder must not be null");
        }
        return of(ChatGLMConfig.fromJson(dir.resolve("config.json")));
    }

    /**
     * A published THUDM model by name ({@link ChatGLMConfig#presetNames()}), for planning with no files at hand.
     *
     * @throws ChatGLMConfigException for an unknown name
     */
    public static ChatGLMFamily ofPreset(String name) {
        ChatGLMConfig config = ChatGLMConfig.preset(name);
        String key = name.trim().toLowerCase(Locale.ROOT);
        ChatFormat member = config.version() == ChatGLMConfig.Version.CHATGLM_6B ? ChatFormat.CHATGLM_6B
                : key.contains("chatglm2") ? ChatFormat.CHATGLM2 : ChatFormat.CHATGLM3;
        return new ChatGLMFamily(config, member);
    }

    public ChatGLMConfig config() {
        return config;
    }

    /** Which member of the family: it fixes the tokenizer class and the prompt convention. */
    public ChatFormat member() {
        return member;
    }

    /** The member's published name: {@code ChatGLM-6B}, {@code ChatGLM2-6B} or {@code ChatGLM3-6B}. */
    public String displayName() {
        return displayName(member);
    }

    private static String displayName(ChatFormat member) {
        return switch (member) {
            case CHATGLM_6B -> "ChatGLM-6B";
            case CHATGLM2 -> "ChatGLM2-6B";
            case CHATGLM3 -> "ChatGLM3-6B";
        };
    }

    /** The tokenizer file a model folder of this member ships: {@code ice_text.model} or {@code tokenizer.model}. */
    public String tokenizerFileName() {
        return tokenizerFileName(member);
    }

    /** {@link #tokenizerFileName()} of a member, for a tokenizer without its model folder. */
    public static String tokenizerFileName(ChatFormat member) {
        return member == ChatFormat.CHATGLM_6B ? "ice_text.model" : "tokenizer.model";
    }

    /**
     * The tokenizer of the model folder {@code dir} ({@link #tokenizerFileName()}; ChatGLM-6B also reads
     * {@code num_image_tokens} from {@code tokenizer_config.json}, 0 when absent).
     *
     * @throws io.github.bigmodel.chatglm.tokenizer.TokenizerException when the file is missing or invalid
     */
    public ChatTokenizer tokenizer(Path dir) {
        return tokenizer(dir.resolve(tokenizerFileName()), member == ChatFormat.CHATGLM_6B ? numImageTokens(dir) : 0);
    }

    /**
     * This member's tokenizer from a SentencePiece file anywhere.
     *
     * @param numImageTokens ChatGLM-6B's image-token count before the text pieces (0 for its final revision);
     *                       ignored by the other members
     */
    public ChatTokenizer tokenizer(Path modelFile, int numImageTokens) {
        return tokenizer(member, modelFile, numImageTokens);
    }

    /**
     * A member's tokenizer from a SentencePiece file, for a tokenizer without its model folder (no config to read
     * the member from).
     *
     * <pre>{@code
     * ChatTokenizer t = ChatGLMFamily.tokenizer(ChatFormat.CHATGLM3, Path.of("tokenizer.model"), 0);
     * }</pre>
     */
    public static ChatTokenizer tokenizer(ChatFormat member, Path modelFile, int numImageTokens) {
        return switch (member) {
            case CHATGLM_6B -> ChatGLM1Tokenizer.load(modelFile, numImageTokens);
            case CHATGLM2 -> ChatGLM2Tokenizer.load(modelFile);
            case CHATGLM3 -> ChatGLM3Tokenizer.load(modelFile);
        };
    }

    /** The model for this config on meta, parameters in {@code dtype} (null: the config's {@code torch_dtype}). */
    public ChatGLMLanguageModel createModel(DType dtype) {
        return ChatGLMLanguageModel.create(config, dtype != null ? dtype : config.torchDtype());
    }

    private static ChatFormat detect(ChatGLMConfig config) {
        if (config.version() == ChatGLMConfig.Version.CHATGLM_6B) {
            return ChatFormat.CHATGLM_6B;
        }
        JsonNode name = config.raw("_name_or_path");
        if (name != null && name.asText().toLowerCase(Locale.ROOT).contains("chatglm2")) {
            return ChatFormat.CHATGLM2;
        }
        return ChatFormat.CHATGLM3;
    }

    private static int numImageTokens(Path dir) {
        Path file = dir.resolve("tokenizer_config.json");
        if (!Files.isRegularFile(file)) {
            return 0;
        }
        try {
            JsonNode n = new ObjectMapper().readTree(file.toFile()).get("num_image_tokens");
            return n == null || n.isNull() ? 0 : n.asInt();
        } catch (IOException e) {
            throw new UncheckedIOException("Cannot read " + file, e);
        }
    }

    @Override
    public String toString() {
        return displayName() + " (" + config.numLayers() + " layers)";
    }
}
