package io.github.bigmodel.dispatch;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.FileTime;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.condition.EnabledIf;
import org.junit.jupiter.api.io.TempDir;
import io.github.bigmodel.dispatch.plan.DeviceInventory;
import io.github.bigmodel.dispatch.plan.DeviceMap;
import io.github.bigmodel.dispatch.plan.DeviceMapException;
import io.github.bigmodel.dispatch.plan.DeviceMapPlanner;
import io.github.bigmodel.dispatch.plan.DevicePlan;
import io.github.bigmodel.dispatch.plan.MaxMemory;
import io.github.bigmodel.dispatch.hooks.OffloadStore;
import io.github.bigmodel.dispatch.plan.PlanOptions;
import io.github.bigmodel.dispatch.plan.Strategy;

/** Loading and dispatching the synthetic stack: placements agree bit for bit, folders are reused only when valid. */
class BigModelTest {

    private static final int BLOCKS = 6;
    private static final int HIDDEN = 32;
    /** Blocks 0..2 on cpu, 3..5 on disk. */
    private static final String SPLIT = "{\"layers.0\":\"cpu\",\"layers.1\":\"cpu\",\"layers.2\":\"cpu\","
            + "\"layers.3\":\"disk\",\"layers.4\":\"disk\",\"layers.5\":\"disk\"}";
    private static final DeviceInventory NO_GPU = DeviceInventory.simulated(List.of(), 8L << 30);

    private static Map<String, Tensor> weights;
    private static Map<String, Tensor> otherWeights;

    @TempDir
    Path tmp;

    @BeforeAll
    static void weights() {
        weights = new SyntheticStack(BLOCKS, HIDDEN).randomWeights(42);
        otherWeights = new SyntheticStack(BLOCKS, HIDDEN).randomWeights(43);
    }

    @AfterAll
    static void release() {
        weights.values().forEach(Tensor::close);
        otherWeights.values().forEach(Tensor::close);
    }

    static boolean cudaAvailable() {
        return torch.cuda_is_available();
    }

    private static Tensor input(DType dtype) {
        torch.manual_seed(7);
        try (Tensor x = torch.randn(3, HIDDEN)) {
            return x.to(dtype.scalarType());
        }
    }

    /** The stack's output with {@code w} set directly on the CPU (no dispatch, no hooks). */
    private static Tensor direct(Map<String, Tensor> w, DType dtype) {
        SyntheticStack m = new SyntheticStack(BLOCKS, HIDDEN);
        w.forEach((name, t) -> m.tensor(name).set(t.to(dtype.scalarType()).clone()));
        try (Tensor x = input(dtype)) {
            Tensor y = m.forward(x);
            m.toMeta();
            return y;
        }
    }

    private static DispatchOptions.Builder options() {
        return DispatchOptions.builder().inventory(NO_GPU);
    }

    /** Runs three forwards (generation repeats the stack) and checks each against {@code expected}. */
    private static void assertForwards(DispatchedModel<SyntheticStack> d, Tensor expected, DType dtype, String what) {
        for (int step = 0; step < 3; step++) {
            try (Tensor x = input(dtype); Tensor y = d.model().forward(x)) {
                assertThat(torch.equal(y, expected)).as("%s, step %d", what, step).isTrue();
            }
        }
    }

    @Test
    void cpuAndDiskInPlaceMatchAllCpuForSingleFileAndShardsWithAndWithoutPrefetch() throws IOException {
        Tensor expected = direct(weights, DType.FLOAT32);
        Path single = Checkpoints.singleFile(tmp.resolve("single"), weights);
        Path shards = Checkpoints.sharded(tmp.resolve("shards"), weights, 3);
        for (Path ckpt : List.of(single, shards)) {
            try (DispatchedModel<SyntheticStack> all = BigModel.loadCheckpointAndDispatch(
                    new SyntheticStack(BLOCKS, HIDDEN), ckpt, options().deviceMap("{\"\":\"cpu\"}").build())) {
                assertThat(all.hookCount()).as("one device, nothing offloaded: no hooks").isZero();
                assertForwards(all, expected, DType.FLOAT32, "all on cpu from " + ckpt.getFileName());
            }
            for (int depth : new int[] {0, 1, 2}) {
                try (DispatchedModel<SyntheticStack> d = BigModel.loadCheckpointAndDispatch(
                        new SyntheticStack(BLOCKS, HIDDEN), ckpt, options().deviceMap(SPLIT).prefetch(depth).build())) {
                    assertThat(d.offloadStats().tensorsInPlace()).isEqualTo(12);
                    assertThat(d.offloadStats().tensorsWritten()).isZero();
                    assertThat(d.hookCount()).isEqualTo(BLOCKS);
                    assertThat(d.prefetcher() == null).isEqualTo(depth == 0);
                    assertThat(d.model().tensor("layers.4.up.weight").device()).isEqualTo(Device.DISK);
                    assertThat(d.model().tensor("layers.1.up.weight").device()).isEqualTo(Device.CPU);
                    assertThat(d.executionDevice("layers.4")).isEqualTo(Device.CPU);
                    assertThat(d.executionDevice("layers.4.up.weight")).isEqualTo(Device.CPU);
                    assertForwards(d, expected, DType.FLOAT32, ckpt.getFileName() + " split, prefetch " + depth);
                }
            }
        }
        expected.close();
    }

    @Test
    void dtypeConversionGoesThroughTheOffloadFolderAndMatchesAllCpu() throws IOException {
        Path ckpt = Checkpoints.singleFile(tmp.resolve("ckpt"), weights);
        Tensor expected = direct(weights, DType.FLOAT64);
        for (int depth : new int[] {0, 1}) {
            Path folder = tmp.resolve("offload-" + depth);
            try (DispatchedModel<SyntheticStack> all = BigModel.loadCheckpointAndDispatch(
                    new SyntheticStack(BLOCKS, HIDDEN), ckpt, options().deviceMap("{\"\":\"cpu\"}")
                            .dtype(DType.FLOAT64).build())) {
                assertThat(all.model().tensor("layers.0.up.weight").dtype()).isEqualTo(DType.FLOAT64);
                assertForwards(all, expected, DType.FLOAT64, "all cpu float64");
            }
            try (DispatchedModel<SyntheticStack> d = BigModel.loadCheckpointAndDispatch(
                    new SyntheticStack(BLOCKS, HIDDEN), ckpt, options().deviceMap(SPLIT).dtype(DType.FLOAT64)
                            .offloadFolder(folder).prefetch(depth).build())) {
                assertThat(d.offloadStats().tensorsWritten()).isEqualTo(12);
                assertThat(d.offloadStats().tensorsInPlace()).isZero();
                assertForwards(d, expected, DType.FLOAT64, "split float64, prefetch " + depth);
            }
            assertThat(folder.resolve("layers.3.up.weight.dat")).hasSize(2L * HIDDEN * HIDDEN * 8);
            assertThat(Files.readString(folder.resolve("index.json"))).contains("\"layers.3.up.weight\": {",
                    "\"dtype\": \"float64\"");
            assertThat(folder.resolve(OffloadStore.FINGERPRINT)).exists();
        }
        expected.close();
    }

    @Test
    void halfPrecisionCheckpointIsConvertedToTheDeclaredDtype() throws IOException {
        Map<String, Tensor> half = Checkpoints.as(weights, DType.FLOAT16);
        Path ckpt = Checkpoints.sharded(tmp.resolve("half"), half, 2);
        Tensor expected = direct(half, DType.FLOAT32);
        try (DispatchedModel<SyntheticStack> d = BigModel.loadCheckpointAndDispatch(new SyntheticStack(BLOCKS, HIDDEN),
                ckpt, options().deviceMap(SPLIT).offloadFolder(tmp.resolve("off")).build())) {
            assertThat(d.offloadStats().tensorsWritten()).as("float16 -> float32 forces the folder").isEqualTo(12);
            assertThat(d.model().tensor("layers.0.up.weight").dtype()).isEqualTo(DType.FLOAT32);
            assertForwards(d, expected, DType.FLOAT32, "fp16 checkpoint into fp32 model");
        }
        half.values().forEach(Tensor::close);
        expected.close();
    }

    @Test
    void torchBinCheckpointIsOffloadedThroughTheFolder() throws IOException {
        Path ckpt = Checkpoints.torchBin(tmp.resolve("bin"), weights);
        Tensor expected = direct(weights, DType.FLOAT32);
        for (int depth : new int[] {0, 1}) {
            try (DispatchedModel<SyntheticStack> d = BigModel.loadCheckpointAndDispatch(
                    new SyntheticStack(BLOCKS, HIDDEN), ckpt, options().deviceMap(SPLIT).prefetch(depth)
                            .offloadFolder(tmp.resolve("off")).build())) {
                assertThat(d.offloadStats().tensorsWritten() + d.offloadStats().tensorsReused()).isEqualTo(12);
                assertForwards(d, expected, DType.FLOAT32, ".bin split, prefetch " + depth);
            }
        }
        expected.close();
    }

    @Test
    void hfDeviceMapIsThePlanOfTheStrategy() throws IOException {
        Path ckpt = Checkpoints.singleFile(tmp.resolve("ckpt"), weights);
        MaxMemory budget = MaxMemory.parse("cpu=60000,disk=10GB", NO_GPU);
        DevicePlan plan = DeviceMapPlanner.plan(new SyntheticStack(BLOCKS, HIDDEN), Strategy.SEQUENTIAL, budget,
                PlanOptions.builder().noSplitModuleClasses("Block").inventory(NO_GPU).build());
        assertThat(plan.deviceMap().devices()).containsExactly(Device.CPU, Device.DISK);
        Tensor expected = direct(weights, DType.FLOAT32);
        try (DispatchedModel<SyntheticStack> d = BigModel.loadCheckpointAndDispatch(new SyntheticStack(BLOCKS, HIDDEN),
                ckpt, options().strategy("sequential").maxMemory(budget).noSplitModuleClasses("Block").build())) {
            assertThat(d.hfDeviceMap()).isEqualTo(plan.deviceMap());
            assertThat(d.hfDeviceMap().toJson()).isEqualTo(plan.deviceMap().toJson());
            assertThat(d.plan().deviceMap()).isEqualTo(plan.deviceMap());
            assertForwards(d, expected, DType.FLOAT32, "planned sequential cpu+disk");
        }
        expected.close();
    }

    @Test
    void tensorEntriesAndListEntriesAttachToTheModulesThatRunThem() throws IOException {
        Path ckpt = Checkpoints.singleFile(tmp.resolve("ckpt"), weights);
        Tensor expected = direct(weights, DType.FLOAT32);
        String tensorEntries = "{\"layers.0\":\"cpu\",\"layers.1\":\"cpu\",\"layers.2\":\"cpu\",\"layers.3\":\"cpu\","
                + "\"layers.4\":\"cpu\",\"layers.5.up.weight\":\"disk\",\"layers.5.up.bias\":\"cpu\","
                + "\"layers.5.down\":\"disk\"}";
        try (DispatchedModel<SyntheticStack> d = BigModel.loadCheckpointAndDispatch(new SyntheticStack(BLOCKS, HIDDEN),
                ckpt, options().deviceMap(tensorEntries).build())) {
            assertThat(d.model().module("layers.5.up").forwardHooks()).hasSize(1);
            assertThat(d.model().tensor("layers.5.up.bias").device()).isEqualTo(Device.CPU);
            assertForwards(d, expected, DType.FLOAT32, "tensor entries");
        }
        try (DispatchedModel<SyntheticStack> d = BigModel.loadCheckpointAndDispatch(new SyntheticStack(BLOCKS, HIDDEN),
                ckpt, options().deviceMap("{\"layers\":\"disk\"}").prefetch(2).build())) {
            assertThat(d.model().module("layers").forwardHooks()).isEmpty();
            assertThat(d.model().module("layers.3").forwardHooks()).hasSize(1);
            assertThat(d.prefetcher().stages()).hasSize(BLOCKS);
            assertForwards(d, expected, DType.FLOAT32, "list entry on disk");
        }
        expected.close();
    }

    @Test
    void offloadFolderIsReusedWhenItMatchesAndRewrittenWhenItDoesNot() throws IOException {
        Path ckpt = Checkpoints.singleFile(tmp.resolve("a"), weights);
        Path other = Checkpoints.singleFile(tmp.resolve("b"), otherWeights);
        Path folder = tmp.resolve("offload");
        DispatchOptions opts = options().deviceMap(SPLIT).dtype(DType.FLOAT64).offloadFolder(folder).build();
        Tensor expected = direct(weights, DType.FLOAT64);
        Tensor expectedOther = direct(otherWeights, DType.FLOAT64);

        try (DispatchedModel<SyntheticStack> d = BigModel.loadCheckpointAndDispatch(new SyntheticStack(BLOCKS, HIDDEN),
                ckpt, opts)) {
            assertThat(d.offloadStats().tensorsWritten()).isEqualTo(12);
        }
        Path dat = folder.resolve("layers.4.down.weight.dat");
        FileTime written = Files.getLastModifiedTime(dat);
        Files.setLastModifiedTime(dat, FileTime.fromMillis(written.toMillis() - 60_000));
        FileTime aged = Files.getLastModifiedTime(dat);
        try (DispatchedModel<SyntheticStack> d = BigModel.loadCheckpointAndDispatch(new SyntheticStack(BLOCKS, HIDDEN),
                ckpt, opts)) {
            assertThat(d.offloadStats().tensorsWritten()).as("second load reuses the folder").isZero();
            assertThat(d.offloadStats().tensorsReused()).isEqualTo(12);
            assertForwards(d, expected, DType.FLOAT64, "reused folder");
        }
        assertThat(Files.getLastModifiedTime(dat)).as("nothing rewritten").isEqualTo(aged);

        // Another checkpoint: detected and rewritten, never silently used.
        try (DispatchedModel<SyntheticStack> d = BigModel.loadCheckpointAndDispatch(new SyntheticStack(BLOCKS, HIDDEN),
                other, opts)) {
            assertThat(d.offloadStats().tensorsWritten()).isEqualTo(12);
            assertForwards(d, expectedOther, DType.FLOAT64, "other checkpoint");
        }
        // Another dtype for the same checkpoint: rewritten too.
        Tensor expected32 = direct(weights, DType.FLOAT32);
        try (DispatchedModel<SyntheticStack> d = BigModel.loadCheckpointAndDispatch(new SyntheticStack(BLOCKS, HIDDEN),
                ckpt, options().deviceMap(SPLIT).dtype(DType.FLOAT32).offloadFolder(folder).build())) {
            assertThat(d.offloadStats().tensorsInPlace()).as("float32 needs no conversion: read in place").isEqualTo(12);
            assertForwards(d, expected32, DType.FLOAT32, "float32 in place");
        }
        try (DispatchedModel<SyntheticStack> d = BigModel.loadCheckpointAndDispatch(new SyntheticStack(BLOCKS, HIDDEN),
                ckpt, opts)) {
            assertThat(d.offloadStats().tensorsWritten()).as("folder holds the other checkpoint").isEqualTo(12);
            assertForwards(d, expected, DType.FLOAT64, "back to the first checkpoint");
        }
        // The checkpoint file changes in place (same path, new content): its size/mtime give it away.
        Checkpoints.singleFile(tmp.resolve("a"), otherWeights);
        Files.setLastModifiedTime(ckpt.resolve("model.safetensors"), FileTime.fromMillis(System.currentTimeMillis()
                + 5_000));
        try (DispatchedModel<SyntheticStack> d = BigModel.loadCheckpointAndDispatch(new SyntheticStack(BLOCKS, HIDDEN),
                ckpt, opts)) {
            assertThat(d.offloadStats().tensorsWritten()).isEqualTo(12);
            assertForwards(d, expectedOther, DType.FLOAT64, "checkpoint replaced in place");
        }
        Stream.of(expected, expectedOther, expected32).forEach(Tensor::close);
    }

    @Test
    void halfWrittenOrDamagedFolderIsNeverAccepted() throws IOException {
        Path ckpt = Checkpoints.singleFile(tmp.resolve("a"), weights);
        Path folder = tmp.resolve("offload");
        DispatchOptions opts = options().deviceMap(SPLIT).dtype(DType.FLOAT64).offloadFolder(folder).build();
        Tensor expected = direct(weights, DType.FLOAT64);
        BigModel.loadCheckpointAndDispatch(new SyntheticStack(BLOCKS, HIDDEN), ckpt, opts).close();

        // A crash while writing: fingerprint gone, a temp file left, one .dat truncated.
        Files.delete(folder.resolve(OffloadStore.FINGERPRINT));
        Path temp = folder.resolve(".layers.5.up.weight.dat.12345.tmp");
        Files.write(temp, new byte[100]);
        Files.write(folder.resolve("layers.5.up.weight.dat"), new byte[10]);
        try (DispatchedModel<SyntheticStack> d = BigModel.loadCheckpointAndDispatch(new SyntheticStack(BLOCKS, HIDDEN),
                ckpt, opts)) {
            assertThat(d.offloadStats().tensorsWritten()).isEqualTo(12);
            assertThat(d.offloadStats().tensorsReused()).isZero();
            assertForwards(d, expected, DType.FLOAT64, "after a crash");
        }
        assertThat(temp).doesNotExist();

        // With a fingerprint, a .dat of the wrong size is rewritten alone.
        Files.write(folder.resolve("layers.4.up.bias.dat"), new byte[3]);
        try (DispatchedModel<SyntheticStack> d = BigModel.loadCheckpointAndDispatch(new SyntheticStack(BLOCKS, HIDDEN),
                ckpt, opts)) {
            assertThat(d.offloadStats().tensorsWritten()).isEqualTo(1);
            assertThat(d.offloadStats().tensorsReused()).isEqualTo(11);
            assertForwards(d, expected, DType.FLOAT64, "one damaged file");
        }

        // Files bigmodel never writes there: refused, not deleted.
        Files.writeString(folder.resolve("notes.txt"), "mine");
        assertThatThrownBy(() -> BigModel.loadCheckpointAndDispatch(new SyntheticStack(BLOCKS, HIDDEN), ckpt, opts))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("notes.txt");
        assertThat(folder.resolve("notes.txt")).exists();
        expected.close();
    }

    @Test
    void unwritableOffloadFolderGivesAClearError() throws IOException {
        Path ckpt = Checkpoints.singleFile(tmp.resolve("a"), weights);
        Path unwritable = Path.of("/proc/bigmodel-offload-test");
        assertThatThrownBy(() -> BigModel.loadCheckpointAndDispatch(new SyntheticStack(BLOCKS, HIDDEN), ckpt,
                options().deviceMap(SPLIT).dtype(DType.FLOAT64).offloadFolder(unwritable).build()))
                .isInstanceOf(UncheckedIOException.class)
                .hasMessageContaining(unwritable.toString()).hasMessageContaining("writable");
        Path file = Files.writeString(tmp.resolve("a-file"), "x");
        assertThatThrownBy(() -> BigModel.loadCheckpointAndDispatch(new SyntheticStack(BLOCKS, HIDDEN), ckpt,
                options().deviceMap(SPLIT).dtype(DType.FLOAT64).offloadFolder(file).build()))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("not a directory");
        assertThatThrownBy(() -> BigModel.loadCheckpointAndDispatch(new SyntheticStack(BLOCKS, HIDDEN), ckpt,
                options().deviceMap(SPLIT).dtype(DType.FLOAT64).build()))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("offload folder");
    }

    @Test
    void badBudgetsDevicesAndMapsAreClearErrors() throws IOException {
        Path ckpt = Checkpoints.singleFile(tmp.resolve("a"), weights);
        assertThatThrownBy(() -> options().maxMemory("cpu=10 potatoes"))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("10 potatoes");
        assertThatThrownBy(() -> options().maxMemory("cpu=-5GiB"))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("-5GiB");
        assertThatThrownBy(() -> options().deviceMap("{\"layers\":\"cuda:x\"}"))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("cuda:x")
                .hasMessageContaining("layers");
        assertThatThrownBy(() -> options().prefetch(-1)).isInstanceOf(IllegalArgumentException.class);
        assertThatThrownBy(() -> BigModel.loadCheckpointAndDispatch(new SyntheticStack(BLOCKS, HIDDEN), ckpt,
                options().deviceMap("{\"layers\":0}").build()))
                .isInstanceOf(DeviceMapException.class).hasMessageContaining("cuda:0")
                .hasMessageContaining("0 usable GPUs");
        assertThatThrownBy(() -> BigModel.loadCheckpointAndDispatch(new SyntheticStack(BLOCKS, HIDDEN), ckpt,
                options().deviceMap("{\"layers\":\"cpu\",\"layers.9\":\"cpu\",\"head\":\"cpu\"}").build()))
                .isInstanceOf(DeviceMapException.class).hasMessageContaining("'layers.9', 'head'")
                .hasMessageContaining("do not exist");
        assertThatThrownBy(() -> BigModel.loadCheckpointAndDispatch(new SyntheticStack(BLOCKS, HIDDEN), ckpt,
                options().deviceMap("{\"layers.0\":\"cpu\",\"layers.1\":\"cpu\",\"layers.2\":\"cpu\","
                        + "\"layers.3\":\"cpu\",\"layers.4\":\"cpu\",\"layers.5.up\":\"cpu\"}").build()))
                .isInstanceOf(DeviceMapException.class)
                .hasMessageContaining("does not give any device to 2 parameter(s), in the module(s): layers.5.down")
                .satisfies(e -> assertThat(((DeviceMapException) e).accelerateMessage()).endsWith(
                        "for the following parameters: layers.5.down.weight, layers.5.down.bias"));
        // A checkpoint that lacks a tensor, or has another shape: named, and nothing stays loaded.
        Map<String, Tensor> partial = new LinkedHashMap<>(weights);
        partial.remove("layers.2.down.bias");
        Path lacking = Checkpoints.singleFile(tmp.resolve("lacking"), partial);
        SyntheticStack model = new SyntheticStack(BLOCKS, HIDDEN);
        assertThatThrownBy(() -> BigModel.loadCheckpointAndDispatch(model, lacking,
                options().deviceMap("{\"\":\"cpu\"}").build()))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("layers.2.down.bias");
        assertThat(model.tensor("layers.0.up.weight").device()).isEqualTo(Device.META);
        Path wide = Checkpoints.singleFile(tmp.resolve("wide"), new SyntheticStack(BLOCKS, HIDDEN * 2)
                .randomWeights(1));
        assertThatThrownBy(() -> BigModel.loadCheckpointAndDispatch(new SyntheticStack(BLOCKS, HIDDEN), wide,
                options().deviceMap("{\"\":\"cpu\"}").build()))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("layers.0.up.weight: checkpoint [128, 64]");
    }

    @Test
    void dispatchModelCpuOffloadAndDiskOffloadOfAMaterializedModel() {
        Tensor expected = direct(weights, DType.FLOAT32);
        SyntheticStack m = new SyntheticStack(BLOCKS, HIDDEN);
        weights.forEach((name, t) -> m.tensor(name).set(t.clone()));
        try (DispatchedModel<SyntheticStack> d = BigModel.dispatchModel(m, DeviceMap.fromJson(SPLIT),
                options().offloadFolder(tmp.resolve("off")).build())) {
            assertThat(d.offloadStats().tensorsWritten()).isEqualTo(12);
            assertThat(m.tensor("layers.5.down.weight").device()).isEqualTo(Device.DISK);
            assertForwards(d, expected, DType.FLOAT32, "dispatchModel");
        }
        assertThat(m.module("layers.3").forwardHooks()).as("close removes hooks").isEmpty();
        assertThat(m.tensor("layers.0.up.weight").device()).as("close releases weights").isEqualTo(Device.META);

        SyntheticStack m2 = new SyntheticStack(BLOCKS, HIDDEN);
        weights.forEach((name, t) -> m2.tensor(name).set(t.clone()));
        try (DispatchedModel<SyntheticStack> d = BigModel.diskOffload(m2, tmp.resolve("disk"), Device.CPU)) {
            assertThat(d.model().module("layers.2.up").forwardHooks()).hasSize(1);
            assertThat(d.prefetcher().stages()).hasSize(2 * BLOCKS);
            assertForwards(d, expected, DType.FLOAT32, "diskOffload");
        }
        SyntheticStack m3 = new SyntheticStack(BLOCKS, HIDDEN);
        weights.forEach((name, t) -> m3.tensor(name).set(t.clone()));
        try (DispatchedModel<SyntheticStack> d = BigModel.cpuOffload(m3, Device.CPU)) {
            assertThat(d.executionDevice("layers.1")).isEqualTo(Device.CPU);
            assertForwards(d, expected, DType.FLOAT32, "cpuOffload on cpu");
        }
        SyntheticStack meta = new SyntheticStack(BLOCKS, HIDDEN);
        assertThatThrownBy(() -> BigModel.dispatchModel(meta, DeviceMap.fromJson(SPLIT), options().build()))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("layers.0.up.weight");
        expected.close();
    }

    @Test
    void progressReportsEveryTensorOnce() throws IOException {
        Path ckpt = Checkpoints.sharded(tmp.resolve("s"), weights, 2);
        Map<String, Device> seen = new LinkedHashMap<>();
        try (DispatchedModel<SyntheticStack> d = BigModel.loadCheckpointAndDispatch(new SyntheticStack(BLOCKS, HIDDEN),
                ckpt, options().deviceMap(SPLIT).progress((n, where, done, total) -> {
                    assertThat(total).isEqualTo(4 * BLOCKS);
                    assertThat(seen.put(n, where)).isNull();
                    assertThat(done).isEqualTo(seen.size());
                }).build())) {
            assertThat(seen).hasSize(4 * BLOCKS).containsEntry("layers.0.up.bias", Device.CPU)
                    .containsEntry("layers.5.down.weight", Device.DISK);
        }
    }

    @Test
    @EnabledIf("cudaAvailable")
    void gpuPlacementRunsCpuAndDiskModulesOnTheFirstGpu() throws IOException {
        Path ckpt = Checkpoints.singleFile(tmp.resolve("a"), weights);
        Tensor expected = direct(weights, DType.FLOAT32);
        String map = "{\"layers.0\":0,\"layers.1\":0,\"layers.2\":\"cpu\",\"layers.3\":\"cpu\","
                + "\"layers.4\":\"disk\",\"layers.5\":\"disk\"}";
        for (int depth : new int[] {0, 1}) {
            try (DispatchedModel<SyntheticStack> d = BigModel.loadCheckpointAndDispatch(
                    new SyntheticStack(BLOCKS, HIDDEN), ckpt, DispatchOptions.builder().deviceMap(map).prefetch(depth)
                            .build())) {
                assertThat(d.mainDevice()).isEqualTo(Device.cuda(0));
                assertThat(d.executionDevice("layers.3")).isEqualTo(Device.cuda(0));
                assertThat(d.executionDevice("layers.5")).isEqualTo(Device.cuda(0));
                assertThat(d.model().tensor("layers.0.up.weight").device()).isEqualTo(Device.cuda(0));
                assertThat(d.model().tensor("layers.2.up.weight").device()).isEqualTo(Device.DISK);
                for (int step = 0; step < 2; step++) {
                    try (Tensor x = input(DType.FLOAT32); Tensor y = d.model().forward(x);
                            Tensor cpu = y.cpu()) {
                        assertThat(Tensors4Test.maxAbsDiff(cpu, expected)).isLessThan(1e-4);
                    }
                }
            }
        }
        expected.close();
    }

    /** Tiny numeric helper for the GPU test, whose matmuls may round differently from the CPU's. */
    static final class Tensors4Test {
        static double maxAbsDiff(Tensor a, Tensor b) {
            try (Tensor d = a.sub(b); Tensor abs = d.abs(); Tensor m = abs.max()) {
                return m.item_double();
            }
        }
    }
}
