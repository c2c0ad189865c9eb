package io.github.bigmodel.benchmarks.dispatch;

import io.github.bigmodel.dispatch.BigModel;
import io.github.bigmodel.dispatch.DispatchOptions;
import io.github.bigmodel.dispatch.DispatchedModel;
import io.github.bigmodel.safetensors.Checkpoint;
import io.github.bigmodel.safetensors.TensorInfo;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;

/**
 * Disk offload with and without prefetch: a stack of 8 blocks of 64 MiB (hidden 2048, float32; 512 MiB) placed
 * entirely on {@code disk} and read in place from its safetensors checkpoint, against the two costs a forward
 * overlaps: reading the offloaded bytes into memory ({@link #readOffloadedBytes}) and computing with every weight
 * already in memory ({@link #computeInMemory}). Target: forward with prefetch within 1.1 x max(read, compute).
 *
 * <p>The checkpoint is written during setup, so its pages are in the page cache: "read" here is a copy out of the
 * page cache (page faults plus memcpy), not a cold disk read; dropping caches needs root privileges this benchmark
 * does not assume.
 *
 * <pre>{@code
 * java -jar benchmarks/target/benchmarks.jar DiskOffloadBenchmark -f 1 -wi 2 -i 3
 * }</pre>
 */
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
public class DiskOffloadBenchmark {

    static final int BLOCKS = 8;
    static final int HIDDEN = 2048;
    static final int ROWS = 64;

    /** The checkpoint, written once per trial. */
    @State(Scope.Benchmark)
    public static class CheckpointState {
        Path dir;
        Tensor input;

        @Setup(Level.Trial)
        public void write() throws Exception {
            dir = Files.createTempDirectory("bench-offload");
            BenchStack.writeCheckpoint(new BenchStack(BLOCKS, HIDDEN), dir.resolve("model.safetensors"), 1);
            torch.manual_seed(3);
            input = torch.randn(ROWS, HIDDEN);
        }

        @TearDown(Level.Trial)
        public void delete() throws Exception {
            input.close();
            Files.deleteIfExists(dir.resolve("model.safetensors"));
            Files.deleteIfExists(dir);
        }
    }

    /** Every block on disk, read in place, with the given prefetch depth. */
    @State(Scope.Benchmark)
    public static class OffloadedState {
        @Param({"0", "1"})
        public int prefetch;
        DispatchedModel<BenchStack> model;

        @Setup(Level.Trial)
        public void load(CheckpointState ckpt) {
            model = BigModel.loadCheckpointAndDispatch(new BenchStack(BLOCKS, HIDDEN), ckpt.dir,
                    DispatchOptions.builder().deviceMap("{\"layers\":\"disk\"}").prefetch(prefetch).build());
        }

        @TearDown(Level.Trial)
        public void close() {
            model.close();
        }
    }

    /** Every weight in memory on the CPU. */
    @State(Scope.Benchmark)
    public static class InMemoryState {
        DispatchedModel<BenchStack> model;

        @Setup(Level.Trial)
        public void load(CheckpointState ckpt) {
            model = BigModel.loadCheckpointAndDispatch(new BenchStack(BLOCKS, HIDDEN), ckpt.dir,
                    DispatchOptions.builder().deviceMap("{\"\":\"cpu\"}").build());
        }

        @TearDown(Level.Trial)
        public void close() {
            model.close();
        }
    }

    /** The checkpoint kept open for the read benchmark. */
    @State(Scope.Benchmark)
    public static class ReaderState {
        Checkpoint checkpoint;

        @Setup(Level.Trial)
        public void open(CheckpointState ckpt) {
            checkpoint = Checkpoint.open(ckpt.dir);
        }

        @TearDown(Level.Trial)
        public void close() {
            checkpoint.close();
        }
    }

    @Benchmark
    public long forwardOffloaded(OffloadedState s, CheckpointState c) {
        try (Tensor y = s.model.model().forward(c.input)) {
            return y.data_ptr().address();
        }
    }

    /** What prefetching does for every block: the mapped view copied into memory. */
    @Benchmark
    public long readOffloadedBytes(ReaderState r) {
        long sum = 0;
        for (TensorInfo t : r.checkpoint.tensors()) {
            try (Tensor view = r.checkpoint.load(t.name()); Tensor copy = view.clone()) {
                sum += copy.nbytes();
            }
        }
        return sum;
    }

    @Benchmark
    public long computeInMemory(InMemoryState s, CheckpointState c) {
        try (Tensor y = s.model.model().forward(c.input)) {
            return y.data_ptr().address();
        }
    }
}
