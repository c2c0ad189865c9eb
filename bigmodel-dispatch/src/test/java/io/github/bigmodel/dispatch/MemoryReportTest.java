package io.github.bigmodel.dispatch;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import io.github.bigmodel.dispatch.plan.DeviceInventory;
import io.github.bigmodel.dispatch.plan.DeviceMap;
import io.github.bigmodel.dispatch.report.MemoryReport;

/** {@link DispatchedModel#memoryReport()}: weights per device as placed, disk-offloaded ones on a disk row. */
class MemoryReportTest {

    private static final int BLOCKS = 6;
    private static final int HIDDEN = 32;
    private static final String SPLIT = "{\"layers.0\":\"cpu\",\"layers.1\":\"cpu\",\"layers.2\":\"cpu\","
            + "\"layers.3\":\"disk\",\"layers.4\":\"disk\",\"layers.5\":\"disk\"}";
    private static Map<String, Tensor> weights;

    @TempDir
    Path tmp;

    @BeforeAll
    static void weights() {
        weights = new SyntheticStack(BLOCKS, HIDDEN).randomWeights(42);
    }

    @AfterAll
    static void release() {
        weights.values().forEach(Tensor::close);
    }

    private static SyntheticStack loaded() {
        SyntheticStack m = new SyntheticStack(BLOCKS, HIDDEN);
        weights.forEach((name, t) -> m.tensor(name).set(t.clone()));
        return m;
    }

    /** The bytes of the given weights whose names start with one of the prefixes. */
    private static long bytesOf(String... prefixes) {
        long total = 0;
        for (Map.Entry<String, Tensor> e : weights.entrySet()) {
            for (String p : prefixes) {
                if (e.getKey().startsWith(p + ".")) {
                    total += e.getValue().nbytes();
                }
            }
        }
        return total;
    }

    @Test
    void blocksOnDiskAreReportedOnADiskRowAndTheRestOnCpu() {
        DispatchOptions options = DispatchOptions.builder()
                .inventory(DeviceInventory.simulated(List.of(), 8L << 30)).offloadFolder(tmp.resolve("off")).build();
        try (DispatchedModel<SyntheticStack> d = BigModel.dispatchModel(loaded(), DeviceMap.fromJson(SPLIT), options)) {
            MemoryReport r = d.memoryReport();
            assertThat(r.weightBytes(Device.CPU)).isEqualTo(bytesOf("layers.0", "layers.1", "layers.2"));
            assertThat(r.weightBytes(Device.DISK)).isEqualTo(bytesOf("layers.3", "layers.4", "layers.5"));
            assertThat(r.weightBytes().keySet()).containsExactly(Device.CPU, Device.DISK);
            assertThat(r.cudaAllocators()).hasSize(torch.cuda_is_available() ? torch.cuda_device_count() : 0);
            if (io.github.bigmodel.core.ProcessMemory.isSupported()) {
                assertThat(r.process().residentBytes()).isPositive();
            }
            assertThat(r.toString()).contains("disk").contains("cpu").contains("process: resident");
            // A forward brings disk weights in and puts them back: the report does not move with it.
            try (Tensor x = torch.randn(3, HIDDEN); Tensor y = d.model().forward(x)) {
                assertThat(y.size(1)).isEqualTo(HIDDEN);
            }
            assertThat(d.memoryReport().weightBytes()).isEqualTo(r.weightBytes());
            d.close();
            assertThatThrownBy(d::memoryReport).isInstanceOf(IllegalStateException.class);
        }
    }

    @Test
    void weightsOffloadedToCpuMemoryStayOnTheCpuRow() {
        try (DispatchedModel<SyntheticStack> d = BigModel.cpuOffload(loaded(), Device.CPU)) {
            assertThat(d.memoryReport().weightBytes()).containsExactly(Map.entry(Device.CPU,
                    bytesOf("layers")));
        }
    }

    @Test
    void plannedDtypeCountsForOffloadedWeights() {
        SyntheticStack m = new SyntheticStack(BLOCKS, HIDDEN);
        m.tensor("layers.0.up.weight").setPlannedDtype(DType.FLOAT16);
        m.tensor("layers.0.up.weight").markOffloaded();
        Map<Device, Long> bytes = MemoryReport.weightBytesByDevice(m, null);
        assertThat(bytes).containsExactly(Map.entry(Device.DISK, 2L * HIDDEN * 2 * HIDDEN));
    }
}
