package io.github.bigmodel.benchmarks.checkpoint;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.github.bigmodel.chatglm.ChatGLMConfig;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.NativeRuntime;
import io.github.bigmodel.core.Parameter;
import io.github.bigmodel.safetensors.Checkpoint;
import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;

/**
 * Opening a 6B-sized sharded checkpoint and listing its tensors: chatglm3-6b's exact names and shapes in bf16
 * (12.5 GB in 7 shards of about 2 GB), written as sparse files (real headers, unwritten data), so the benchmark
 * needs no 12 GB of disk and measures what opening costs: reading the index and each shard's header.
 *
 * <pre>
 * java -jar benchmarks/target/benchmarks.jar IndexOpenBenchmark -f 1 -wi 3 -i 5
 * </pre>
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Fork(value = 1, jvmArgsAppend = {"-Xmx1g", "-Dorg.bytedeco.javacpp.maxBytes=0",
        "-Dorg.bytedeco.javacpp.maxPhysicalBytes=0"})
@Warmup(iterations = 3, time = 2)
@Measurement(iterations = 5, time = 2)
public class IndexOpenBenchmark {

    private Path dir;

    @Setup(Level.Trial)
    public void write() throws IOException {
        NativeRuntime.init();
        dir = Files.createTempDirectory("bigmodel-bench-index");
        ChatGLMLanguageModel model = ChatGLMLanguageModel.create(ChatGLMConfig.preset("chatglm3-6b"), DType.BFLOAT16);
        writeSparse(dir, model.stateDict(), 2_000_000_000L);
    }

    @TearDown(Level.Trial)
    public void delete() throws IOException {
        try (Stream<Path> walk = Files.walk(dir)) {
            for (Path p : walk.sorted(Comparator.reverseOrder()).toList()) {
                Files.deleteIfExists(p);
            }
        }
    }

    @Benchmark
    public int openAndList() {
        try (Checkpoint checkpoint = Checkpoint.open(dir)) {
            return checkpoint.tensors().size();
        }
    }

    /** Safetensors shards with real headers whose data section is a hole (sparse file), plus the index. */
    static void writeSparse(Path dir, Map<String, Parameter> stateDict, long maxShardBytes) throws IOException {
        List<Map<String, Parameter>> shards = new ArrayList<>();
        Map<String, Parameter> shard = new LinkedHashMap<>();
        long bytes = 0;
        for (Map.Entry<String, Parameter> e : stateDict.entrySet()) {
            long size = e.getValue().byteSize();
            if (!shard.isEmpty() && bytes + size > maxShardBytes) {
                shards.add(shard);
                shard = new LinkedHashMap<>();
                bytes = 0;
            }
            shard.put(e.getKey(), e.getValue());
            bytes += size;
        }
        shards.add(shard);
        ObjectMapper json = new ObjectMapper();
        ObjectNode index = json.createObjectNode();
        ObjectNode weightMap = json.createObjectNode();
        long total = 0;
        for (int s = 0; s < shards.size(); s++) {
            String name = String.format(Locale.ROOT, "model-%05d-of-%05d.safetensors", s + 1, shards.size());
            ObjectNode header = json.createObjectNode();
            header.putObject("__metadata__").put("format", "pt");
            long offset = 0;
            for (Map.Entry<String, Parameter> e : shards.get(s).entrySet()) {
                ObjectNode t = header.putObject(e.getKey());
                t.put("dtype", e.getValue().dtype().safetensorsName());
                var shape = t.putArray("shape");
                for (long d : e.getValue().shape()) {
                    shape.add(d);
                }
                long size = e.getValue().byteSize();
                t.putArray("data_offsets").add(offset).add(offset + size);
                offset += size;
                weightMap.put(e.getKey(), name);
            }
            total += offset;
            byte[] text = json.writeValueAsBytes(header);
            int padded = (text.length + 7) / 8 * 8;
            byte[] headerBytes = new byte[padded];
            java.util.Arrays.fill(headerBytes, (byte) ' ');
            System.arraycopy(text, 0, headerBytes, 0, text.length);
            try (RandomAccessFile f = new RandomAccessFile(dir.resolve(name).toFile(), "rw")) {
                f.write(ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(padded).array());
                f.write(headerBytes);
                f.setLength(8L + padded + offset); // the data section stays a hole
            }
        }
        index.putObject("metadata").put("total_size", total);
        index.set("weight_map", weightMap);
        Files.writeString(dir.resolve("model.safetensors.index.json"), json.writeValueAsString(index),
                StandardCharsets.UTF_8);
    }
}
