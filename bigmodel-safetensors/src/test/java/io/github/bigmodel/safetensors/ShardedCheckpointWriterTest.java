package io.github.bigmodel.safetensors;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.github.bigmodel.core.DType;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class ShardedCheckpointWriterTest {

    @TempDir
    Path dir;

    private static Map<String, Tensor> tensors() {
        torch.manual_seed(3);
        Map<String, Tensor> t = new LinkedHashMap<>();
        t.put("embed.weight", torch.randn(64, 16));            // 4096 B
        t.put("layers.0.weight", torch.randn(32, 16));         // 2048 B
        t.put("layers.1.weight", torch.randn(32, 16));         // 2048 B
        t.put("big.weight", torch.randn(256, 16));             // 16384 B: larger than a shard
        t.put("steps", torch.arange(new org.bytedeco.pytorch.Scalar(5)));  // int64
        return t;
    }

    @Test
    void shardsByLimitAndReadsBackThroughTheIndex() throws Exception {
        Map<String, Tensor> tensors = tensors();
        List<SafetensorsWriter.Entry> entries = new ArrayList<>();
        tensors.forEach((n, t) -> entries.add(SafetensorsWriter.Entry.of(n, DType.of(t.scalar_type()),
                t.sizes().vec().get())));
        try (ShardedCheckpointWriter w = ShardedCheckpointWriter.create(dir, entries, 6144)) {
            assertThat(w.shardCount()).isEqualTo(4); // [embed, layers.0] [layers.1] [big] [steps]
            tensors.forEach(w::write);
        }
        JsonNode index = new ObjectMapper().readTree(dir.resolve(ShardedCheckpointWriter.INDEX_FILE).toFile());
        assertThat(index.path("metadata").path("total_size").asLong()).isEqualTo(4096 + 2048 + 2048 + 16384 + 40);
        assertThat(index.path("weight_map").path("big.weight").asText()).isEqualTo("model-00003-of-00004.safetensors");
        assertThat(index.path("weight_map").path("steps").asText()).isEqualTo("model-00004-of-00004.safetensors");
        try (Checkpoint ckpt = Checkpoint.open(dir)) {
            assertThat(ckpt.shards()).hasSize(4);
            for (Map.Entry<String, Tensor> e : tensors.entrySet()) {
                try (Tensor back = ckpt.load(e.getKey())) {
                    assertThat(torch.equal(back, e.getValue())).as(e.getKey()).isTrue();
                }
            }
        }
    }

    @Test
    void missingTensorFailsAndLeavesNoIndex() {
        Map<String, Tensor> tensors = tensors();
        List<SafetensorsWriter.Entry> entries = new ArrayList<>();
        tensors.forEach((n, t) -> entries.add(SafetensorsWriter.Entry.of(n, DType.of(t.scalar_type()),
                t.sizes().vec().get())));
        ShardedCheckpointWriter w = ShardedCheckpointWriter.create(dir, entries, 1 << 20);
        w.write("embed.weight", tensors.get("embed.weight"));
        assertThatThrownBy(w::close).hasMessageContaining("layers.0.weight");
        assertThat(Files.exists(dir.resolve(ShardedCheckpointWriter.INDEX_FILE))).isFalse();
        assertThatThrownBy(() -> ShardedCheckpointWriter.create(dir, entries, 0))
                .isInstanceOf(IllegalArgumentException.class);
    }
}
