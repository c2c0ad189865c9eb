package io.github.bigmodel.safetensors;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assumptions.assumeThat;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.Tensors;
import io.github.bigmodel.core.MemorySize;
import io.github.bigmodel.core.ProcessMemory;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.pytorch.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Iterating a sharded checkpoint keeps anonymous memory within one tensor of slack. */
class PeakMemoryTest {

    private static final long SLACK = 64L << 20;
    private static final int SHARDS = 3;
    private static final int TENSORS_PER_SHARD = 2;
    /** 100 MiB float32 tensors: 600 MiB in all. */
    private static final long ELEMENTS = 25L << 20;
    private static final int CHUNK = 8 << 20;

    @TempDir
    Path dir;

    /** The value of element {@code i} of tensor {@code t}: distinct per tensor so a wrong shard is seen. */
    private static float value(int t, long i) {
        return t * 1000 + (i % 997);
    }

    private Path writeCheckpoint() throws IOException {
        ByteBuffer chunk = ByteBuffer.allocateDirect(CHUNK).order(ByteOrder.LITTLE_ENDIAN);
        Map<String, String> weightMap = new LinkedHashMap<>();
        int t = 0;
        for (int s = 0; s < SHARDS; s++) {
            String shardName = String.format("model-%05d-of-%05d.safetensors", s + 1, SHARDS);
            List<SafetensorsWriter.Entry> entries = new ArrayList<>();
            for (int k = 0; k < TENSORS_PER_SHARD; k++) {
                entries.add(SafetensorsWriter.Entry.of("layer." + (t + k) + ".weight", DType.FLOAT32,
                        ELEMENTS / 1024, 1024));
            }
            try (SafetensorsWriter w = SafetensorsWriter.create(dir.resolve(shardName), entries, Map.of())) {
                for (SafetensorsWriter.Entry e : entries) {
                    long written = 0;
                    while (written < ELEMENTS) {
                        chunk.clear();
                        while (chunk.hasRemaining() && written < ELEMENTS) {
                            chunk.putFloat(value(t, written++));
                        }
                        chunk.flip();
                        w.write(e.name(), chunk);
                    }
                    weightMap.put(e.name(), shardName);
                    t++;
                }
            }
        }
        StringBuilder json = new StringBuilder("{\"metadata\": {}, \"weight_map\": {");
        weightMap.forEach((k, v) -> json.append(json.charAt(json.length() - 1) == '{' ? "" : ",")
                .append('"').append(k).append("\":\"").append(v).append('"'));
        json.append("}}");
        return Files.writeString(dir.resolve("model.safetensors.index.json"), json.toString());
    }

    @Test
    void iteratingShardsStaysWithinLargestTensorPlusSlack() throws IOException {
        assumeThat(ProcessMemory.isSupported()).as("needs /proc/self/status").isTrue();
        Path index = writeCheckpoint();
        long largest = 0;
        long peakGrowth = 0;
        // libtorch's own start-up (native libraries, thread pools) is not loading: do it before the baseline.
        try (Tensor warm = Tensors.empty(DType.FLOAT32, Device.CPU, 1024); Tensor copy = warm.clone()) {
            assertThat(copy.numel()).isEqualTo(1024);
        }
        System.gc();
        long baseline = ProcessMemory.read().anonymousBytes();
        try (Checkpoint ckpt = Checkpoint.open(dir)) {
            assertThat(ckpt.source().getFileName()).isEqualTo(index.getFileName());
            assertThat(ckpt.totalBytes()).isEqualTo(SHARDS * TENSORS_PER_SHARD * ELEMENTS * 4);
            int t = 0;
            for (TensorInfo info : ckpt.tensors()) {
                largest = Math.max(largest, info.byteLength());
                // The JVM may hand heap back to the system after the baseline (tests before this one in the same
                // fork churn the heap); growth is measured from the lowest reading, never from a stale higher one.
                baseline = Math.min(baseline, ProcessMemory.read().anonymousBytes());
                try (Tensor view = ckpt.load(info.name()); Tensor copy = view.clone()) {
                    long growth = ProcessMemory.read().anonymousBytes() - baseline;
                    peakGrowth = Math.max(peakGrowth, growth);
                    org.slf4j.LoggerFactory.getLogger(PeakMemoryTest.class).debug("{}: anonymous +{}", info.name(),
                            MemorySize.format(growth));
                    FloatPointer values = new FloatPointer(copy.data_ptr());
                    for (long i : new long[] {0, 1, 12345, ELEMENTS - 1}) {
                        assertThat(values.get(i)).as(info.name() + "[" + i + "]").isEqualTo(value(t, i));
                    }
                }
                t++;
            }
            assertThat(t).isEqualTo(SHARDS * TENSORS_PER_SHARD);
        }
        long total = SHARDS * TENSORS_PER_SHARD * ELEMENTS * 4;
        org.slf4j.LoggerFactory.getLogger(PeakMemoryTest.class).info(
                "Iterated {} in {} shards: anonymous memory grew at most {} (largest tensor {})",
                MemorySize.format(total), SHARDS, MemorySize.format(peakGrowth), MemorySize.format(largest));
        // The bound is meaningful: the checkpoint is several times larger than what may stay resident.
        assertThat(total).isGreaterThan(3 * (largest + SLACK));
        assertThat(peakGrowth).isGreaterThanOrEqualTo(largest / 2); // the clone was really materialized
        assertThat(peakGrowth).isLessThanOrEqualTo(largest + SLACK);
    }
}
