package io.github.bigmodel.chatglm.chat;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.chatglm.generation.GenerationConfig;
import io.github.bigmodel.chatglm.tokenizer.ChatGLM2Tokenizer;
import io.github.bigmodel.chatglm.tokenizer.ChatGLM3Tokenizer;
import io.github.bigmodel.core.MemorySize;
import io.github.bigmodel.core.ProcessMemory;
import io.github.bigmodel.core.testing.ReferenceTree;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/** Streaming (byte fallback, closing), context limits and native memory on random-weight models. */
class ChatStreamTest {

    private static final Logger LOG = LoggerFactory.getLogger(ChatStreamTest.class);
    private static ChatGLM3Tokenizer tok3;
    private static ChatGLM2Tokenizer tok2;
    private static ChatGLMLanguageModel model3;
    private static ChatGLMLanguageModel model2;
    private static ChatGLM glm3;
    private static ChatGLM glm2;

    @BeforeAll
    static void setUp() {
        tok3 = ChatGLM3Tokenizer.load(ReferenceTree.tokenizer().resolve("tokenizer.model"));
        tok2 = ChatGLM2Tokenizer.load(ReferenceTree.tokenizer().resolve("tokenizer.model"));
        model3 = ChatTestSupport.randomGlm2(tok3.vocabSize(), 1024, 7);
        model2 = ChatTestSupport.randomGlm2(tok2.vocabSize(), 1024, 8);
        glm3 = ChatGLM.of(model3, tok3);
        glm2 = ChatGLM.of(model2, tok2);
    }

    @AfterAll
    static void tearDown() {
        model3.toMeta();
        model2.toMeta();
    }

    private static int[] concat(int[]... parts) {
        int[] out = new int[0];
        for (int[] p : parts) {
            int at = out.length;
            out = Arrays.copyOf(out, at + p.length);
            System.arraycopy(p, 0, out, at, p.length);
        }
        return out;
    }

    @Test
    void byteFallbackCharactersComeOutWhole() {
        String text = "你好👋，ぬ世界 ok";
        int[] reply = concat(tok3.spEncode("\n"), tok3.spEncode(text), new int[] {tok3.eosTokenId()});
        // The scripted reply really goes through byte pieces (emoji and kana are not in the vocabulary).
        assertThat(Arrays.stream(reply).filter(id -> tok3.sentencePiece().isByte(id)).count()).isGreaterThanOrEqualTo(7);
        int[] prompt = glm3.promptIds("hi", List.of(), "user");
        ChatOptions opts = ChatOptions.builder().processor(ChatTestSupport.scripted(reply, prompt.length)).build();
        List<String> deltas = new ArrayList<>();
        ChatResponse r;
        try (ChatStream stream = glm3.streamChat("hi", List.of(), opts)) {
            r = stream.drain(deltas::add);
        }
        assertThat(r.text()).isEqualTo(text);
        assertThat(String.join("", deltas)).isEqualTo(r.text());
        assertThat(deltas).hasSizeGreaterThan(3).allSatisfy(d -> assertThat(d).doesNotContain("\uFFFD"));
        assertThat(deltas).anySatisfy(d -> assertThat(d).contains("👋"));
    }

    @Test
    void closingStopsGenerationAndFreesTheCache() throws Exception {
        ChatOptions opts = ChatOptions.builder()
                .generation(GenerationConfig.builder().ignoreEos(true).maxNewTokens(900).build()).build();
        ChatStream stream = glm2.streamChat("你好", List.of(), opts);
        stream.next();
        stream.next();
        int made = stream.generatedTokens();
        assertThat(stream.holdsCache()).isTrue();
        stream.close();
        assertThat(stream.holdsCache()).isFalse();
        assertThat(stream.hasNext()).isFalse();
        assertThat(stream.generatedTokens()).isEqualTo(made);
        assertThatThrownBy(stream::response).isInstanceOf(IllegalStateException.class);

        // Closed from another thread while a consumer pulls: the consumer stops within a step.
        ChatStream busy = glm2.streamChat("你好", List.of(), opts);
        AtomicInteger pulled = new AtomicInteger();
        Thread consumer = new Thread(() -> busy.forEachRemaining(d -> pulled.incrementAndGet()));
        consumer.start();
        while (busy.generatedTokens() < 5) {
            Thread.sleep(1);
        }
        busy.close();
        consumer.join(10_000);
        assertThat(consumer.isAlive()).isFalse();
        assertThat(busy.holdsCache()).isFalse();
        assertThat(busy.generatedTokens()).isLessThan(900);
    }

    @Test
    void overLongPromptsFailClearlyAndBudgetsStopAtTheContext() {
        String longQuery = "晚上睡不着应该怎么办".repeat(200);
        assertThatThrownBy(() -> glm3.chat(longQuery, List.of()))
                .isInstanceOf(PromptTooLongException.class)
                .hasMessageContaining("1024")
                .satisfies(e -> assertThat(((PromptTooLongException) e).promptTokens())
                        .isEqualTo(glm3.promptIds(longQuery, List.of(), "user").length));
        ChatOptions short5 = ChatOptions.builder().generation(GenerationConfig.builder().maxLength(5).build()).build();
        assertThatThrownBy(() -> glm3.chat("你好", List.of(), short5))
                .isInstanceOf(PromptTooLongException.class).hasMessageContaining("max_length");

        String query = "晚上睡不着应该怎么办".repeat(90);
        int promptLength = glm2.promptIds(query, List.of(), "user").length;
        assertThat(promptLength).isBetween(900, 1020);
        ChatOptions many = ChatOptions.builder()
                .generation(GenerationConfig.builder().ignoreEos(true).maxNewTokens(5000).build()).build();
        ChatResponse r = glm2.chat(query, List.of(), many);
        assertThat(r.generatedIds()).hasSize(1024 - promptLength);
        assertThat(r.finishReason()).isEqualTo(FinishReason.LENGTH);
    }

    @Test
    void historyAndRolesAreValidated() {
        assertThatThrownBy(() -> glm2.chat("hi", List.of(), ChatOptions.builder().role("observation").build()))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("observation");
        assertThatThrownBy(() -> glm2.chat("hi", List.of(ChatMessage.of("user", "a"))))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("pairs");
        assertThatThrownBy(() -> ChatOptions.builder().role("robot")).isInstanceOf(IllegalArgumentException.class);
        assertThatThrownBy(() -> ChatGLM.of(model3, ChatTestSupport.smallVocabTokenizer()))
                .isInstanceOf(IllegalArgumentException.class);
    }

    @Test
    void streamingDoesNotGrowNativeMemory() {
        ChatOptions opts = ChatOptions.builder()
                .generation(GenerationConfig.builder().doSample(true).seed(1).ignoreEos(true).maxNewTokens(200).build())
                .build();
        stream200(opts); // warm-up: allocator pools, JIT, lazily built tables
        stream200(opts);
        System.gc();
        ProcessMemory before = ProcessMemory.read();
        int tokens = stream200(opts);
        System.gc();
        ProcessMemory after = ProcessMemory.read();
        long grown = after.anonymousBytes() - before.anonymousBytes();
        LOG.info("200 streamed tokens: anonymous memory {} -> {} (grew {})", MemorySize.format(before.anonymousBytes()),
                MemorySize.format(after.anonymousBytes()), MemorySize.format(Math.max(0, grown)));
        assertThat(tokens).isEqualTo(200);
        assertThat(grown).isLessThan(32L << 20);
    }

    private static int stream200(ChatOptions opts) {
        try (ChatStream s = glm2.streamChat("你好", List.of(), opts)) {
            s.forEachRemaining(d -> { });
            return s.response().generatedIds().length;
        }
    }
}
