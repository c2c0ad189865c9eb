package io.github.bigmodel.chatglm;

import static org.assertj.core.api.Assertions.assertThat;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.Parameter;
import io.github.bigmodel.core.testing.ReferenceTree;
import io.github.bigmodel.dispatch.BigModel;
import io.github.bigmodel.dispatch.plan.DeviceInventory;
import io.github.bigmodel.dispatch.DispatchOptions;
import io.github.bigmodel.dispatch.DispatchedModel;
import io.github.bigmodel.safetensors.Checkpoint;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestFactory;
import org.junit.jupiter.api.io.TempDir;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.chatglm.model.ChatGLMMemoryReport;
import io.github.bigmodel.chatglm.generation.GenerationRequest;
import io.github.bigmodel.chatglm.generation.Generator;
import io.github.bigmodel.chatglm.model.KvCache;
import io.github.bigmodel.chatglm.model.StepWorkspace;

/** {@link ChatGLMLanguageModel#memoryReport()}: weights, live sessions' caches, workspace, per device. */
class ChatGLMMemoryReportTest {

    private static final Path TINY3 = ReferenceTree.models().resolve("chatglm3-6b-tiny");

    private static ChatGLMLanguageModel loadOnCpu(Path folder) {
        ChatGLMLanguageModel m = ChatGLMLanguageModel.create(ChatGLMConfig.fromJson(folder.resolve("config.json")),
                DType.FLOAT32);
        try (Checkpoint st = Checkpoint.open(folder)) {
            m.loadWeights(st::load, Device.CPU, DType.FLOAT32);
        }
        return m;
    }

    /** Every tensor of the model once, by its own byte count. */
    private static long tensorBytes(ChatGLMLanguageModel m) {
        Set<Parameter> seen = Collections.newSetFromMap(new IdentityHashMap<>());
        long total = 0;
        List<Parameter> all = new ArrayList<>(m.namedParameters().values());
        all.addAll(m.namedBuffers().values());
        for (Parameter p : all) {
            if (p.isMaterialized() && seen.add(p)) {
                total += p.data().nbytes();
            }
        }
        return total;
    }

    private static long kvFormula(ChatGLMConfig c, long capacity, long batch) {
        return c.kvCacheBytesPerLayer(capacity, batch, DType.FLOAT32) * c.numLayers();
    }

    @TestFactory
    Stream<DynamicTest> tinyReferenceModelsOnTheCpu() throws IOException {
        List<Path> folders;
        try (Stream<Path> s = Files.list(ReferenceTree.models())) {
            folders = s.filter(p -> Files.isRegularFile(p.resolve("config.json"))).sorted()
                    .collect(Collectors.toList());
        }
        assertThat(folders).isNotEmpty();
        return folders.stream().map(f -> DynamicTest.dynamicTest(f.getFileName().toString(), () -> checkOnCpu(f)));
    }

    private static void checkOnCpu(Path folder) {
        ChatGLMLanguageModel m = loadOnCpu(folder);
        try {
            ChatGLMConfig c = m.config();
            ChatGLMMemoryReport empty = m.memoryReport();
            assertThat(empty.rows()).hasSize(1);
            assertThat(empty.row(Device.CPU).weightBytes()).isEqualTo(tensorBytes(m)).isPositive();
            assertThat(empty.sessions()).isEmpty();
            assertThat(empty.row(Device.CPU).workspaceBytes()).isZero();

            KvCache a = m.newCache(1, 50);
            KvCache b = m.newCache(2, c.maxPositions());
            ChatGLMMemoryReport two = m.memoryReport();
            assertThat(two.sessions()).extracting(ChatGLMMemoryReport.Session::id).containsExactly(a.id(), b.id());
            assertThat(two.sessions().get(0).kvBytes()).isEqualTo(kvFormula(c, 50, 1)).isEqualTo(a.allocatedBytes());
            assertThat(two.sessions().get(1).kvBytes()).isEqualTo(kvFormula(c, c.maxPositions(), 2));
            ChatGLMMemoryReport.DeviceRow cpu = two.row(Device.CPU);
            assertThat(cpu.kvBytesBySession()).containsExactly(Map.entry(a.id(), kvFormula(c, 50, 1)),
                    Map.entry(b.id(), kvFormula(c, c.maxPositions(), 2)));
            assertThat(cpu.workspaceBytes()).isEqualTo(
                    StepWorkspace.bytes(c, DType.FLOAT32, 1, 1, 50, c.numLayers())
                            + StepWorkspace.bytes(c, DType.FLOAT32, 2, 1, c.maxPositions(), c.numLayers()));
            assertThat(cpu.totalBytes()).isEqualTo(cpu.weightBytes() + cpu.kvBytes() + cpu.workspaceBytes());
            assertThat(two.toString()).contains("#" + a.id()).contains("#" + b.id()).contains("weights")
                    .contains("process: resident");

            a.close();
            ChatGLMMemoryReport one = m.memoryReport();
            assertThat(one.sessions()).extracting(ChatGLMMemoryReport.Session::id).containsExactly(b.id());
            assertThat(one.row(Device.CPU).kvBytesBySession()).containsOnlyKeys(b.id());
            b.close();
            assertThat(m.memoryReport().sessions()).isEmpty();
        } finally {
            m.toMeta();
        }
        assertThat(m.memoryReport().rows()).isEmpty();
    }

    @Test
    void dispatchedModelWithABlockOnDiskHasADiskRow(@TempDir Path tmp) {
        ChatGLMConfig config = ChatGLMConfig.fromJson(TINY3.resolve("config.json"));
        ChatGLMLanguageModel model = ChatGLMLanguageModel.create(config, DType.FLOAT32);
        long layer1 = 0;
        long all = 0;
        for (Map.Entry<String, Parameter> e : model.stateDict().entrySet()) {
            all += e.getValue().byteSize();
            if (e.getKey().startsWith("transformer.encoder.layers.1.")) {
                layer1 += e.getValue().byteSize();
            }
        }
        DispatchOptions options = DispatchOptions.builder()
                .deviceMap("{\"\":\"cpu\",\"transformer.encoder.layers.1\":\"disk\"}")
                .inventory(DeviceInventory.simulated(List.of(), 8L << 30))
                .offloadFolder(tmp.resolve("offload")).dtype(DType.FLOAT32).build();
        try (DispatchedModel<ChatGLMLanguageModel> d = BigModel.loadCheckpointAndDispatch(model, TINY3, options);
                KvCache cache = model.newCache(1, 16)) {
            ChatGLMMemoryReport r = model.memoryReport(d);
            assertThat(r.row(Device.DISK).weightBytes()).isEqualTo(layer1).isPositive();
            assertThat(r.row(Device.CPU).weightBytes()).isEqualTo(all - layer1);
            assertThat(r.rows()).extracting(ChatGLMMemoryReport.DeviceRow::device)
                    .containsExactly(Device.CPU, Device.DISK);
            // Layers execute on the CPU, so the cache and the workspace are there, not on disk.
            assertThat(r.row(Device.CPU).kvBytes()).isEqualTo(kvFormula(config, 16, 1));
            assertThat(r.row(Device.DISK).kvBytes()).isZero();
            assertThat(r.row(Device.DISK).workspaceBytes()).isZero();
            assertThat(r.toString()).contains("disk");
        }
    }

    @Test
    void reportsWhileAnotherThreadGenerates() throws Exception {
        ChatGLMLanguageModel m = loadOnCpu(TINY3);
        ChatGLMConfig c = m.config();
        long weights = m.memoryReport().row(Device.CPU).weightBytes();
        Generator generator = new Generator(m);
        AtomicBoolean done = new AtomicBoolean();
        ConcurrentLinkedQueue<Throwable> failures = new ConcurrentLinkedQueue<>();
        int prompt = 5;
        int maxNew = 40;
        Thread worker = new Thread(() -> {
            try {
                for (int round = 0; round < 4; round++) {
                    GenerationRequest request = GenerationRequest.builder(new long[][] {{1, 5, 9, 13, 17}})
                            .maxNewTokens(maxNew).build();
                    try (Generator.Session s = generator.start(request)) {
                        while (!s.isFinished()) {
                            s.step();
                        }
                    }
                }
            } catch (Throwable t) {
                failures.add(t);
            } finally {
                done.set(true);
            }
        });
        worker.start();
        int reports = 0;
        int withSession = 0;
        try {
            while (!done.get()) {
                ChatGLMMemoryReport r = m.memoryReport();
                reports++;
                assertThat(r.row(Device.CPU).weightBytes()).isEqualTo(weights);
                assertThat(r.sessions()).hasSizeLessThanOrEqualTo(1);
                for (ChatGLMMemoryReport.Session s : r.sessions()) {
                    withSession++;
                    assertThat(s.kvBytes()).isEqualTo(kvFormula(c, prompt + maxNew, 1));
                    assertThat(s.length()).isBetween(0L, (long) prompt + maxNew);
                }
                r.toString();
            }
        } finally {
            worker.join();
            m.toMeta();
        }
        assertThat(failures).isEmpty();
        assertThat(reports).isPositive();
        assertThat(withSession).as("some reports saw the running session").isPositive();
        assertThat(m.memoryReport().sessions()).isEmpty();
    }
}
