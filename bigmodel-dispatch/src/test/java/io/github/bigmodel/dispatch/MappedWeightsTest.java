package io.github.bigmodel.dispatch;

import static org.assertj.core.api.Assertions.assertThat;

import io.github.bigmodel.core.testing.ProcMaps;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.Parameter;
import io.github.bigmodel.dispatch.plan.DeviceInventory;
import io.github.bigmodel.dispatch.plan.DeviceMap;
import io.github.bigmodel.safetensors.SafetensorsWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * CPU weights that need no conversion are mapped views of the checkpoint by default: the file stays mapped while the
 * model holds them, with the stored values, and closing the model unmaps it; {@code offloadStateDict(false)} copies
 * them (nothing stays mapped once loading ends), and a dtype conversion always copies. A map that also streams
 * weights from disk copies its CPU weights: the page cache that streams the disk blocks would evict them.
 */
// PointerScope blocks are used for what they release on close.
@SuppressWarnings("try")
class MappedWeightsTest {

    @TempDir
    Path dir;

    /** A 2-block, width-32 {@link SyntheticStack} checkpoint holding {@code values}. */
    private Path write(Map<String, Tensor> values) {
        Path file = dir.resolve("model.safetensors");
        List<SafetensorsWriter.Entry> entries = new ArrayList<>();
        new SyntheticStack(2, 32).stateDict().forEach((n, p) -> entries.add(SafetensorsWriter.Entry.of(n,
                DType.FLOAT32, p.shape())));
        try (SafetensorsWriter w = SafetensorsWriter.create(file, entries, Map.of())) {
            values.forEach(w::write);
        }
        return file;
    }

    private static DeviceInventory noGpu() {
        return DeviceInventory.simulated(List.of(), 8L << 30);
    }

    private static boolean mapped(Path file) throws Exception {
        return Files.readAllLines(Path.of("/proc/self/maps")).stream().anyMatch(l -> l.endsWith(file.toString()));
    }

    /** Whether {@code address} lies in a mapping of {@code file} in this process. */
    private static boolean insideMappingOf(Path file, long address) throws Exception {
        return ProcMaps.mappingAt(address).endsWith(file.toString());
    }

    @Test
    void cpuWeightsBesideDiskEntriesAreCopiesSoTheStreamedBlocksCannotEvictThem() throws Exception {
        try (PointerScope scope = new PointerScope()) {
            Map<String, Tensor> values = new SyntheticStack(2, 32).randomWeights(4);
            Path file = write(values);
            DeviceInventory noGpu = noGpu();
            Tensor x = torch.randn(3, 32);
            Tensor[] out = new Tensor[2];
            boolean[] cpuMapped = new boolean[2];
            DeviceMap[] maps = {DeviceMap.of(Map.of("", Device.CPU)),
                    DeviceMap.of(Map.of("layers.0", Device.CPU, "layers.1", Device.DISK))};
            for (int run = 0; run < 2; run++) {
                SyntheticStack model = new SyntheticStack(2, 32);
                try (DispatchedModel<SyntheticStack> d = BigModel.loadCheckpointAndDispatch(model, file,
                        DispatchOptions.builder().deviceMap(maps[run]).inventory(noGpu).build());
                     PointerScope handles = new PointerScope()) {
                    Tensor cpuWeight = model.tensor("layers.0.up.weight").data();
                    assertThat(torch.equal(cpuWeight, values.get("layers.0.up.weight"))).isTrue();
                    cpuMapped[run] = insideMappingOf(file, cpuWeight.data_ptr().address());
                    if (run == 1) {
                        assertThat(mapped(file)).as("the disk block is read in place from the mapped file").isTrue();
                    }
                    out[run] = model.forward(x);
                    scope.attach(out[run]);
                }
            }
            assertThat(cpuMapped[0]).as("everything on the CPU: a view of the mapped file").isTrue();
            assertThat(cpuMapped[1]).as("beside a disk entry: a copy").isFalse();
            assertThat(torch.equal(out[1], out[0])).isTrue();
        }
    }

    @Test
    void cpuWeightsAreViewsOfTheMappedFileUntilClose() throws Exception {
        try (PointerScope scope = new PointerScope()) {
            Map<String, Tensor> values = new SyntheticStack(2, 32).randomWeights(3);
            Path file = write(values);
            DeviceMap cpu = DeviceMap.of(Map.of("", Device.CPU));
            DeviceInventory noGpu = noGpu();

            SyntheticStack model = new SyntheticStack(2, 32);
            DispatchedModel<SyntheticStack> d = BigModel.loadCheckpointAndDispatch(model, file,
                    DispatchOptions.builder().deviceMap(cpu).inventory(noGpu).build());
            assertThat(DispatchOptions.builder().build().offloadStateDict()).as("views by default").isTrue();
            assertThat(mapped(file)).as("mapped while the model holds views").isTrue();
            Tensor x = torch.randn(3, 32);
            Tensor viaViews;
            try (PointerScope handles = new PointerScope()) {
                // data() hands out tensor handles, which keep the mapping alive too: released before close
                for (Map.Entry<String, Parameter> e : model.stateDict().entrySet()) {
                    assertThat(torch.equal(e.getValue().data(), values.get(e.getKey()))).as(e.getKey()).isTrue();
                }
                viaViews = model.forward(x);
                scope.attach(viaViews);
            }
            d.close();
            assertThat(mapped(file)).as("closing the model unmaps the file").isFalse();

            SyntheticStack copied = new SyntheticStack(2, 32);
            try (DispatchedModel<SyntheticStack> c = BigModel.loadCheckpointAndDispatch(copied, file,
                    DispatchOptions.builder().deviceMap(cpu).inventory(noGpu).offloadStateDict(false).build())) {
                assertThat(mapped(file)).as("copies keep nothing mapped").isFalse();
                assertThat(torch.equal(copied.forward(x), viaViews)).isTrue();
            }

            SyntheticStack converted = new SyntheticStack(2, 32);
            try (DispatchedModel<SyntheticStack> c = BigModel.loadCheckpointAndDispatch(converted, file,
                    DispatchOptions.builder().deviceMap(cpu).inventory(noGpu).dtype(DType.FLOAT64).build())) {
                assertThat(mapped(file)).as("a conversion copies").isFalse();
                assertThat(converted.tensor("layers.0.up.weight").dtype()).isEqualTo(DType.FLOAT64);
            }
        }
    }
}
