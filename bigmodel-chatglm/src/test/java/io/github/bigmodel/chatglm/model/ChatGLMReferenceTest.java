package io.github.bigmodel.chatglm.model;

import static org.assertj.core.api.Assertions.assertThat;

import io.github.bigmodel.safetensors.Checkpoint;
import io.github.bigmodel.safetensors.SafetensorsFile;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.testing.ReferenceTree;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;
import io.github.bigmodel.chatglm.generation.GenerationRequest;
import io.github.bigmodel.chatglm.generation.GenerationResult;
import io.github.bigmodel.chatglm.generation.Generator;
import io.github.bigmodel.chatglm.internal.Ops;
import io.github.bigmodel.chatglm.ChatGLMConfig;

/**
 * Every case of every tiny reference model (official THUDM code, float32 on CPU): forward logits, KV-cache steps,
 * greedy ids and padded batches, number for number.
 */
// PointerScope blocks are used for what they release on close, not referenced by name.
@SuppressWarnings("try")
class ChatGLMReferenceTest {

    private static final ObjectMapper JSON = new ObjectMapper();
    private static final org.slf4j.Logger LOG = org.slf4j.LoggerFactory.getLogger(ChatGLMReferenceTest.class);
    private static final Map<Path, ChatGLMLanguageModel> MODELS = new HashMap<>();

    @AfterAll
    static void release() {
        MODELS.values().forEach(ChatGLMLanguageModel::toMeta);
        MODELS.clear();
    }

    @TestFactory
    Stream<DynamicTest> referenceCases() throws IOException {
        List<Path> folders;
        try (Stream<Path> s = Files.list(ReferenceTree.models())) {
            folders = s.filter(p -> Files.isRegularFile(p.resolve("expected.json"))).sorted()
                    .collect(Collectors.toList());
        }
        assertThat(folders).as("reference model folders").isNotEmpty();
        List<DynamicTest> tests = new ArrayList<>();
        for (Path folder : folders) {
            JsonNode expected = JSON.readTree(folder.resolve("expected.json").toFile());
            for (JsonNode c : expected.get("cases")) {
                String name = folder.getFileName() + "/" + c.get("name").asText();
                tests.add(DynamicTest.dynamicTest(name, () -> runCase(folder, c)));
            }
        }
        return tests.stream();
    }

    private static synchronized ChatGLMLanguageModel model(Path folder) throws IOException {
        ChatGLMLanguageModel m = MODELS.get(folder);
        if (m == null) {
            ChatGLMConfig config = ChatGLMConfig.fromJson(folder.resolve("config.json"));
            // The fixtures were computed in float32 from the stored (possibly rounded) weights.
            m = ChatGLMLanguageModel.create(config, DType.FLOAT32);
            // Checkpoint.open(folder) prefers the sharded safetensors index where the folder has one.
            try (Checkpoint st = Checkpoint.open(folder)) {
                m.loadWeights(st::load, Device.CPU, DType.FLOAT32);
            }
            MODELS.put(folder, m);
        }
        return m;
    }

    private static double tolerance(Path folder) {
        return folder.getFileName().toString().startsWith("chatglm-6b") ? 2e-4 : 1e-4;
    }

    private static void runCase(Path folder, JsonNode c) throws IOException {
        ChatGLMLanguageModel model = model(folder);
        double tol = tolerance(folder);
        try (SafetensorsFile expected = SafetensorsFile.open(folder.resolve("expected.safetensors"));
             PointerScope scope = new PointerScope()) {
            switch (c.get("kind").asText()) {
                case "forward":
                    forwardCase(model, c, expected, tol);
                    break;
                case "kv_cache":
                    kvCase(model, c, expected, tol);
                    break;
                case "greedy":
                    greedyCase(model, c, expected, tol);
                    break;
                case "batch":
                    batchCase(model, c, expected, tol);
                    break;
                default:
                    throw new AssertionError("Unknown case kind " + c.get("kind"));
            }
        }
    }

    private static boolean isV1(ChatGLMLanguageModel model) {
        return model.config().version() == ChatGLMConfig.Version.CHATGLM_6B;
    }

    private static void forwardCase(ChatGLMLanguageModel model, JsonNode c, SafetensorsFile expected, double tol) {
        long[][] ids = new long[][] {longs(c.get("input_ids"))};
        JsonNode names = c.get("tensors");
        if (isV1(model)) {
            // The positions and the prefix mask the model builds for itself are the official ones.
            assertThat(Ops.longs(ChatGLM6BForConditionalGeneration.positionIds(ids, model.config())))
                    .containsExactly(Ops.longs(expected.load(names.get("position_ids").asText())));
            assertThat(Ops.longs(ChatGLM6BForConditionalGeneration.prefixMask(ids, model.config())))
                    .containsExactly(Ops.longs(expected.load(names.get("attention_mask").asText())));
        }
        Tensor logits = model.forward(ForwardInput.builder(ids).build());
        assertClose(logits, expected.load(names.get("logits").asText()), tol, "logits");
    }

    private static void kvCase(ChatGLMLanguageModel model, JsonNode c, SafetensorsFile expected, double tol) {
        JsonNode names = c.get("tensors");
        long[] prefix = longs(c.get("prefix_ids"));
        long[] full = longs(c.get("full_ids"));
        try (KvCache cache = model.newCache(1, full.length)) {
            ForwardInput.Builder first = ForwardInput.builder(new long[][] {prefix}).cache(cache);
            if (c.has("prefix_position_ids")) {
                first.positionIds(Ops.longTensor(longs(c.get("prefix_position_ids")), 1, prefix.length));
            }
            assertClose(model.forward(first.build()), expected.load(names.get("prefix_logits").asText()), tol,
                    "prefix logits");
            assertThat(cache.length()).isEqualTo(prefix.length);
            assertClose(cache.keys(0), expected.load(names.get("prefix_layer0_key").asText()), 1e-4, "layer 0 keys");
            assertClose(cache.values(0), expected.load(names.get("prefix_layer0_value").asText()), 1e-4,
                    "layer 0 values");
            for (JsonNode step : c.get("steps")) {
                long[] ids = longs(step.get("input_ids"));
                JsonNode pos = step.get("position_ids");
                Tensor positions = isV1(model)
                        ? Ops.longTensor(new long[] {pos.get(0).get(0).asLong(), pos.get(1).get(0).asLong()}, 1, 2, 1)
                        : Ops.longTensor(longs(pos), 1, ids.length);
                Tensor logits = model.forward(ForwardInput.builder(new long[][] {ids}).cache(cache)
                        .positionIds(positions).build());
                assertClose(logits, expected.load(step.get("logits").asText()), tol, "step logits");
            }
            assertThat(cache.length()).isEqualTo(full.length);
        }
        Tensor fullLogits = model.forward(ForwardInput.builder(new long[][] {full}).build());
        assertClose(fullLogits, expected.load(names.get("full_logits").asText()), tol, "full logits");
    }

    private static void greedyCase(ChatGLMLanguageModel model, JsonNode c, SafetensorsFile expected, double tol) {
        long[] prompt = longs(c.get("prompt_ids"));
        int n = c.get("max_new_tokens").asInt();
        GenerationResult r = new Generator(model).generate(GenerationRequest.builder(new long[][] {prompt})
                .maxNewTokens(n).stopAtEos(false).keepStepScores(true).build());
        JsonNode names = c.get("tensors");
        assertThat(r.newIds()[0]).containsExactly(longs(c.get("new_ids")));
        assertThat(r.outputIds()[0]).containsExactly(Ops.longs(expected.load(names.get("output_ids").asText())));
        assertCloseArrays(r.stepScores(), expected.load(names.get("step_logits").asText()), tol, "step logits");
    }

    private static void batchCase(ChatGLMLanguageModel model, JsonNode c, SafetensorsFile expected, double tol) {
        JsonNode names = c.get("tensors");
        long[][] ids = Ops.rows(expected.load(names.get("input_ids").asText()));
        int batch = ids.length;
        int len = ids[0].length;
        boolean[][] real = new boolean[batch][len];
        for (int b = 0; b < batch; b++) {
            int n = c.get("unpadded_ids").get(b).size();
            for (int i = len - n; i < len; i++) {
                real[b][i] = true;
            }
        }
        Tensor positions = expected.load(names.get("position_ids").asText());
        ForwardInput.Builder in = ForwardInput.builder(ids).positionIds(positions);
        GenerationRequest.Builder gen = GenerationRequest.builder(ids).positionIds(positions);
        if (isV1(model)) {
            Tensor mask = expected.load(names.get("attention_mask").asText()).to(ScalarType.Bool);
            in.attentionMask(mask);
            gen.attentionMask(mask);
        } else {
            Tensor padding = expected.load(names.get("attention_mask").asText());
            in.paddingMask(padding);
            gen.paddingMask(padding);
            // The mask the model builds from the padding is the one the official model handed its layers.
            assertThat(Ops.longs(ChatGLM2ForConditionalGeneration.officialMask(padding, len, 0)))
                    .containsExactly(Ops.longs(expected.load(names.get("full_attention_mask").asText())));
        }
        float[] logits = Ops.floats(model.forward(in.build()));
        float[] want = Ops.floats(expected.load(names.get("logits").asText()));
        int vocab = logits.length / (batch * len);
        double worst = 0;
        for (int b = 0; b < batch; b++) {
            for (int i = 0; i < len; i++) {
                if (!real[b][i]) {
                    continue;
                }
                for (int v = 0; v < vocab; v++) {
                    int k = (b * len + i) * vocab + v;
                    worst = Math.max(worst, Math.abs(logits[k] - want[k]));
                }
            }
        }
        LOG.info("max |diff| of batch logits at real positions: {}", worst);
        assertThat(worst).as("max |diff| of batch logits at real positions").isLessThanOrEqualTo(tol);

        int n = c.get("greedy_new_tokens").asInt();
        GenerationResult r = new Generator(model).generate(gen.maxNewTokens(n).stopAtEos(false)
                .keepStepScores(true).build());
        long[] wantIds = Ops.longs(expected.load(names.get("greedy_output_ids").asText()));
        long[] gotIds = new long[wantIds.length];
        for (int b = 0; b < batch; b++) {
            System.arraycopy(r.outputIds()[b], 0, gotIds, b * (len + n), len + n);
            assertThat(r.newIds()[b]).containsExactly(longs(c.get("greedy_new_ids").get(b)));
        }
        assertThat(gotIds).containsExactly(wantIds);
        assertCloseArrays(r.stepScores(), expected.load(names.get("greedy_step_logits").asText()), tol,
                "batch greedy step logits");
    }

    private static long[] longs(JsonNode array) {
        long[] out = new long[array.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = array.get(i).asLong();
        }
        return out;
    }

    private static void assertClose(Tensor actual, Tensor expected, double tol, String what) {
        assertThat(io.github.bigmodel.core.Tensors.shape(actual)).as(what + " shape")
                .containsExactly(io.github.bigmodel.core.Tensors.shape(expected));
        float[] a = Ops.floats(actual);
        float[] e = Ops.floats(expected);
        double worst = 0;
        for (int i = 0; i < a.length; i++) {
            worst = Math.max(worst, Math.abs(a[i] - e[i]));
        }
        LOG.info("max |diff| of {}: {}", what, worst);
        assertThat(worst).as("max |diff| of " + what).isLessThanOrEqualTo(tol);
    }

    private static void assertCloseArrays(float[][][] actual, Tensor expected, double tol, String what) {
        long[] shape = io.github.bigmodel.core.Tensors.shape(expected);
        float[] e = Ops.floats(expected);
        assertThat(actual.length).as(what + " rows").isEqualTo(shape[0]);
        double worst = 0;
        for (int b = 0; b < actual.length; b++) {
            assertThat(actual[b].length).as(what + " steps").isEqualTo(shape[1]);
            for (int s = 0; s < actual[b].length; s++) {
                for (int v = 0; v < shape[2]; v++) {
                    float want = e[(int) ((b * shape[1] + s) * shape[2] + v)];
                    worst = Math.max(worst, Math.abs(actual[b][s][v] - want));
                }
            }
        }
        LOG.info("max |diff| of {}: {}", what, worst);
        assertThat(worst).as("max |diff| of " + what).isLessThanOrEqualTo(tol);
    }
}
