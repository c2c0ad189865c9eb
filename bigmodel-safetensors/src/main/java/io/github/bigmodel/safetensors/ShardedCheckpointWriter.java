package io.github.bigmodel.safetensors;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import org.bytedeco.pytorch.Tensor;

/**
 * Writes a checkpoint split into safetensors shards of at most a given size, with the
 * {@code model.safetensors.index.json} that Hugging Face loaders (and {@link Checkpoint}) read, streaming tensor by
 * tensor like {@link SafetensorsWriter}.
 *
 * <p>Shards are filled in declaration order and a new shard starts when the next tensor would push the current one
 * past the limit (a tensor larger than the limit gets a shard of its own). Files are named
 * {@code model-00001-of-00003.safetensors}; the index is written last, atomically, so a folder with an index always
 * has every shard it names.
 *
 * <pre>{@code
 * try (ShardedCheckpointWriter w = ShardedCheckpointWriter.create(dir, entries, 2_000_000_000L)) {
 *     for (SafetensorsWriter.Entry e : entries) w.write(e.name(), tensors.get(e.name()));
 * }
 * Checkpoint.open(dir);   // reads the index
 * }</pre>
 */
public final class ShardedCheckpointWriter implements AutoCloseable {

    /** The index file name Hugging Face uses for safetensors shards. */
    public static final String INDEX_FILE = "model.safetensors.index.json";

    private final Path directory;
    private final List<List<SafetensorsWriter.Entry>> shards;
    private final Map<String, Integer> shardOfName = new HashMap<>();
    private final Map<String, String> metadata;
    private final long totalBytes;
    private int current = -1;
    private SafetensorsWriter writer;
    private boolean closed;

    private ShardedCheckpointWriter(Path directory, List<List<SafetensorsWriter.Entry>> shards,
            Map<String, String> metadata, long totalBytes) {
        this.directory = directory;
        this.shards = shards;
        this.metadata = metadata;
        this.totalBytes = totalBytes;
        for (int i = 0; i < shards.size(); i++) {
            for (SafetensorsWriter.Entry e : shards.get(i)) {
                shardOfName.put(e.name(), i);
            }
        }
    }

    /**
     * Plans the shards and prepares to write into {@code directory} (created if needed).
     *
     * @param maxShardBytes the most data bytes per shard (a single larger tensor gets its own shard)
     */
    public static ShardedCheckpointWriter create(Path directory, List<SafetensorsWriter.Entry> entries,
            long maxShardBytes) {
        return create(directory, entries, maxShardBytes, Map.of("format", "pt"));
    }

    /** As {@link #create(Path, List, long)}, with the metadata every shard's header carries. */
    public static ShardedCheckpointWriter create(Path directory, List<SafetensorsWriter.Entry> entries,
            long maxShardBytes, Map<String, String> metadata) {
        if (maxShardBytes <= 0) {
            throw new IllegalArgumentException("maxShardBytes must be positive, got " + maxShardBytes);
        }
        if (entries.isEmpty()) {
            throw new IllegalArgumentException("a checkpoint needs at least one tensor");
        }
        List<List<SafetensorsWriter.Entry>> shards = new ArrayList<>();
        List<SafetensorsWriter.Entry> shard = new ArrayList<>();
        long shardBytes = 0;
        long total = 0;
        for (SafetensorsWriter.Entry e : entries) {
            if (!shard.isEmpty() && shardBytes + e.byteLength() > maxShardBytes) {
                shards.add(shard);
                shard = new ArrayList<>();
                shardBytes = 0;
            }
            shard.add(e);
            shardBytes += e.byteLength();
            total += e.byteLength();
        }
        shards.add(shard);
        try {
            Files.createDirectories(directory);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot create " + directory, e);
        }
        return new ShardedCheckpointWriter(directory, shards, Map.copyOf(metadata), total);
    }

    /** The number of shard files this checkpoint will have. */
    public int shardCount() {
        return shards.size();
    }

    /** The file name of shard {@code index} (0-based). */
    public String shardName(int index) {
        return String.format(Locale.ROOT, "model-%05d-of-%05d.safetensors", index + 1, shards.size());
    }

    /** Writes one tensor (entries in declaration order). */
    public void write(String name, Tensor tensor) {
        writerFor(name).write(name, tensor);
    }

    /** Writes raw little-endian bytes of one tensor, possibly in several chunks. */
    public void write(String name, ByteBuffer chunk) {
        writerFor(name).write(name, chunk);
    }

    private SafetensorsWriter writerFor(String name) {
        Integer shard = shardOfName.get(name);
        if (shard == null) {
            throw new IllegalArgumentException("'" + name + "' was not declared");
        }
        if (shard < current) {
            throw new IllegalStateException("'" + name + "' belongs to a shard already finished: write tensors in"
                    + " declaration order");
        }
        while (current < shard) {
            if (writer != null) {
                writer.close();
            }
            current++;
            writer = SafetensorsWriter.create(directory.resolve(shardName(current)), shards.get(current), metadata);
        }
        return writer;
    }

    /** Finishes the last shard and writes the index. Fails if a declared tensor was not written. */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        while (current < shards.size() - 1) {
            // Shards never started: SafetensorsWriter.close() reports their first missing tensor.
            if (writer != null) {
                writer.close();
            }
            current++;
            writer = SafetensorsWriter.create(directory.resolve(shardName(current)), shards.get(current), metadata);
        }
        writer.close();
        writeIndex();
    }

    private void writeIndex() {
        ObjectMapper json = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);
        ObjectNode root = json.createObjectNode();
        root.putObject("metadata").put("total_size", totalBytes);
        ObjectNode map = root.putObject("weight_map");
        Map<String, String> sorted = new LinkedHashMap<>();
        for (int i = 0; i < shards.size(); i++) {
            for (SafetensorsWriter.Entry e : shards.get(i)) {
                sorted.put(e.name(), shardName(i));
            }
        }
        sorted.forEach(map::put);
        Path tmp = directory.resolve(INDEX_FILE + ".tmp");
        try {
            json.writeValue(tmp.toFile(), root);
            Files.move(tmp, directory.resolve(INDEX_FILE), StandardCopyOption.ATOMIC_MOVE,
                    StandardCopyOption.REPLACE_EXISTING);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write " + directory.resolve(INDEX_FILE), e);
        }
    }
}
