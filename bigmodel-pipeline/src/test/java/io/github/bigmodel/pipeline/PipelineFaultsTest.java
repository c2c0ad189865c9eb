package io.github.bigmodel.pipeline;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.github.bigmodel.chatglm.generation.GenerationRequest;
import io.github.bigmodel.chatglm.generation.Generator;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.core.testing.ReferenceTree;
import io.github.bigmodel.dispatch.DispatchOptions;
import io.github.bigmodel.dispatch.DispatchedModel;
import io.github.bigmodel.dispatch.plan.DeviceMap;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Faults on loopback with separate worker JVMs: a killed worker and a hung worker fail the request under way with
 * {@link PipelineException.Kind#UNAVAILABLE} within the step timeout (no hang, no half answer) and the coordinator
 * serves again, bit-identical, once the worker is back (a new generation of the group); a worker with another
 * checkpoint, world size or version is refused at join with a message on both sides.
 */
class PipelineFaultsTest {

    private static final Duration STEP = Duration.ofSeconds(4);

    @TempDir
    static Path tmp;

    /** Every worker of this class, started at once so that their JVMs load side by side. */
    private static Workers workers;
    private static Path map;
    private static int layers;
    private static final int[] PORTS = new int[4];
    private static final Process[] STARTED = new Process[4];

    @org.junit.jupiter.api.BeforeAll
    static void startWorkers() throws Exception {
        layers = io.github.bigmodel.chatglm.ChatGLMConfig.fromJson(folder().resolve("config.json")).numLayers();
        map = PipelineTestSupport.hostMap(folder(), PipelineProcessesTest.spans(layers, 2), tmp);
        workers = new Workers(tmp);
        for (int i = 0; i < PORTS.length; i++) {
            PORTS[i] = Workers.freePort();
        }
        // 0: the one killed and stopped; 1: another checkpoint; 2: another world size; 3: another version.
        STARTED[0] = workers.start(PORTS[0], 1, 2, folder(), map, 120, (int) STEP.toSeconds());
        STARTED[1] = workers.start(PORTS[1], 1, 2, ReferenceTree.models().resolve("chatglm3-6b-tiny-bf16"), map,
                120, 10);
        STARTED[2] = workers.start(PORTS[2], 1, 3, folder(), map, 120, 10);
        STARTED[3] = workers.start(PORTS[3], 1, 2, folder(), map, 120, 10,
                "-Dbigmodel.pipeline.version=protocol-1/0.0.0-other");
    }

    @org.junit.jupiter.api.AfterAll
    static void stopWorkers() throws Exception {
        workers.close();
    }

    private static Path folder() {
        return ReferenceTree.models().resolve("chatglm3-6b-tiny");
    }

    private static GenerationRequest request(ChatGLMLanguageModel whole) {
        // A prompt of text ids from the config's vocabulary: the fact comes from the tree's own config.
        long[] prompt = new long[6];
        for (int i = 0; i < prompt.length; i++) {
            prompt[i] = 3 + i * 7L % (whole.config().vocabSize() - 3);
        }
        return GenerationRequest.builder(new long[][] {prompt}).maxNewTokens(6).stopAtEos(false)
                .keepStepScores(true).build();
    }

    @Test
    void aKilledAndAHungWorkerFailTheRequestInTimeAndTheGroupFormsAgain() throws Exception {
        ChatGLMLanguageModel whole = PipelineTestSupport.wholeModel(folder());
        GenerationRequest request = request(whole);
        int port = PORTS[0];
        Process worker = STARTED[0];
        try {
            PipelineCoordinator.Options o = PipelineCoordinator.Options.of("127.0.0.1", port)
                    .withTimeouts(Duration.ofSeconds(120), STEP);
            try (PipelineCoordinator c = PipelineCoordinator.start(folder(), DeviceMap.fromJson(Files.readString(map)),
                    o); DispatchedModel<ChatGLMLanguageModel> first = c.loadModel(DispatchOptions.builder().build())) {
                PipelineProcessesTest.assertSameGeneration(whole, first.model(), request, "before any fault");

                // Killed: the request under way fails as a whole, quickly; so does the next one while the worker
                // is still away (it tries to form the group again for at most a step's time).
                worker.destroyForcibly();
                assertThat(worker.waitFor(10, TimeUnit.SECONDS)).isTrue();
                assertUnavailableInTime(() -> new Generator(first.model()).generate(request));
                assertUnavailableInTime(() -> new Generator(first.model()).generate(request));

                // Back: a new worker process; the coordinator forms the group again and answers right.
                Process second = workers.start(port, 1, 2, folder(), map, 120, (int) STEP.toSeconds());
                c.reform();
                PipelineProcessesTest.assertSameGeneration(whole, first.model(), request, "after a restart");

                // Hung (stopped, its sockets open): the request fails within the step timeout.
                Workers.signal(second, "STOP");
                assertUnavailableInTime(() -> new Generator(first.model()).generate(request));
                // Continued: the next group's forming closes the old one, and the worker joins the new generation.
                Workers.signal(second, "CONT");
                c.reform();
                PipelineProcessesTest.assertSameGeneration(whole, first.model(), request, "after a hang");

                c.shutdownWorkers();
                assertThat(second.waitFor(30, TimeUnit.SECONDS)).isTrue();
                assertThat(second.exitValue()).as(workers.allLogs()).isZero();
            } catch (RuntimeException | AssertionError e) {
                throw new AssertionError(e.getMessage() + "\nworker logs:\n" + workers.allLogs(), e);
            }
        } finally {
            whole.toMeta();
        }
    }

    private static void assertUnavailableInTime(Runnable request) {
        long start = System.nanoTime();
        assertThatThrownBy(request::run).isInstanceOfSatisfying(PipelineException.class,
                e -> assertThat(e.kind()).isEqualTo(PipelineException.Kind.UNAVAILABLE))
                .hasMessageContaining("unavailable");
        long ms = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - start);
        // One step timeout, plus the send that may notice first; never the join timeout.
        assertThat(ms).as("ms until the request failed").isLessThan(STEP.toMillis() * 2 + 5_000);
    }

    @Test
    void anotherCheckpointWorldSizeOrVersionIsRefusedAtJoin() throws Exception {
        String[] reasons = {"different checkpoint", "world size 3", "version protocol-1/0.0.0-other"};
        for (int i = 1; i <= 3; i++) {
            PipelineCoordinator.Options o = PipelineCoordinator.Options.of("127.0.0.1", PORTS[i])
                    .withTimeouts(Duration.ofSeconds(120), STEP);
            String reason = reasons[i - 1];
            assertThatThrownBy(() -> PipelineCoordinator.start(folder(), DeviceMap.fromJson(Files.readString(map)), o))
                    .isInstanceOfSatisfying(PipelineException.class,
                            e -> assertThat(e.kind()).isEqualTo(PipelineException.Kind.REFUSED))
                    .hasMessageContaining("rank 1 refused").hasMessageContaining(reason);
            assertThat(STARTED[i].waitFor(30, TimeUnit.SECONDS)).isTrue();
            assertThat(STARTED[i].exitValue()).as(workers.log(i)).isEqualTo(WorkerProcess.REFUSED);
            assertThat(workers.log(i)).contains("refused").contains(reason);
        }
    }
}
