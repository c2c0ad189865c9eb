package io.github.bigmodel.cli;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.github.bigmodel.chatglm.ChatGLMConfig;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.Module;
import io.github.bigmodel.core.ModuleList;
import io.github.bigmodel.core.testing.ReferenceTree;
import io.github.bigmodel.safetensors.SafetensorsFile;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.dispatch.plan.PlanOptions;
import io.github.bigmodel.dispatch.plan.MaxMemory;
import io.github.bigmodel.dispatch.plan.DeviceMapPlanner;
import io.github.bigmodel.dispatch.plan.DeviceMap;

/**
 * {@code generate --max-memory cpu=...} with a budget that leaves the CPU little more than the embedding, so every
 * block goes to disk through the offload folder (bfloat16 from a float32 checkpoint: a conversion): the logits and
 * greedy ids are bit-identical to the in-memory bfloat16 run. Regression for the first token failing with a null
 * device once {@code transformer.encoder} was planned onto disk whole.
 */
class GenerateOffloadedCommandTest {

    private static final ObjectMapper JSON = new ObjectMapper();

    @Test
    void tightBudgetPutsTheBlocksOnDiskAndChangesNoBit(@TempDir Path dir) throws Exception {
        Path folder = ReferenceTree.models().resolve("chatglm3-6b-tiny");
        ChatGLMConfig config = ChatGLMConfig.fromJson(folder.resolve("config.json"));
        JsonNode greedy = null;
        for (JsonNode c : JSON.readTree(folder.resolve("expected.json").toFile()).get("cases")) {
            if (c.get("kind").asText().equals("greedy")) {
                greedy = c;
                break;
            }
        }
        assertThat(greedy).as("a greedy case in expected.json").isNotNull();
        List<String> ids = new ArrayList<>();
        greedy.get("prompt_ids").forEach(n -> ids.add(n.asText()));
        String tokens = Integer.toString(greedy.get("new_ids").size());

        long budget = tightestBudgetKeepingSomethingOnCpu(config);
        Path offload = dir.resolve("offload");
        CliTest.Run inMemory = CliTest.run("generate", "--model", folder.toString(), "--ids", String.join(",", ids),
                "--dtype", "bfloat16", "--greedy", "--ignore-eos", "--max-new-tokens", tokens, "--json",
                "--dump-logits", dir.resolve("memory.safetensors").toString());
        CliTest.Run offloaded = CliTest.run("generate", "--model", folder.toString(), "--ids",
                String.join(",", ids), "--dtype", "bfloat16", "--greedy", "--ignore-eos", "--max-new-tokens", tokens,
                "--json", "--max-memory", "cpu=" + budget, "--offload-folder", offload.toString(),
                "--dump-logits", dir.resolve("offloaded.safetensors").toString());
        assertThat(inMemory.code()).as(inMemory.err()).isZero();
        assertThat(offloaded.code()).as(offloaded.err()).isZero();
        assertThat(offloaded.json().get("output_ids")).isEqualTo(inMemory.json().get("output_ids"));
        assertThat(offloaded.json().get("output_ids")).hasSize(greedy.get("new_ids").size());
        try (SafetensorsFile a = SafetensorsFile.open(dir.resolve("memory.safetensors"));
             SafetensorsFile b = SafetensorsFile.open(dir.resolve("offloaded.safetensors"));
             PointerScope scope = new PointerScope()) {
            assertThat(torch.equal(a.load("logits"), b.load("logits"))).as("bit-identical logits").isTrue();
        }
        // Every block's weights went through the offload folder.
        JsonNode index = JSON.readTree(offload.resolve("index.json").toFile());
        String lastBlock = blocksPath(ChatGLMLanguageModel.create(config, DType.BFLOAT16), config.numLayers()) + "."
                + (config.numLayers() - 1) + ".";
        assertThat(index.fieldNames()).toIterable().anyMatch(n -> n.startsWith(lastBlock));
    }

    /**
     * The smallest CPU budget (in 1/64 steps of the model) whose auto plan keeps something on the CPU: the
     * embedding there, every block on disk.
     */
    private static long tightestBudgetKeepingSomethingOnCpu(ChatGLMConfig config) {
        ChatGLMLanguageModel meta = ChatGLMLanguageModel.create(config, DType.BFLOAT16);
        String blocks = blocksPath(meta, config.numLayers());
        PlanOptions options = PlanOptions.builder().dtype(DType.BFLOAT16).build(); // the model's no-split classes
        long whole = meta.byteSize();
        for (int k = 1; k <= 64; k++) {
            long budget = whole * k / 64;
            DeviceMap map = DeviceMapPlanner.plan(meta, "auto", MaxMemory.parse("cpu=" + budget), options)
                    .deviceMap();
            if (map.devices().contains(Device.CPU)) {
                for (int i = 0; i < config.numLayers(); i++) {
                    assertThat(map.deviceOf(blocks + "." + i)).as(budget + " bytes: " + map.toJson())
                            .isEqualTo(Device.DISK);
                }
                return budget;
            }
        }
        throw new AssertionError("No budget below the model's size keeps anything on the CPU");
    }

    private static String blocksPath(Module model, int layers) {
        return model.namedModules().entrySet().stream()
                .filter(e -> e.getValue() instanceof ModuleList && e.getValue().children().size() == layers)
                .map(Map.Entry::getKey).findFirst().orElseThrow();
    }
}
