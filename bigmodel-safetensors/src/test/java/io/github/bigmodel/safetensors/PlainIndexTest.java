package io.github.bigmodel.safetensors;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.github.bigmodel.core.testing.ReferenceTree;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Iterator;
import java.util.Map;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The seed documents' plain {@code index.json} ({@code {"linear1.weight": "first_state_dict.bin", ...}}, a flat
 * name-to-file map) over torch .bin shards: found in a folder that has nothing else, and read like the official
 * index.
 */
class PlainIndexTest {

    @Test
    void flatIndexOverBinShardsReadsEveryTensor(@TempDir Path dir) throws Exception {
        Path model = ReferenceTree.models().resolve("chatglm-6b-tiny");
        ObjectMapper json = new ObjectMapper();
        JsonNode official = json.readTree(model.resolve("pytorch_model.bin.index.json").toFile());
        ObjectNode flat = json.createObjectNode();
        Iterator<Map.Entry<String, JsonNode>> it = official.get("weight_map").fields();
        while (it.hasNext()) {
            Map.Entry<String, JsonNode> e = it.next();
            String renamed = e.getValue().asText().replace("pytorch_model-", "state_dict_");
            flat.put(e.getKey(), renamed);
            if (!Files.exists(dir.resolve(renamed))) {
                Files.copy(model.resolve(e.getValue().asText()), dir.resolve(renamed));
            }
        }
        Files.writeString(dir.resolve("index.json"), json.writeValueAsString(flat));

        try (Checkpoint plain = Checkpoint.open(dir); Checkpoint single = Checkpoint.open(model.resolve("model.safetensors"))) {
            assertThat(plain.names()).isEqualTo(single.names());
            assertThat(plain.shards()).hasSize(ReferenceTree.shards(model, "pytorch_model", ".bin").size());
            for (String name : single.names()) {
                try (Tensor a = plain.load(name); Tensor b = single.load(name)) {
                    assertThat(torch.equal(a, b)).as(name).isTrue();
                }
                assertThat(plain.shardOf(name).getFileName().toString()).startsWith("state_dict_");
            }
        }
    }
}
