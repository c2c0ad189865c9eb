package io.github.bigmodel.pipeline;

import static org.assertj.core.api.Assertions.assertThat;

import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.core.testing.ReferenceTree;
import io.github.bigmodel.dispatch.DispatchOptions;
import io.github.bigmodel.dispatch.DispatchedModel;
import io.github.bigmodel.dispatch.plan.DeviceMap;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Two "hosts": this JVM (the coordinator) in the root network namespace and a worker in a namespace of its own,
 * joined by a veth pair the test makes and removes; the hidden states really cross an interface (its byte counters
 * grow), and the answer is still bit-identical. Skipped where {@code ip netns add} is not permitted.
 */
class PipelineNetnsTest {

    @TempDir
    Path tmp;

    @Test
    void aWorkerInAnotherNetworkNamespace() throws Exception {
        String id = Integer.toHexString(ThreadLocalRandom.current().nextInt(0x100000, 0xffffff));
        String ns = "bmns" + id;
        String outside = "bma" + id;
        String inside = "bmb" + id;
        int subnet = ThreadLocalRandom.current().nextInt(1, 250);
        String coordinatorAddress = "10.213." + subnet + ".1";
        String workerAddress = "10.213." + subnet + ".2";
        Assumptions.assumeTrue(sh("ip", "netns", "add", ns), "ip netns add is not permitted here");
        try {
            assertThat(sh("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)).isTrue();
            assertThat(sh("ip", "link", "set", inside, "netns", ns)).isTrue();
            assertThat(sh("ip", "addr", "add", coordinatorAddress + "/30", "dev", outside)).isTrue();
            assertThat(sh("ip", "link", "set", outside, "up")).isTrue();
            assertThat(sh("ip", "netns", "exec", ns, "ip", "addr", "add", workerAddress + "/30", "dev", inside))
                    .isTrue();
            assertThat(sh("ip", "netns", "exec", ns, "ip", "link", "set", inside, "up")).isTrue();
            assertThat(sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")).isTrue();
            run(ns, outside, coordinatorAddress, workerAddress);
        } finally {
            sh("ip", "netns", "del", ns);
            sh("ip", "link", "del", outside);
        }
    }

    private void run(String ns, String outside, String coordinatorAddress, String workerAddress) throws Exception {
        Path folder = ReferenceTree.models().resolve("chatglm3-6b-tiny");
        ChatGLMLanguageModel whole = PipelineTestSupport.wholeModel(folder);
        Path map = PipelineTestSupport.hostMap(folder,
                PipelineProcessesTest.spans(whole.config().numLayers(), 2), tmp);
        int port = Workers.freePort();
        try (Workers workers = new Workers(tmp, List.of("ip", "netns", "exec", ns), coordinatorAddress,
                workerAddress)) {
            Process worker = workers.start(port, 1, 2, folder, map, 120, 60);
            PipelineCoordinator.Options o = PipelineCoordinator.Options.of(coordinatorAddress, port)
                    .withTimeouts(Duration.ofSeconds(120), Duration.ofSeconds(60));
            long before = counter(outside, "rx_bytes") + counter(outside, "tx_bytes");
            try (PipelineCoordinator c = PipelineCoordinator.start(folder, DeviceMap.fromJson(Files.readString(map)),
                    o); DispatchedModel<ChatGLMLanguageModel> first = c.loadModel(DispatchOptions.builder().build())) {
                PipelineProcessesTest.compare(folder, whole, first.model());
                long crossed = counter(outside, "rx_bytes") + counter(outside, "tx_bytes") - before;
                // At least every prompt's hidden state went out and its logits came back over the veth pair.
                long hiddenBytes = 4L * whole.config().hiddenSize();
                assertThat(crossed).as("bytes through " + outside).isGreaterThan(hiddenBytes * 16);
                c.shutdownWorkers();
                assertThat(worker.waitFor(30, TimeUnit.SECONDS)).isTrue();
                assertThat(worker.exitValue()).as(workers.allLogs()).isZero();
            } catch (RuntimeException | AssertionError e) {
                throw new AssertionError(e.getMessage() + "\nworker logs:\n" + workers.allLogs(), e);
            }
        } finally {
            whole.toMeta();
        }
    }

    private static long counter(String dev, String name) throws IOException {
        return Long.parseLong(Files.readString(Path.of("/sys/class/net", dev, "statistics", name)).trim());
    }

    /** Runs a command (bounded); true when it exits 0. */
    private static boolean sh(String... cmd) throws IOException, InterruptedException {
        Process p = new ProcessBuilder(new ArrayList<>(List.of(cmd))).redirectErrorStream(true)
                .redirectOutput(ProcessBuilder.Redirect.DISCARD).start();
        if (!p.waitFor(20, TimeUnit.SECONDS)) {
            p.destroyForcibly();
            return false;
        }
        return p.exitValue() == 0;
    }
}
