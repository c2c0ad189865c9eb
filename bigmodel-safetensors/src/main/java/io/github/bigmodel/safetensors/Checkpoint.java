package io.github.bigmodel.safetensors;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.StreamReadFeature;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.json.JsonMapper;
import io.github.bigmodel.safetensors.CheckpointException.Reason;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.InvalidPathException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import org.bytedeco.pytorch.Tensor;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * One view of a checkpoint however it is stored: a single file, a sharded checkpoint with a Hugging Face index
 * ({@code model.safetensors.index.json}, {@code pytorch_model.bin.index.json}:
 * {@code {"metadata": {...}, "weight_map": {tensor: file}}}), or a flat {@code index.json}
 * ({@code {tensor: file}}). Opening reads only the index; each shard is opened (its header read) once, when first
 * needed, and tensors are loaded one at a time.
 *
 * <p>A directory is searched for, in this order: {@code model.safetensors.index.json}, {@code model.safetensors},
 * {@code pytorch_model.bin.index.json}, {@code pytorch_model.bin}, {@code index.json}.
 *
 * <p>Thread-safe for reads.
 *
 * <pre>{@code
 * try (Checkpoint ckpt = Checkpoint.open(Path.of("chatglm3-6b"))) {
 *     for (TensorInfo t : ckpt.tensors()) {
 *         try (Tensor w = ckpt.load(t.name())) { ... }
 *     }
 * }
 * }</pre>
 */
public final class Checkpoint implements AutoCloseable {

    private static final Logger LOG = LoggerFactory.getLogger(Checkpoint.class);

    /** What a directory is searched for, in order of preference. */
    public static final List<String> DIRECTORY_CANDIDATES = List.of("model.safetensors.index.json",
            "model.safetensors", "pytorch_model.bin.index.json", "pytorch_model.bin", "index.json");

    private static final JsonMapper JSON = JsonMapper.builder()
            .enable(StreamReadFeature.STRICT_DUPLICATE_DETECTION)
            .enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS)
            .build();

    private final Path source;
    /** Tensor name -> shard, in index order. */
    private final Map<String, Path> shardOf;
    private final List<Path> shards;
    private final Map<String, String> metadata;
    private final Map<Path, TensorFile> opened = new ConcurrentHashMap<>();
    private volatile boolean closed;

    private Checkpoint(Path source, Map<String, Path> shardOf, List<Path> shards, Map<String, String> metadata) {
        this.source = source;
        this.shardOf = shardOf;
        this.shards = shards;
        this.metadata = metadata;
    }

    /**
     * Opens a checkpoint directory, a single checkpoint file or an index json.
     *
     * @throws CheckpointException when nothing readable is found, the index is malformed
     *         ({@link Reason#INVALID_JSON}) or names a shard that does not exist ({@link Reason#MISSING_SHARD})
     */
    public static Checkpoint open(Path path) {
        if (Files.isDirectory(path)) {
            for (String candidate : DIRECTORY_CANDIDATES) {
                Path p = path.resolve(candidate);
                if (Files.isRegularFile(p)) {
                    LOG.debug("Checkpoint {}: using {}", path, candidate);
                    return open(p);
                }
            }
            throw new CheckpointException(Reason.UNKNOWN_FORMAT, path, null,
                    "no checkpoint in the directory: looked for " + String.join(", ", DIRECTORY_CANDIDATES));
        }
        if (!Files.isRegularFile(path)) {
            // A FIFO would block the first read and /dev/zero never ends: refused by kind, before any read.
            throw new CheckpointException(Reason.IO_ERROR, path, null, Files.exists(path)
                    ? "not a regular file (a pipe, device or socket cannot hold a checkpoint)" : "no such file or directory");
        }
        if (path.getFileName().toString().toLowerCase(Locale.ROOT).endsWith(".json")) {
            return openIndex(path);
        }
        TensorFile file = openFile(path);
        Map<String, Path> shardOf = new LinkedHashMap<>();
        for (TensorInfo t : file.tensors()) {
            shardOf.put(t.name(), path);
        }
        Map<String, String> metadata = file instanceof SafetensorsFile
                ? ((SafetensorsFile) file).metadata() : Map.of();
        Checkpoint c = new Checkpoint(path, shardOf, List.of(path), metadata);
        c.opened.put(path, file);
        return c;
    }

    /** Opens one shard file with the reader its extension calls for. */
    static TensorFile openFile(Path path) {
        String name = path.getFileName().toString().toLowerCase(Locale.ROOT);
        if (name.endsWith(".safetensors")) {
            return SafetensorsFile.open(path);
        }
        if (name.endsWith(".bin") || name.endsWith(".pt") || name.endsWith(".pth")) {
            return io.github.bigmodel.safetensors.torch.TorchBinFile.open(path);
        }
        throw new CheckpointException(Reason.UNKNOWN_FORMAT, path, null,
                "not a checkpoint file bigmodel reads (expected .safetensors, .bin, .pt or .pth)");
    }

    private static Checkpoint openIndex(Path index) {
        JsonNode root;
        try {
            root = JSON.readTree(index.toFile());
        } catch (JsonProcessingException e) {
            throw new CheckpointException(Reason.INVALID_JSON, index, null,
                    "index is not valid JSON: " + e.getOriginalMessage(), e);
        } catch (IOException e) {
            throw new CheckpointException(Reason.IO_ERROR, index, null, "cannot read the index: " + e, e);
        }
        if (root == null || !root.isObject()) {
            throw new CheckpointException(Reason.INVALID_JSON, index, null, "index is not a JSON object");
        }
        JsonNode weightMap;
        Map<String, String> metadata = new LinkedHashMap<>();
        if (root.has("weight_map")) {
            weightMap = root.get("weight_map");
            if (!weightMap.isObject()) {
                throw new CheckpointException(Reason.INVALID_JSON, index, null, "weight_map is not an object");
            }
            JsonNode meta = root.get("metadata");
            if (meta != null && !meta.isNull()) {
                if (!meta.isObject()) {
                    throw new CheckpointException(Reason.INVALID_JSON, index, null, "metadata is not an object");
                }
                for (Iterator<Map.Entry<String, JsonNode>> it = meta.fields(); it.hasNext(); ) {
                    Map.Entry<String, JsonNode> m = it.next();
                    // total_size is a number in Hugging Face indexes; keep scalars' text, other values as JSON.
                    metadata.put(m.getKey(), m.getValue().isValueNode() ? m.getValue().asText()
                            : m.getValue().toString());
                }
            }
        } else {
            weightMap = root; // the flat {tensor: file} form
        }
        Path dir = index.toAbsolutePath().getParent();
        Map<String, Path> shardOf = new LinkedHashMap<>();
        Set<Path> shards = new LinkedHashSet<>();
        for (Iterator<Map.Entry<String, JsonNode>> it = weightMap.fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> w = it.next();
            if (!w.getValue().isTextual()) {
                throw new CheckpointException(Reason.INVALID_JSON, index, w.getKey(), root.has("weight_map")
                        ? "weight_map value is not a file name"
                        : "index is neither {\"weight_map\": {tensor: file}} nor a flat {tensor: file} map");
            }
            String fileName = w.getValue().asText();
            Path shard;
            try {
                shard = dir.resolve(fileName).normalize();
            } catch (InvalidPathException e) {
                // A NUL or a lone surrogate: no file can have this name.
                throw new CheckpointException(Reason.INVALID_JSON, index, w.getKey(),
                        "shard '" + fileName + "' is not a valid file name: " + e.getReason(), e);
            }
            if (fileName.isEmpty() || Path.of(fileName).isAbsolute() || !shard.startsWith(dir)) {
                throw new CheckpointException(Reason.INVALID_JSON, index, w.getKey(),
                        "shard '" + fileName + "' is not a file inside the index's folder");
            }
            shardOf.put(w.getKey(), shard);
            shards.add(shard);
        }
        for (Path shard : shards) {
            if (!Files.isRegularFile(shard)) {
                String tensor = shardOf.entrySet().stream().filter(e -> e.getValue().equals(shard))
                        .map(Map.Entry::getKey).findFirst().orElse(null);
                throw new CheckpointException(Reason.MISSING_SHARD, shard, tensor,
                        "shard named by " + index.getFileName() + (Files.exists(shard)
                                ? " is not a regular file (a pipe, device or socket cannot hold a checkpoint)"
                                : " does not exist"));
            }
        }
        LOG.debug("Index {}: {} tensors in {} shards", index, shardOf.size(), shards.size());
        return new Checkpoint(index, Collections.unmodifiableMap(shardOf), List.copyOf(shards),
                Collections.unmodifiableMap(metadata));
    }

    /** The file or index this checkpoint was opened from. */
    public Path source() {
        return source;
    }

    /** The shard holding {@code name}, opened (header read, validated against the index) on first use. */
    private TensorFile shardFile(Path shard) {
        if (closed) {
            throw new IllegalStateException("checkpoint " + source + " is closed");
        }
        return opened.computeIfAbsent(shard, p -> {
            TensorFile f = openFile(p);
            for (Map.Entry<String, Path> e : shardOf.entrySet()) {
                if (e.getValue().equals(p) && !f.contains(e.getKey())) {
                    f.close();
                    throw new CheckpointException(Reason.MISSING_TENSOR, p, e.getKey(),
                            "the index places the tensor in this shard but the shard does not hold it");
                }
            }
            return f;
        });
    }

    /** Every tensor, shard by shard in index order and in file order inside each shard; reads headers only. */
    public List<TensorInfo> tensors() {
        List<TensorInfo> all = new ArrayList<>(shardOf.size());
        for (Path shard : shards) {
            for (TensorInfo t : shardFile(shard).tensors()) {
                if (shard.equals(shardOf.get(t.name()))) {
                    all.add(t);
                }
            }
        }
        return all;
    }

    /** Every tensor name, in index (or file) order. Reads nothing. */
    public Set<String> names() {
        return Collections.unmodifiableSet(shardOf.keySet());
    }

    public boolean contains(String name) {
        return shardOf.containsKey(name);
    }

    /**
     * What the checkpoint says about {@code name}.
     *
     * @throws CheckpointException with {@link Reason#MISSING_TENSOR} when there is no such tensor
     */
    public TensorInfo info(String name) {
        return shardFile(shardOf(name)).info(name);
    }

    /** The values of {@code name}: a CPU view of the mapped shard where possible (see {@link TensorFile#load}). */
    public Tensor load(String name) {
        return shardFile(shardOf(name)).load(name);
    }

    /**
     * The file holding {@code name}.
     *
     * @throws CheckpointException with {@link Reason#MISSING_TENSOR} when there is no such tensor
     */
    public Path shardOf(String name) {
        Path shard = shardOf.get(name);
        if (shard == null) {
            throw new CheckpointException(Reason.MISSING_TENSOR, source, name, "no such tensor in the checkpoint");
        }
        return shard;
    }

    /** Every file of the checkpoint, in index order. */
    public List<Path> shards() {
        return shards;
    }

    /** Total bytes of all tensors (from the headers). */
    public long totalBytes() {
        long total = 0;
        for (TensorInfo t : tensors()) {
            total += t.byteLength();
        }
        return total;
    }

    /** The single file's header metadata, or the index's {@code metadata} object; empty for a flat index. */
    public Map<String, String> metadata() {
        return metadata;
    }

    /** Closes every shard opened; tensors loaded earlier stay valid. */
    @Override
    public void close() {
        closed = true;
        for (TensorFile f : opened.values()) {
            f.close();
        }
        opened.clear();
    }

    @Override
    public String toString() {
        return "Checkpoint[" + source + ", " + shardOf.size() + " tensors in " + shards.size() + " files]";
    }
}
