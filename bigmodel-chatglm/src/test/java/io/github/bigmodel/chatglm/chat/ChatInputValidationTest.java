package io.github.bigmodel.chatglm.chat;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.github.bigmodel.chatglm.ChatGLMConfig;
import io.github.bigmodel.chatglm.ChatGLMConfigException;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.chatglm.generation.GenerationRequest;
import io.github.bigmodel.chatglm.generation.Generator;
import io.github.bigmodel.chatglm.model.KvCache;
import io.github.bigmodel.chatglm.generation.GenerationConfig;
import io.github.bigmodel.chatglm.tokenizer.ChatGLM3Tokenizer;
import io.github.bigmodel.chatglm.tokenizer.TokenizerException;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.testing.ReferenceTree;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.stream.Stream;
import org.assertj.core.api.ThrowableAssert.ThrowingCallable;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;

/**
 * The input-validation matrix of the chat module's public entry points (listed in docs/reliability.md): each bad
 * input gives a typed exception whose message names what is wrong, before any native work, and the model keeps
 * answering afterwards.
 */
class ChatInputValidationTest {

    private static ChatGLM3Tokenizer tok;
    private static ChatGLMLanguageModel model;
    private static ChatGLM glm;

    @BeforeAll
    static void setUp() {
        tok = ChatGLM3Tokenizer.load(ReferenceTree.tokenizer().resolve("tokenizer.model"));
        model = ChatTestSupport.randomGlm2(tok.vocabSize(), 64, 3);
        glm = ChatGLM.of(model, tok);
    }

    @AfterAll
    static void tearDown() {
        model.toMeta();
    }

    record Case(String name, ThrowingCallable call, Class<? extends Throwable> type, String messagePart) {
    }

    private static GenerationRequest.Builder request(long... prompt) {
        return GenerationRequest.builder(new long[][] {prompt});
    }

    private static List<Case> cases() {
        ChatOptions greedy = ChatOptions.builder().generation(GenerationConfig.builder().maxNewTokens(4).build())
                .build();
        Generator generator = new Generator(model);
        int vocab = model.config().vocabSize();
        long[] sixty = new long[60];
        Arrays.fill(sixty, 30);
        long[] seventy = new long[70];
        Arrays.fill(seventy, 30);
        return List.of(
                new Case("chat: null query", () -> glm.chat(null, List.of(), greedy),
                        IllegalArgumentException.class, "query must not be null"),
                new Case("chat: empty query", () -> glm.chat("", List.of(), greedy),
                        IllegalArgumentException.class, "query must not be empty"),
                new Case("streamChat: null history", () -> glm.streamChat("hi", null, greedy),
                        IllegalArgumentException.class, "List.of()"),
                new Case("chat: null history item",
                        () -> glm.chat("hi", Arrays.asList(ChatMessage.of("user", "a"), null), greedy),
                        IllegalArgumentException.class, "history[1]"),
                new Case("chat: unknown role in history",
                        () -> glm.chat("hi", List.of(ChatMessage.of("robot", "beep")), greedy),
                        IllegalArgumentException.class, "robot"),
                new Case("ChatOptions: unknown role", () -> ChatOptions.builder().role("robot"),
                        IllegalArgumentException.class, "robot"),
                new Case("chat: prompt longer than the context", () -> glm.chat("晚上睡不着".repeat(40), List.of()),
                        PromptTooLongException.class, "64"),
                new Case("GenerationConfig: maxNewTokens 0", () -> GenerationConfig.builder().maxNewTokens(0),
                        IllegalArgumentException.class, "0"),
                new Case("GenerationRequest: null prompt", () -> GenerationRequest.builder(null),
                        IllegalArgumentException.class, "inputIds"),
                new Case("GenerationRequest: empty prompt", () -> request(),
                        IllegalArgumentException.class, "empty"),
                new Case("GenerationRequest: maxNewTokens -1", () -> request(1, 2).maxNewTokens(-1),
                        IllegalArgumentException.class, "maxNewTokens"),
                new Case("Generator: id above the vocabulary",
                        () -> generator.start(request(1, 2, vocab).build()),
                        IllegalArgumentException.class, "outside the model's vocabulary"),
                new Case("Generator: negative id", () -> generator.start(request(1, -4).build()),
                        IllegalArgumentException.class, "-4"),
                new Case("Generator: prompt longer than the context", () -> generator.start(request(seventy).build()),
                        IllegalArgumentException.class, "shorten the prompt"),
                new Case("Generator: prompt plus budget past seq_length",
                        () -> generator.start(request(sixty).maxNewTokens(10).build()),
                        IllegalArgumentException.class, "at most 4 new tokens"),
                new Case("Generator: null request", () -> generator.start(null),
                        IllegalArgumentException.class, "request"),
                // ChatGLM3Tokenizer.decode itself follows THUDM (such ids decode to "", a fixture case checks it);
                // the SentencePiece layer underneath refuses them.
                new Case("sentencepiece: decode an id outside the vocabulary",
                        () -> tok.sentencePiece().decode(new int[] {5, vocab + 10}),
                        TokenizerException.class, String.valueOf(vocab + 10)),
                new Case("sentencepiece: decode a negative id", () -> tok.sentencePiece().decode(new int[] {-1}),
                        TokenizerException.class, "-1"),
                new Case("KvCache: zero capacity",
                        () -> new KvCache(new Device[] {Device.CPU}, 1, 0, 2, 16, DType.FLOAT32),
                        IllegalArgumentException.class, "capacity=0"),
                new Case("KvCache: negative batch",
                        () -> new KvCache(new Device[] {Device.CPU}, -1, 8, 2, 16, DType.FLOAT32),
                        IllegalArgumentException.class, "batch=-1"),
                new Case("ChatGLM.load: missing folder", () -> ChatGLM.load(Path.of("/nonexistent/chatglm3")),
                        io.github.bigmodel.chatglm.ChatGLMConfigException.class, "/nonexistent/chatglm3"),
                new Case("chat: prompt longer than max_length", () -> glm.chat("晚上睡不着".repeat(3), List.of(),
                        ChatOptions.builder().generation(GenerationConfig.builder().maxLength(8).build()).build()),
                        PromptTooLongException.class, "raise max_length"),
                new Case("config: hidden_size missing",
                        () -> ChatGLMConfig.fromJsonString(SIZES.replace("\"hidden_size\": 64, ", "")),
                        ChatGLMConfigException.class, "hidden_size is missing"),
                new Case("config: hidden_size 1e12",
                        () -> ChatGLMConfig.fromJsonString(SIZES.replace("\"hidden_size\": 64", "\"hidden_size\": 1e12")),
                        ChatGLMConfigException.class, "hidden_size is too large: 1.0E12"),
                new Case("config: hidden_size 10000000000",
                        () -> ChatGLMConfig.fromJsonString(SIZES.replace("64", "10000000000")),
                        ChatGLMConfigException.class, "hidden_size is too large"),
                new Case("config: hidden_size 64.5",
                        () -> ChatGLMConfig.fromJsonString(SIZES.replace("64", "64.5")),
                        ChatGLMConfigException.class, "hidden_size must be an integer"),
                new Case("config: ChatGLM-6B without inner_hidden_size",
                        () -> ChatGLMConfig.fromJsonString("{\"num_layers\": 1, \"hidden_size\": 32,"
                                + " \"num_attention_heads\": 2, \"vocab_size\": 100, \"position_encoding_2d\": true}"),
                        ChatGLMConfigException.class, "inner_hidden_size is missing"));
    }

    /** A ChatGLM2/3 config that states every size, the base the config cases take one thing away from. */
    private static final String SIZES = "{\"num_layers\": 1, \"hidden_size\": 64, \"num_attention_heads\": 4,"
            + " \"kv_channels\": 16, \"ffn_hidden_size\": 96, \"padded_vocab_size\": 128}";

    @org.junit.jupiter.api.Test
    void configThatStatesItsSizesKeepsThudmDefaultsForTheRest() {
        ChatGLMConfig c = ChatGLMConfig.fromJsonString(SIZES);
        assertThat(c.hiddenSize()).isEqualTo(64);
        // configuration_chatglm.py's defaults: seq_length 2048, layernorm_epsilon 1e-5, one query group.
        assertThat(c.maxPositions()).isEqualTo(2048);
        assertThat(c.layernormEpsilon()).isEqualTo(1e-5);
        assertThat(c.kvHeads()).isEqualTo(4);
    }

    @org.junit.jupiter.api.Test
    void promptTooLongNamesTheSettingInTheCallersWords() {
        PromptTooLongException e = org.junit.jupiter.api.Assertions.assertThrows(PromptTooLongException.class,
                () -> glm.chat("晚上睡不着".repeat(3), List.of(), ChatOptions.builder()
                        .generation(GenerationConfig.builder().maxLength(8).build()).build()));
        assertThat(e.settingMessage().setting()).isEqualTo("max_length");
        assertThat(e.getMessage()).endsWith("raise max_length").contains("limit of 8 tokens");
        assertThat(e.message(s -> "--" + s.replace('_', '-'))).endsWith("raise --max-length")
                .doesNotContain("max_length");
        // The model's own positions: no setting to name, the same words for everyone.
        PromptTooLongException positions = org.junit.jupiter.api.Assertions.assertThrows(
                PromptTooLongException.class, () -> glm.chat("晚上睡不着".repeat(40), List.of()));
        assertThat(positions.settingMessage()).isNull();
        assertThat(positions.message(s -> "--" + s)).isEqualTo(positions.getMessage())
                .contains("the model's 64 positions").doesNotContain("max_length");
    }

    @TestFactory
    Stream<DynamicTest> everyBadInputIsATypedClearError() {
        return cases().stream().map(c -> DynamicTest.dynamicTest(c.name(), () -> {
            assertThatThrownBy(c.call()).isInstanceOf(c.type()).hasMessageContaining(c.messagePart());
            // Nothing was left half-done: the same model answers right after.
            ChatResponse r = glm.chat("你好", List.of(), ChatOptions.builder()
                    .generation(GenerationConfig.builder().maxNewTokens(2).build()).build());
            assertThat(r.generatedIds()).isNotEmpty();
        }));
    }
}
