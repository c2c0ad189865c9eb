package io.github.bigmodel.dispatch;

import io.github.bigmodel.safetensors.testing.TestPickle;
import io.github.bigmodel.safetensors.testing.TestZip;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Tensors;
import io.github.bigmodel.safetensors.SafetensorsWriter;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.pytorch.Tensor;

/** Writes test checkpoints of in-memory weights: one safetensors file, safetensors shards with an index, a torch .bin. */
final class Checkpoints {

    private Checkpoints() {
    }

    /** Converts every floating tensor to {@code dtype} (integers untouched). */
    static Map<String, Tensor> as(Map<String, Tensor> weights, DType dtype) {
        Map<String, Tensor> out = new LinkedHashMap<>();
        weights.forEach((k, v) -> out.put(k, v.to(dtype.scalarType())));
        return out;
    }

    static Path singleFile(Path dir, Map<String, Tensor> weights) throws IOException {
        Files.createDirectories(dir);
        Path file = dir.resolve("model.safetensors");
        write(file, weights);
        return dir;
    }

    /** {@code shards} files plus {@code model.safetensors.index.json}; returns the directory. */
    static Path sharded(Path dir, Map<String, Tensor> weights, int shards) throws IOException {
        Files.createDirectories(dir);
        List<String> names = new ArrayList<>(weights.keySet());
        int per = (names.size() + shards - 1) / shards;
        StringBuilder map = new StringBuilder();
        for (int s = 0; s < shards; s++) {
            String shardName = String.format("model-%05d-of-%05d.safetensors", s + 1, shards);
            Map<String, Tensor> part = new LinkedHashMap<>();
            for (String n : names.subList(Math.min(s * per, names.size()), Math.min((s + 1) * per, names.size()))) {
                part.put(n, weights.get(n));
                map.append(map.length() == 0 ? "" : ",").append('"').append(n).append("\":\"").append(shardName)
                        .append('"');
            }
            write(dir.resolve(shardName), part);
        }
        Files.writeString(dir.resolve("model.safetensors.index.json"),
                "{\"metadata\": {\"total_size\": 0}, \"weight_map\": {" + map + "}}");
        return dir;
    }

    static void write(Path file, Map<String, Tensor> weights) {
        List<SafetensorsWriter.Entry> entries = new ArrayList<>();
        weights.forEach((k, v) -> entries.add(SafetensorsWriter.Entry.of(k, DType.of(v.scalar_type()),
                Tensors.shape(v))));
        try (SafetensorsWriter w = SafetensorsWriter.create(file, entries, Map.of("format", "pt"))) {
            weights.forEach(w::write);
        }
    }

    /** A torch.save zip ({@code pytorch_model.bin}) of float32 tensors, one storage each. */
    static Path torchBin(Path dir, Map<String, Tensor> weights) throws IOException {
        Files.createDirectories(dir);
        TestPickle p = new TestPickle().beginDict();
        TestZip zip = new TestZip();
        int key = 0;
        List<byte[]> data = new ArrayList<>();
        for (Map.Entry<String, Tensor> e : weights.entrySet()) {
            Tensor t = e.getValue();
            if (DType.of(t.scalar_type()) != DType.FLOAT32) {
                throw new IllegalArgumentException("torchBin writes float32 only");
            }
            long[] shape = Tensors.shape(t);
            long[] stride = new long[shape.length];
            long s = 1;
            for (int i = shape.length - 1; i >= 0; i--) {
                stride[i] = s;
                s *= shape[i];
            }
            p.tensor(e.getKey(), "FloatStorage", Integer.toString(key), t.numel(), 0, shape, stride);
            try (Tensor c = t.contiguous()) {
                byte[] bytes = new byte[(int) c.nbytes()];
                new BytePointer(c.data_ptr()).capacity(bytes.length).get(bytes);
                data.add(bytes);
            }
            key++;
        }
        zip.stored("archive/data.pkl", p.endDict().bytes());
        for (int i = 0; i < data.size(); i++) {
            zip.stored("archive/data/" + i, data.get(i));
        }
        zip.stored("archive/version", "3\n".getBytes(java.nio.charset.StandardCharsets.US_ASCII));
        Files.write(dir.resolve("pytorch_model.bin"), zip.bytes());
        return dir;
    }
}
