package io.github.bigmodel.chatglm;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.testing.ReferenceTree;
import io.github.bigmodel.dispatch.BigModel;
import io.github.bigmodel.dispatch.DispatchOptions;
import io.github.bigmodel.dispatch.DispatchedModel;
import io.github.bigmodel.safetensors.SafetensorsFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;
import org.junit.jupiter.api.io.TempDir;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.chatglm.model.ForwardInput;
import io.github.bigmodel.chatglm.generation.GenerationRequest;
import io.github.bigmodel.chatglm.generation.GenerationResult;
import io.github.bigmodel.chatglm.generation.Generator;

/**
 * The reference models run under dispatch's device maps: built on meta, loaded by BigModel one tensor at a time, with
 * blocks on the CPU and on disk (read in place from safetensors, or through an offload folder when converting), with
 * and without prefetch. Forward logits match the official ones and greedy generation (KV cache across offloaded
 * layers) gives the official ids.
 */
class DispatchedChatGLMTest {

    @TempDir
    static Path offloadRoot;

    record Setting(String name, String deviceMapOrNull, String strategyOrNull, String maxMemoryOrNull, int prefetch,
            String checkpointFile) {
    }

    private static List<Setting> settings(boolean v1) {
        String blocks = v1 ? "transformer.layers" : "transformer.encoder.layers";
        String head = v1 ? "\"lm_head\": \"cpu\"" : "\"transformer.output_layer\": \"disk\"";
        String front = v1 ? "\"transformer.word_embeddings\": \"cpu\""
                : "\"transformer.embedding\": \"cpu\", \"transformer.rotary_pos_emb\": \"cpu\"";
        String norm = v1 ? "\"transformer.final_layernorm\": \"disk\"" : "\"transformer.encoder.final_layernorm\": \"disk\"";
        String map = "{" + front + ", \"" + blocks + ".0\": \"cpu\", \"" + blocks + ".1\": \"disk\", " + norm + ", "
                + head + "}";
        return List.of(
                new Setting("all-cpu", "{\"\": \"cpu\"}", null, null, 0, "model.safetensors"),
                new Setting("cpu+disk-in-place", map, null, null, 0, "model.safetensors"),
                new Setting("cpu+disk-prefetch", map, null, null, 1, "model.safetensors.index.json"),
                new Setting("cpu+disk-from-bin-shards", map, null, null, 1, "pytorch_model.bin.index.json"),
                new Setting("sequential-small-cpu-budget", null, "sequential", "cpu=200KB", 1, "model.safetensors"));
    }

    @TestFactory
    Stream<DynamicTest> referenceModelsUnderDeviceMaps() throws Exception {
        List<DynamicTest> tests = new ArrayList<>();
        for (String model : new String[] {"chatglm3-6b-tiny", "chatglm-6b-tiny"}) {
            Path folder = ReferenceTree.models().resolve(model);
            for (Setting s : settings(model.startsWith("chatglm-6b"))) {
                tests.add(DynamicTest.dynamicTest(model + "/" + s.name(), () -> check(folder, s)));
            }
        }
        return tests.stream();
    }

    private static void check(Path folder, Setting s) throws Exception {
        JsonNode cases = new ObjectMapper().readTree(folder.resolve("expected.json").toFile()).get("cases");
        double tol = folder.getFileName().toString().startsWith("chatglm-6b") ? 2e-4 : 1e-4;
        ChatGLMLanguageModel model = ChatGLMLanguageModel.create(ChatGLMConfig.fromJson(folder.resolve("config.json")),
                DType.FLOAT32);
        DispatchOptions.Builder options = DispatchOptions.builder().prefetch(s.prefetch())
                .offloadFolder(Files.createTempDirectory(offloadRoot, "offload"))
                .noSplitModuleClasses("GLMBlock");
        if (s.deviceMapOrNull() != null) {
            options.deviceMap(s.deviceMapOrNull());
        } else {
            options.strategy(s.strategyOrNull()).maxMemory(s.maxMemoryOrNull());
        }
        try (DispatchedModel<ChatGLMLanguageModel> dispatched = BigModel.loadCheckpointAndDispatch(model,
                folder.resolve(s.checkpointFile()), options.build());
             SafetensorsFile expected = SafetensorsFile.open(folder.resolve("expected.safetensors"))) {
            if (!s.name().equals("all-cpu")) {
                assertThat(dispatched.hfDeviceMap().devices()).contains(Device.DISK);
            }
            int checkedForward = 0;
            int checkedGreedy = 0;
            for (JsonNode c : cases) {
                String kind = c.get("kind").asText();
                if (kind.equals("forward")) {
                    long[] ids = longs(c.get("input_ids"));
                    try (PointerScope scope = new PointerScope()) {
                        Tensor logits = model.forward(ForwardInput.builder(new long[][] {ids}).build());
                        Tensor want = expected.load(c.get("tensors").get("logits").asText());
                        assertThat(logits.sub(want).abs().max().item_double()).as(c.get("name").asText())
                                .isLessThanOrEqualTo(tol);
                    }
                    checkedForward++;
                } else if (kind.equals("greedy")) {
                    long[] prompt = longs(c.get("prompt_ids"));
                    long[] wantNew = longs(c.get("new_ids"));
                    try (PointerScope scope = new PointerScope()) {
                        GenerationResult r = new Generator(model).generate(GenerationRequest
                                .builder(new long[][] {prompt}).maxNewTokens(wantNew.length).stopAtEos(false).build());
                        assertThat(r.newIds()[0]).as(c.get("name").asText()).containsExactly(wantNew);
                    }
                    checkedGreedy++;
                }
            }
            assertThat(checkedForward).isPositive();
            assertThat(checkedGreedy).isPositive();
        }
    }

    private static long[] longs(JsonNode array) {
        long[] out = new long[array.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = array.get(i).asLong();
        }
        return out;
    }
}
