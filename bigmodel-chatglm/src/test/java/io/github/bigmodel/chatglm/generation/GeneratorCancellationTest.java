package io.github.bigmodel.chatglm.generation;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.testing.ReferenceTree;
import io.github.bigmodel.safetensors.Checkpoint;
import java.nio.file.Path;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import org.bytedeco.javacpp.PointerScope;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.chatglm.model.KvCache;
import io.github.bigmodel.chatglm.ChatGLMConfig;

/**
 * Closing a generation session mid-way, on the stepping thread and from another thread: no step runs after close
 * returns (at most the one already running when it was called), the session's own {@link KvCache} object holds 0
 * bytes afterwards, and the model right after gives the official greedy ids of the reference fixture.
 */
class GeneratorCancellationTest {

    private static final Path FOLDER = ReferenceTree.models().resolve("chatglm3-6b-tiny");
    private static ChatGLMLanguageModel model;
    private static long[] prompt;
    private static long[] officialNew;

    @BeforeAll
    static void load() throws Exception {
        model = ChatGLMLanguageModel.create(ChatGLMConfig.fromJson(FOLDER.resolve("config.json")), DType.FLOAT32);
        try (Checkpoint checkpoint = Checkpoint.open(FOLDER.resolve("model.safetensors"))) {
            model.loadWeights(checkpoint::load, Device.CPU, DType.FLOAT32);
        }
        for (JsonNode c : new ObjectMapper().readTree(FOLDER.resolve("expected.json").toFile()).get("cases")) {
            if (c.get("name").asText().equals("greedy/prompt_short")) {
                prompt = longs(c.get("prompt_ids"));
                officialNew = longs(c.get("new_ids"));
            }
        }
        assertThat(prompt).isNotNull();
    }

    @AfterAll
    static void unload() {
        model.toMeta();
    }

    /** Counts forward steps: the generator runs each processor once per step. */
    private static GenerationRequest longRequest(AtomicInteger steps) {
        return GenerationRequest.builder(new long[][] {prompt}).maxNewTokens(100).stopAtEos(false)
                .processor((rows, scores) -> {
                    steps.incrementAndGet();
                    return scores;
                }).build();
    }

    private static void assertModelStillAnswers() {
        try (PointerScope scope = new PointerScope()) {
            GenerationResult r = new Generator(model).generate(GenerationRequest.builder(new long[][] {prompt})
                    .maxNewTokens(officialNew.length).stopAtEos(false).build());
            assertThat(r.newIds()[0]).containsExactly(officialNew);
        }
    }

    @Test
    void closeOnTheSteppingThreadStopsAtOnceAndFreesTheCache() {
        AtomicInteger steps = new AtomicInteger();
        Generator.Session session = new Generator(model).start(longRequest(steps));
        KvCache cache = session.cache();
        long expectedBytes = model.config().numLayers()
                * model.config().kvCacheBytesPerLayer(prompt.length + 100, 1, DType.FLOAT32);
        try (PointerScope scope = new PointerScope()) {
            for (int i = 0; i < 5; i++) {
                session.step();
            }
        }
        assertThat(steps.get()).isEqualTo(5);
        assertThat(expectedBytes).isPositive();
        assertThat(cache.allocatedBytes()).isEqualTo(expectedBytes).isEqualTo(session.cacheBytes());
        session.close();
        assertThat(cache.allocatedBytes()).isZero();
        assertThat(session.cacheBytes()).isZero();
        assertThat(session.holdsCache()).isFalse();
        assertThat(session.isFinished()).isTrue();
        assertThatThrownBy(session::step).isInstanceOf(IllegalStateException.class).hasMessageContaining("closed");
        assertThat(steps.get()).as("no step after close").isEqualTo(5);
        session.close(); // idempotent
        assertModelStillAnswers();
    }

    @Test
    void closeFromAnotherThreadStopsWithinOneStep() throws Exception {
        for (int round = 0; round < 5; round++) {
            int closeAt = 3 + round * 4;
            AtomicInteger steps = new AtomicInteger();
            CountDownLatch inStep = new CountDownLatch(1);
            CountDownLatch release = new CountDownLatch(1);
            // Step closeAt parks inside its own computation, so close() is requested while exactly that step runs.
            GenerationRequest request = GenerationRequest.builder(new long[][] {prompt}).maxNewTokens(100)
                    .stopAtEos(false).processor((rows, scores) -> {
                        if (steps.incrementAndGet() == closeAt) {
                            inStep.countDown();
                            awaitQuietly(release);
                        }
                        return scores;
                    }).build();
            Generator.Session session = new Generator(model).start(request);
            KvCache cache = session.cache();
            AtomicReference<Throwable> failure = new AtomicReference<>();
            Thread stepper = new Thread(() -> {
                try (PointerScope scope = new PointerScope()) {
                    while (!session.isFinished()) {
                        session.step();
                    }
                } catch (IllegalStateException e) {
                    // step() on a session closed between isFinished() and step(): the expected way out.
                } catch (Throwable t) {
                    failure.set(t);
                }
            });
            stepper.start();
            assertThat(inStep.await(30, TimeUnit.SECONDS)).as("step %d reached", closeAt).isTrue();
            Thread closer = new Thread(session::close);
            closer.start();
            // Let close() reach its wait for the running step (or return), then let that step finish.
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
            while (closer.isAlive() && closer.getState() == Thread.State.RUNNABLE && System.nanoTime() < deadline) {
                Thread.onSpinWait();
            }
            release.countDown();
            closer.join(TimeUnit.SECONDS.toMillis(30));
            stepper.join(TimeUnit.SECONDS.toMillis(30));
            assertThat(closer.isAlive()).as("close returned").isFalse();
            assertThat(stepper.isAlive()).as("stepper stopped").isFalse();
            assertThat(failure.get()).isNull();
            assertThat(steps.get()).as("no step after the one running when close was called").isEqualTo(closeAt);
            assertThat(cache.allocatedBytes()).isZero();
            assertThat(session.cacheBytes()).isZero();
        }
        assertModelStillAnswers();
    }

    private static void awaitQuietly(CountDownLatch latch) {
        try {
            latch.await(30, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    private static long[] longs(JsonNode array) {
        long[] out = new long[array.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = array.get(i).asLong();
        }
        return out;
    }
}
