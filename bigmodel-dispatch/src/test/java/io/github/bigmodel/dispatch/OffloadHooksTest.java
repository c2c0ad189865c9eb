package io.github.bigmodel.dispatch;

import static org.assertj.core.api.Assertions.assertThat;

import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.Parameter;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;
import io.github.bigmodel.dispatch.hooks.AlignDevicesHook;
import io.github.bigmodel.dispatch.hooks.OffloadedWeights;
import io.github.bigmodel.dispatch.hooks.Prefetcher;
import io.github.bigmodel.dispatch.hooks.WeightSource;

/** Offloaded blocks give bit-identical outputs to the same model held entirely on the CPU. */
class OffloadHooksTest {

    private static final int BLOCKS = 6;
    private static final int HIDDEN = 32;

    private static SyntheticStack loaded(Map<String, Tensor> weights) {
        SyntheticStack m = new SyntheticStack(BLOCKS, HIDDEN);
        weights.forEach((name, t) -> m.tensor(name).set(t.clone()));
        return m;
    }

    private static Tensor input() {
        torch.manual_seed(7);
        return torch.randn(3, HIDDEN);
    }

    /** Offloads blocks 2..5; the sources count their reads so the test can see the hook at work. */
    private static List<OffloadedWeights> offload(SyntheticStack m, Map<String, Tensor> weights, boolean disk,
            int[] reads) {
        List<OffloadedWeights> stages = new ArrayList<>();
        for (int b = 2; b < BLOCKS; b++) {
            String prefix = "layers." + b;
            Map<Parameter, WeightSource> sources = new LinkedHashMap<>();
            for (Map.Entry<String, Parameter> e : m.module(prefix).stateDict().entrySet()) {
                Tensor stored = weights.get(prefix + "." + e.getKey());
                WeightSource src = disk
                        ? WeightSource.lazy(() -> { reads[0]++; return stored.clone(); }, stored.nbytes())
                        : WeightSource.of(stored);
                sources.put(e.getValue(), src);
                e.getValue().markOffloaded();
            }
            stages.add(new OffloadedWeights(prefix, Device.CPU, sources));
        }
        return stages;
    }

    @Test
    void cpuAndDiskOffloadMatchAllOnCpuWithAndWithoutPrefetch() {
        SyntheticStack reference = new SyntheticStack(BLOCKS, HIDDEN);
        Map<String, Tensor> weights = reference.randomWeights(42);
        Tensor expected;
        try (Tensor x = input()) {
            SyntheticStack allCpu = loaded(weights);
            expected = allCpu.forward(x);
        }
        for (boolean disk : new boolean[] {false, true}) {
            for (int depth : new int[] {0, 1, 2}) {
                SyntheticStack m = loaded(weights);
                int[] reads = {0};
                List<OffloadedWeights> stages = offload(m, weights, disk, reads);
                Prefetcher prefetcher = depth == 0 ? null : new Prefetcher(stages, depth);
                for (int i = 0; i < stages.size(); i++) {
                    m.module(stages.get(i).moduleName())
                            .addForwardHook(new AlignDevicesHook(Device.CPU, stages.get(i), prefetcher, i));
                }
                for (int step = 0; step < 3; step++) {
                    try (Tensor x = input(); Tensor y = m.forward(x)) {
                        assertThat(torch.equal(y, expected)).as("disk=%s depth=%d step=%d", disk, depth, step)
                                .isTrue();
                    }
                    // Between forwards the offloaded weights are released again.
                    assertThat(m.tensor("layers.3.up.weight").device()).isEqualTo(Device.DISK);
                    assertThat(m.tensor("layers.1.up.weight").device()).isEqualTo(Device.CPU);
                }
                if (disk) {
                    assertThat(reads[0]).as("every offloaded tensor read once per forward, prefetched or not")
                            .isBetween(3 * 16, 3 * 16 + depth * 4);
                }
                if (prefetcher != null) {
                    prefetcher.close();
                }
            }
        }
    }
}
