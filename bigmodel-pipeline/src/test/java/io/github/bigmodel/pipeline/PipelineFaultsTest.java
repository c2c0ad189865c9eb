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
    Path tmp;

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
        int layers = whole.config().numLayers();
        Path map = PipelineTestSupport.hostMap(folder(), PipelineProcessesTest.spans(layers, 2), tmp);
        int port = Workers.freePort();
        GenerationRequest request = request(whole);
        try (Workers workers = new Workers(tmp)) {
            Process worker = workers.start(port, 1, 2, folder(), map, 120, STEP.toSecondsPart());
            PipelineCoordinator.Options o = PipelineCoordinator.Options.of("127.0.0.1", port)
                    .withTimeouts(Duration.ofSeconds(120), STEP);
            try (PipelineCoordinator c = PipelineCoordinator.start(folder(), DeviceMap.fromJson(Files.readString(map)),
                    o); DispatchedModel<ChatGLMLanguageModel> first = c.loadModel(DispatchOptions.builder().build())) {
                PipelineProcessesTest.assertSameGeneration(whole, first.model(), request, "before any fault");

                // Killed: the next request fails as a whole, quickly.
                worker.destroyForcibly();
                assertThat(worker.waitFor(10, TimeUnit.SECONDS)).isTrue();
                assertUnavailableInTime(() -> new Generator(first.model()).generate(request));

                // Back: a new worker process; the next request forms the group again and is answered right.
                Process second = workers.start(port, 1, 2, folder(), map, 120, STEP.toSecondsPart());
                PipelineProcessesTest.assertSameGeneration(whole, first.model(), request, "after a restart");

                // Hung (stopped, its sockets open): the request fails within the step timeout.
                Workers.signal(second, "STOP");
                assertUnavailableInTime(() -> new Generator(first.model()).generate(request));
                // Continued: it finds its group gone and joins the next generation.
                Workers.signal(second, "CONT");
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
        Path other = ReferenceTree.models().resolve("chatglm3-6b-tiny-bf16");
        int layers = PipelineTestSupport.wholeModel(folder()).config().numLayers();
        Path map = PipelineTestSupport.hostMap(folder(), PipelineProcessesTest.spans(layers, 2), tmp);
        int[] ports = {Workers.freePort(), Workers.freePort(), Workers.freePort()};
        try (Workers workers = new Workers(tmp)) {
            // All three start at once (their JVMs load in parallel); each meets a coordinator of its own.
            Process checkpoint = workers.start(ports[0], 1, 2, other, map, 120, 10);
            Process world = workers.start(ports[1], 1, 3, folder(), map, 120, 10);
            Process version = workers.start(ports[2], 1, 2, folder(), map, 120, 10,
                    "-Dbigmodel.pipeline.version=protocol-1/0.0.0-other");
            String[] reasons = {"different checkpoint", "world size 3", "version protocol-1/0.0.0-other"};
            Process[] processes = {checkpoint, world, version};
            for (int i = 0; i < 3; i++) {
                PipelineCoordinator.Options o = PipelineCoordinator.Options.of("127.0.0.1", ports[i])
                        .withTimeouts(Duration.ofSeconds(120), STEP);
                String reason = reasons[i];
                assertThatThrownBy(() -> PipelineCoordinator.start(folder(), DeviceMap.fromJson(Files.readString(map)),
                        o)).isInstanceOfSatisfying(PipelineException.class,
                                e -> assertThat(e.kind()).isEqualTo(PipelineException.Kind.REFUSED))
                        .hasMessageContaining("rank 1 refused").hasMessageContaining(reason);
                assertThat(processes[i].waitFor(30, TimeUnit.SECONDS)).isTrue();
                assertThat(processes[i].exitValue()).as(workers.log(i)).isEqualTo(WorkerProcess.REFUSED);
                assertThat(workers.log(i)).contains("refused").contains(reason);
            }
        }
    }
}
