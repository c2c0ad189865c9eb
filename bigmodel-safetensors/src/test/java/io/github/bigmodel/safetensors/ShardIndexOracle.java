package io.github.bigmodel.safetensors;

import static org.assertj.core.api.Assertions.assertThat;

import io.github.bigmodel.core.testing.ReferenceTree;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import org.bytedeco.pytorch.Tensor;

/**
 * The only two outcomes {@link Checkpoint#open} may have for any bytes of a shard index placed beside real shards
 * (the chatglm-6b-tiny reference checkpoint, in both the safetensors and the torch .bin form): a checkpoint whose
 * names, shards and tensors agree, or a {@link CheckpointException}. Anything else (InvalidPathException,
 * NullPointerException, ClassCastException, ...) is a finding.
 */
final class ShardIndexOracle {

    static final String SAFETENSORS_INDEX = "model.safetensors.index.json";
    static final String BIN_INDEX = "pytorch_model.bin.index.json";
    static final String FLAT_INDEX = "index.json";

    private ShardIndexOracle() {
    }

    /** The reference model whose shards the oracle opens indexes against. */
    static Path model() {
        return ReferenceTree.model("chatglm-6b-tiny");
    }

    /** Copies the reference shards of chatglm-6b-tiny (both forms, however many the tree has) into {@code dir}. */
    static void prepareShards(Path dir) {
        Path model = model();
        try {
            List<Path> shards = new java.util.ArrayList<>(ReferenceTree.shards(model, "model", ".safetensors"));
            shards.addAll(ReferenceTree.shards(model, "pytorch_model", ".bin"));
            for (Path shard : shards) {
                Files.copy(shard, dir.resolve(shard.getFileName()), StandardCopyOption.REPLACE_EXISTING);
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /**
     * Writes {@code data} as {@code indexName} into {@code dir} (which holds the shards) and opens it; returns
     * whether it was accepted. Anything but a CheckpointException fails the caller.
     */
    static boolean check(Path dir, String indexName, byte[] data) {
        Path index = dir.resolve(indexName);
        try {
            Files.write(index, data);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        try (Checkpoint c = Checkpoint.open(index)) {
            Path root = dir.toAbsolutePath().normalize();
            for (Path shard : c.shards()) {
                assertThat(shard.toAbsolutePath().normalize().startsWith(root)).as("shard %s inside %s", shard, root)
                        .isTrue();
            }
            assertThat(c.metadata()).isNotNull();
            List<TensorInfo> tensors = c.tensors();
            Set<String> listed = new HashSet<>();
            for (TensorInfo t : tensors) {
                assertThat(listed.add(t.name())).as("tensor %s listed once", t.name()).isTrue();
            }
            assertThat(listed).isEqualTo(c.names());
            for (String name : c.names()) {
                assertThat(c.info(name).name()).isEqualTo(name);
                assertThat(c.shards()).contains(c.shardOf(name));
            }
            if (!tensors.isEmpty()) {
                TensorInfo first = tensors.get(0);
                try (Tensor x = c.load(first.name())) {
                    assertThat(x.nbytes()).isEqualTo(first.byteLength());
                }
            }
            return true;
        } catch (CheckpointException e) {
            assertThat(e.reason()).isNotNull();
            assertThat(e.getMessage()).isNotBlank();
            return false;
        }
    }
}
