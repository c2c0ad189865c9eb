package io.github.bigmodel.core;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;

/** libtorch's intra-op threads: physical cores by default, -Dbigmodel.threads / OMP_NUM_THREADS / setThreads win. */
class NativeRuntimeThreadsTest {

    @Test
    void physicalCoresAreWithinTheAvailableProcessors() {
        int cores = NativeRuntime.physicalCores();
        assertThat(cores).isBetween(1, Runtime.getRuntime().availableProcessors());
    }

    @Test
    void theDefaultIsAppliedWithTheFirstTensor() {
        Tensors.empty(DType.FLOAT32, Device.CPU, 1).close();
        // This JVM was started without -Dbigmodel.threads, so the default is the environment's or the cores'.
        assertThat(System.getProperty(NativeRuntime.THREADS)).isNull();
        String omp = System.getenv("OMP_NUM_THREADS");
        int expected = omp == null || omp.isBlank() ? NativeRuntime.physicalCores()
                : Integer.parseInt(omp.split(",")[0].trim());
        assertThat(NativeRuntime.defaultThreads()).isEqualTo(expected);
        assertThat(torch.get_num_threads()).isEqualTo(expected);
    }

    @Test
    void precedenceIsPropertyThenEnvironmentThenCores() {
        assertThat(NativeRuntime.threadsFrom("3", "5", 2)).isEqualTo(3);
        assertThat(NativeRuntime.threadsFrom(null, "5", 2)).isEqualTo(5);
        assertThat(NativeRuntime.threadsFrom(" ", "4,2", 2)).isEqualTo(4);
        assertThat(NativeRuntime.threadsFrom(null, null, 2)).isEqualTo(2);
        assertThatThrownBy(() -> NativeRuntime.threadsFrom("0", null, 2))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("-Dbigmodel.threads");
        assertThatThrownBy(() -> NativeRuntime.threadsFrom("many", null, 2))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("'many'");
        assertThatThrownBy(() -> NativeRuntime.threadsFrom(null, "-1", 2))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("OMP_NUM_THREADS");
    }

    @Test
    void anOverrideHoldsForThreadsStartedAfterIt() throws Exception {
        int before = NativeRuntime.threads();
        try {
            int wanted = before == 1 ? 2 : 1;
            NativeRuntime.setThreads(wanted);
            assertThat(torch.get_num_threads()).isEqualTo(wanted);
            // A Java thread that first runs libtorch now (a session, a prefetcher) starts with the same count.
            ExecutorService pool = Executors.newSingleThreadExecutor();
            try {
                assertThat(pool.submit(() -> {
                    Tensors.empty(DType.FLOAT32, Device.CPU, 4).fill_(new org.bytedeco.pytorch.Scalar(1)).sum()
                            .item_double();
                    return torch.get_num_threads();
                }).get()).isEqualTo(wanted);
            } finally {
                pool.shutdown();
            }
            // Applying the default again does not undo an explicit choice.
            NativeRuntime.applyThreads();
            assertThat(torch.get_num_threads()).isEqualTo(wanted);
            assertThatThrownBy(() -> NativeRuntime.setThreads(0)).isInstanceOf(IllegalArgumentException.class);
        } finally {
            NativeRuntime.setThreads(before);
        }
    }
}
