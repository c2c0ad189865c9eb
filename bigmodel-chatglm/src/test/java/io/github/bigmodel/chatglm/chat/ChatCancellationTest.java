package io.github.bigmodel.chatglm.chat;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.chatglm.generation.GenerationConfig;
import io.github.bigmodel.chatglm.tokenizer.ChatGLM3Tokenizer;
import io.github.bigmodel.core.testing.ReferenceTree;
import java.util.List;
import java.util.NoSuchElementException;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * Closing a chat stream in the middle of a long reply, from the consuming thread and from another thread: the
 * model runs at most the step that was under way, the reply's KV cache is freed, and the same ChatGLM answers
 * the next turn exactly as before.
 */
class ChatCancellationTest {

    private static final String QUERY = "讲个故事";
    private static ChatGLMLanguageModel model;
    private static ChatGLM3Tokenizer tok;
    private static ChatGLM glm;

    @BeforeAll
    static void setUp() {
        tok = ChatGLM3Tokenizer.load(ReferenceTree.tokenizer().resolve("tokenizer.model"));
        model = ChatTestSupport.randomGlm2(tok.vocabSize(), 1024, 11);
        glm = ChatGLM.of(model, tok);
    }

    @AfterAll
    static void tearDown() {
        model.toMeta();
    }

    /**
     * A long reply of ordinary text (scripted, so that every step yields a delta) whose forward steps are counted:
     * processors run once per step.
     */
    private static ChatOptions counted(AtomicInteger steps) {
        return counted(steps, 0, null, null);
    }

    /** As {@link #counted(AtomicInteger)}; step {@code parkAt} signals {@code inStep} and waits for {@code release}. */
    private static ChatOptions counted(AtomicInteger steps, int parkAt, CountDownLatch inStep,
            CountDownLatch release) {
        // A ChatGLM3 reply starts with its metadata line (empty here): the text follows the first newline.
        int[] newline = tok.spEncode("\n");
        int[] text = tok.spEncode("从前有座山，山里有座庙。".repeat(80));
        int[] reply = java.util.Arrays.copyOf(newline, newline.length + text.length);
        System.arraycopy(text, 0, reply, newline.length, text.length);
        assertThat(reply.length).isGreaterThan(800);
        int promptLength = glm.promptIds(QUERY, List.of(), "user").length;
        var script = ChatTestSupport.scripted(reply, promptLength);
        return ChatOptions.builder()
                .generation(GenerationConfig.builder().ignoreEos(true).doSample(false).maxNewTokens(800).build())
                .processor((rows, scores) -> {
                    if (steps.incrementAndGet() == parkAt) {
                        inStep.countDown();
                        try {
                            release.await(30, TimeUnit.SECONDS);
                        } catch (InterruptedException e) {
                            Thread.currentThread().interrupt();
                        }
                    }
                    return script.process(rows, scores);
                }).build();
    }

    private static ChatOptions greedy(int tokens) {
        return ChatOptions.builder()
                .generation(GenerationConfig.builder().doSample(false).maxNewTokens(tokens).build()).build();
    }

    @Test
    void closingOnTheConsumerThreadStopsAtOnce() {
        ChatResponse before = glm.chat("你好", List.of(), greedy(10));
        AtomicInteger steps = new AtomicInteger();
        ChatStream stream = glm.streamChat(QUERY, List.of(), counted(steps));
        long bytes = stream.cacheBytes();
        assertThat(bytes).isPositive();
        int pulled = 0;
        while (stream.generatedTokens() < 7) {
            stream.next();
            pulled++;
        }
        assertThat(pulled).isPositive();
        assertThat(stream.generatedTokens()).isLessThan(10);
        int atClose = steps.get();
        assertThat(atClose).isEqualTo(stream.generatedTokens());
        stream.close();
        assertThat(stream.cacheBytes()).isZero();
        assertThat(stream.holdsCache()).isFalse();
        assertThat(stream.hasNext()).isFalse();
        assertThatThrownBy(stream::next).isInstanceOf(NoSuchElementException.class);
        assertThat(steps.get()).as("steps after close").isEqualTo(atClose);
        assertThatThrownBy(stream::response).isInstanceOf(IllegalStateException.class).hasMessageContaining("closed");
        stream.close();

        ChatResponse after = glm.chat("你好", List.of(), greedy(10));
        assertThat(after.generatedIds()).isEqualTo(before.generatedIds());
    }

    @Test
    void closingFromAnotherThreadStopsWithinOneStep() throws Exception {
        ChatResponse before = glm.chat("你好", List.of(), greedy(10));
        for (int round = 0; round < 4; round++) {
            AtomicInteger steps = new AtomicInteger();
            int closeAt = 4 + 5 * round;
            CountDownLatch inStep = new CountDownLatch(1);
            CountDownLatch release = new CountDownLatch(1);
            // Step closeAt parks inside its own computation, so close() is requested while exactly that step runs.
            ChatStream stream = glm.streamChat(QUERY, List.of(), counted(steps, closeAt, inStep, release));
            AtomicReference<Throwable> failure = new AtomicReference<>();
            AtomicInteger deltas = new AtomicInteger();
            Thread consumer = new Thread(() -> {
                try {
                    stream.forEachRemaining(d -> deltas.incrementAndGet());
                } catch (Throwable t) {
                    failure.set(t);
                }
            });
            consumer.start();
            assertThat(inStep.await(30, TimeUnit.SECONDS)).as("step %d reached", closeAt).isTrue();
            Thread closer = new Thread(stream::close);
            closer.start();
            // Let close() reach its wait for the running step (or return), then let that step finish.
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
            while (closer.isAlive() && closer.getState() == Thread.State.RUNNABLE && System.nanoTime() < deadline) {
                Thread.onSpinWait();
            }
            release.countDown();
            closer.join(30_000);
            consumer.join(30_000);
            assertThat(closer.isAlive()).as("close returned").isFalse();
            assertThat(consumer.isAlive()).as("consumer stopped").isFalse();
            assertThat(failure.get()).isNull();
            assertThat(steps.get()).as("no step after the one running when close was called").isEqualTo(closeAt);
            assertThat(stream.generatedTokens()).isLessThan(800);
            assertThat(stream.cacheBytes()).isZero();
            assertThat(stream.holdsCache()).isFalse();
        }
        assertThat(glm.chat("你好", List.of(), greedy(10)).generatedIds()).isEqualTo(before.generatedIds());
    }
}
