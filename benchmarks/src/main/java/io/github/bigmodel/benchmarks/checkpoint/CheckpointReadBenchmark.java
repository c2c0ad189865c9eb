package io.github.bigmodel.benchmarks.checkpoint;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.NativeRuntime;
import io.github.bigmodel.safetensors.Checkpoint;
import io.github.bigmodel.safetensors.SafetensorsWriter;
import io.github.bigmodel.safetensors.ShardedCheckpointWriter;
import io.github.bigmodel.safetensors.TensorInfo;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;

/**
 * Reading every tensor of a sharded safetensors checkpoint onto the CPU through {@link Checkpoint}, against reading
 * the same byte ranges with a plain {@link FileChannel}. The files are read from the page cache (the machine has the
 * memory to keep them there), so this measures the library's overhead, not the disk.
 *
 * <ul>
 *   <li>{@code fileChannelIntoBuffer}: the floor: {@code FileChannel.read} of each tensor's bytes into one reused
 *       direct buffer;</li>
 *   <li>{@code checkpointIntoBuffer}: {@code Checkpoint.load} (a zero-copy view of the mapped file) copied into one
 *       reused tensor: the same work through the library;</li>
 *   <li>{@code checkpointToNewTensors}: {@code Checkpoint.load(...).clone()}: a fresh tensor per weight, as loading
 *       a model onto the CPU does.</li>
 * </ul>
 *
 * <pre>
 * java -jar benchmarks/target/benchmarks.jar CheckpointReadBenchmark -f 1 -wi 3 -i 5
 * </pre>
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Fork(value = 1, jvmArgsAppend = {"-Xmx1g", "-Dorg.bytedeco.javacpp.maxBytes=0",
        "-Dorg.bytedeco.javacpp.maxPhysicalBytes=0"})
@Warmup(iterations = 3, time = 2)
@Measurement(iterations = 5, time = 3)
public class CheckpointReadBenchmark {

    /** Total checkpoint size in MiB (tensors of 16 MiB, shards of at most 128 MiB). */
    @Param("512")
    public int totalMiB;

    private Path dir;
    private Checkpoint checkpoint;
    private List<TensorInfo> tensors;
    private ByteBuffer buffer;
    private Tensor reusable;

    @Setup(Level.Trial)
    public void write() throws IOException {
        NativeRuntime.init();
        dir = Files.createTempDirectory("bigmodel-bench-read");
        int count = totalMiB / 16;
        List<SafetensorsWriter.Entry> entries = new ArrayList<>();
        for (int i = 0; i < count; i++) {
            entries.add(SafetensorsWriter.Entry.of("layers." + i + ".weight", DType.FLOAT32, 2048, 2048));
        }
        torch.manual_seed(0);
        try (ShardedCheckpointWriter w = ShardedCheckpointWriter.create(dir, entries, 128L << 20)) {
            for (SafetensorsWriter.Entry e : entries) {
                try (PointerScope scope = new PointerScope()) {
                    w.write(e.name(), torch.randn(2048, 2048));
                }
            }
        }
        checkpoint = Checkpoint.open(dir);
        tensors = checkpoint.tensors();
        buffer = ByteBuffer.allocateDirect(16 << 20);
        reusable = torch.empty(2048, 2048);
        reusable.fill_(new Scalar(0));
        // Warm the page cache so every variant reads from memory.
        fileChannelIntoBuffer();
    }

    @TearDown(Level.Trial)
    public void delete() throws IOException {
        checkpoint.close();
        reusable.close();
        try (Stream<Path> walk = Files.walk(dir)) {
            for (Path p : walk.sorted(Comparator.reverseOrder()).toList()) {
                Files.deleteIfExists(p);
            }
        }
    }

    @Benchmark
    public long fileChannelIntoBuffer() throws IOException {
        long bytes = 0;
        FileChannel channel = null;
        Path open = null;
        try {
            for (TensorInfo t : tensors) {
                if (!t.file().equals(open)) {
                    if (channel != null) {
                        channel.close();
                    }
                    channel = FileChannel.open(t.file(), StandardOpenOption.READ);
                    open = t.file();
                }
                buffer.clear().limit((int) t.byteLength());
                long position = t.fileOffset();
                while (buffer.hasRemaining()) {
                    int n = channel.read(buffer, position);
                    if (n < 0) {
                        throw new IOException("unexpected end of " + t.file());
                    }
                    position += n;
                }
                bytes += t.byteLength();
            }
        } finally {
            if (channel != null) {
                channel.close();
            }
        }
        return bytes;
    }

    @Benchmark
    public long checkpointIntoBuffer() {
        long bytes = 0;
        for (TensorInfo t : tensors) {
            try (PointerScope scope = new PointerScope()) {
                Tensor view = checkpoint.load(t.name());
                reusable.copy_(view);
                bytes += t.byteLength();
            }
        }
        return bytes;
    }

    @Benchmark
    public long checkpointToNewTensors() {
        long bytes = 0;
        for (TensorInfo t : tensors) {
            try (PointerScope scope = new PointerScope()) {
                Tensor copy = checkpoint.load(t.name()).clone();
                bytes += copy.nbytes();
            }
        }
        return bytes;
    }
}
