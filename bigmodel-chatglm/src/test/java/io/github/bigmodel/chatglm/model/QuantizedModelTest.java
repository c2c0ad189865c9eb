package io.github.bigmodel.chatglm.model;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.Module;
import io.github.bigmodel.core.quant.Precision;
import io.github.bigmodel.core.quant.QuantizedLinear;
import io.github.bigmodel.core.quant.QuantizedWeight;
import io.github.bigmodel.core.testing.KernelAllowance;
import io.github.bigmodel.core.testing.ReferenceTree;
import io.github.bigmodel.dispatch.plan.ModuleSizes;
import io.github.bigmodel.safetensors.Checkpoint;
import io.github.bigmodel.safetensors.SafetensorsFile;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestFactory;
import org.junit.jupiter.api.io.TempDir;
import io.github.bigmodel.chatglm.internal.Ops;
import io.github.bigmodel.chatglm.ChatGLMConfig;
import io.github.bigmodel.chatglm.ChatGLMConfigException;

/**
 * int8 and int4 weight-only quantization of the tiny reference models, loading of quantized checkpoints, the
 * quantized writer's round trip and memory planning.
 *
 * <p>The quantized forward is checked against the recipe, not against a bound fitted to one tree: this test
 * implements THUDM's {@code quantize(bits)} itself (per output row {@code scale = max|w| / (2^(bits-1) - 1)},
 * {@code codes = round(w / scale)} half to even, for the four linear layers of every block), loads a float32 model
 * with {@code codes * scale} as those weights, and requires the quantized model's logits to equal that model's
 * within float32 rounding ({@value #RECIPE_TOLERANCE} of the largest logit; more where the native kernels round a
 * linear's input to int16, see {@link #recipeTolerance}). THUDM's two files differ in one point
 * that matters for these float32 weights: ChatGLM2/3's keeps the scale in the weight's dtype, ChatGLM-6B's rounds it
 * to half; the quantized model must match one of the two. How far the recipe itself is from the official float32
 * logits depends on the weights and is only logged (figures in docs/quantization.md).
 */
// PointerScope blocks are used for what they release on close, not referenced by name.
@SuppressWarnings("try")
class QuantizedModelTest {

    private static final org.slf4j.Logger LOG = org.slf4j.LoggerFactory.getLogger(QuantizedModelTest.class);
    private static final ObjectMapper JSON = new ObjectMapper();
    /**
     * Quantized model vs the in-test recipe, relative to the largest logit: the same dequantized weights computed
     * in another order (codes times scales inside the kernel) differ by float32 rounding only, within what a
     * float32 port is allowed against the official logits (models README: 1e-4 on logits up to ~7).
     */
    static final double RECIPE_TOLERANCE = 2e-5;

    /**
     * {@link #RECIPE_TOLERANCE}, plus what the native kernels do on purpose where they run (each int8/int4 linear
     * rounds its input to int16 per block: {@link KernelAllowance#logits}, over the tree's layers from its config). On
     * the 2-layer public trees the largest seen is 1.0e-4 of 2.6e-4.
     */
    static double recipeTolerance(Path folder) {
        int layers = ChatGLMConfig.fromJson(folder.resolve("config.json")).numLayers();
        return RECIPE_TOLERANCE + KernelAllowance.logits(layers);
    }

    /** The linear weights THUDM's quantize(bits) replaces in each block (ChatGLM-6B and ChatGLM2/3 names). */
    private static final Pattern QUANTIZED_BY_THUDM = Pattern.compile(
            ".*\\.layers\\.\\d+\\.((self_)?attention\\.(query_key_value|dense)|mlp\\.(dense_h_to_4h|dense_4h_to_h))\\.weight");

    private static final String[] MODELS = {"chatglm3-6b-tiny", "chatglm-6b-tiny"};

    static ChatGLMLanguageModel load(Path folder, Precision precision) {
        ChatGLMLanguageModel m = ChatGLMLanguageModel.create(ChatGLMConfig.fromJson(folder.resolve("config.json")),
                DType.FLOAT32);
        try (Checkpoint st = Checkpoint.open(folder)) {
            m.loadWeights(source(st), name -> Device.CPU, DType.FLOAT32, device -> precision);
        }
        return m;
    }

    /**
     * THUDM's rule on one weight, written independently of the production quantizer: per-row scale
     * {@code max|w| / (2^(bits-1) - 1)} (rounded to half first when {@code halfScale}, as ChatGLM-6B's
     * quantization.py does), codes {@code round(w / scale)}; returns {@code codes * scale}.
     */
    static Tensor thudmDequantized(Tensor weight, int bits, boolean halfScale) {
        Tensor scale = weight.abs().amax(new long[] {1}, false).div(new Scalar((double) ((1 << (bits - 1)) - 1)))
                .unsqueeze(1);
        if (halfScale) {
            scale = scale.to(ScalarType.Half).to(weight.scalar_type());
        }
        return torch.round(weight.div(scale)).mul(scale);
    }

    /** A float32 model whose block linear weights are THUDM's dequantized int8/int4 weights. */
    static ChatGLMLanguageModel recipeModel(Path folder, Precision precision, boolean halfScale) {
        return recipeModel(folder, w -> thudmDequantized(w, precision.bits(), halfScale));
    }

    /** A float32 model whose block linear weights (THUDM's quantized layers) are {@code rule} of the stored ones. */
    static ChatGLMLanguageModel recipeModel(Path folder, java.util.function.UnaryOperator<Tensor> rule) {
        ChatGLMLanguageModel m = ChatGLMLanguageModel.create(ChatGLMConfig.fromJson(folder.resolve("config.json")),
                DType.FLOAT32);
        try (Checkpoint st = Checkpoint.open(folder)) {
            m.loadWeights(name -> {
                Tensor stored = source(st).apply(name);
                if (stored == null || !QUANTIZED_BY_THUDM.matcher(name).matches()) {
                    return stored;
                }
                return rule.apply(stored.to(ScalarType.Float));
            }, Device.CPU, DType.FLOAT32);
        }
        return m;
    }

    @TestFactory
    Stream<DynamicTest> quantizedForwardFollowsThudmRecipe() throws IOException {
        List<DynamicTest> tests = new ArrayList<>();
        for (String name : MODELS) {
            Path folder = ReferenceTree.models().resolve(name);
            JsonNode expected = JSON.readTree(folder.resolve("expected.json").toFile());
            for (Precision precision : new Precision[] {Precision.INT8, Precision.INT4}) {
                for (JsonNode c : expected.get("cases")) {
                    String kind = c.get("kind").asText();
                    if (kind.equals("forward") || kind.equals("greedy")) {
                        tests.add(DynamicTest.dynamicTest(name + "/" + precision + "/" + c.get("name").asText(),
                                () -> runCase(folder, precision, c)));
                    }
                }
            }
        }
        return tests.stream();
    }

    private static void runCase(Path folder, Precision precision, JsonNode c) {
        ChatGLMLanguageModel model = load(folder, precision);
        try (SafetensorsFile expected = SafetensorsFile.open(folder.resolve("expected.safetensors"));
             PointerScope scope = new PointerScope()) {
            JsonNode names = c.get("tensors");
            long[] ids;
            float[] official = null;
            if (c.get("kind").asText().equals("forward")) {
                ids = longs(c.get("input_ids"));
                official = Ops.floats(expected.load(names.get("logits").asText()));
            } else {
                // Greedy cases, teacher-forced: the official sequence in one pass (every step's logits).
                long[] prompt = longs(c.get("prompt_ids"));
                long[] generated = longs(c.get("new_ids"));
                ids = java.util.Arrays.copyOf(prompt, prompt.length + generated.length - 1);
                System.arraycopy(generated, 0, ids, prompt.length, generated.length - 1);
            }
            float[] q = Ops.floats(model.forward(ForwardInput.builder(new long[][] {ids}).build()));
            double best = Double.POSITIVE_INFINITY;
            for (boolean halfScale : new boolean[] {false, true}) {
                ChatGLMLanguageModel recipe = recipeModel(folder, precision, halfScale);
                try {
                    float[] r = Ops.floats(recipe.forward(ForwardInput.builder(new long[][] {ids}).build()));
                    double error = relativeError(q, r);
                    best = Math.min(best, error);
                    LOG.info("{} {} {} (scale {}): vs the recipe {}{}", folder.getFileName(), precision,
                            c.get("name").asText(), halfScale ? "half" : "float32", error, official == null ? ""
                                    : String.format("; recipe vs official float32: max|r-f|/max|f| = %.4f, "
                                            + "||r-f||/||f|| = %.4f", relativeError(r, official),
                                            normRelativeError(r, official)));
                } finally {
                    recipe.toMeta();
                }
            }
            assertThat(best).as("quantized logits vs THUDM's rule on the same weights")
                    .isLessThanOrEqualTo(recipeTolerance(folder));
        } finally {
            model.toMeta();
        }
    }

    /** Norm-wise relative error {@code ||q - f||_2 / ||f||_2}, the textbook relative error of a vector. */
    static double normRelativeError(float[] q, float[] f) {
        assertThat(q).hasSameSizeAs(f);
        double diff = 0;
        double norm = 0;
        for (int i = 0; i < f.length; i++) {
            double d = (double) q[i] - f[i];
            diff += d * d;
            norm += (double) f[i] * f[i];
        }
        return Math.sqrt(diff / norm);
    }

    static double relativeError(float[] q, float[] f) {
        assertThat(q).hasSameSizeAs(f);
        double diff = 0;
        double max = 0;
        for (int i = 0; i < f.length; i++) {
            diff = Math.max(diff, Math.abs(q[i] - f[i]));
            max = Math.max(max, Math.abs(f[i]));
        }
        return diff / max;
    }

    /** The input ids of the folder's first forward case. */
    private static long[][] firstForwardIds(Path folder) throws IOException {
        for (JsonNode c : JSON.readTree(folder.resolve("expected.json").toFile()).get("cases")) {
            if (c.get("kind").asText().equals("forward")) {
                return new long[][] {longs(c.get("input_ids"))};
            }
        }
        throw new IllegalStateException("no forward case in " + folder);
    }

    @Test
    void writtenQuantizedCheckpointLoadsBackBitForBit(@TempDir Path dir) throws IOException {
        Path folder = ReferenceTree.models().resolve("chatglm3-6b-tiny");
        int hidden = ChatGLMConfig.fromJson(folder.resolve("config.json")).hiddenSize();
        for (Precision precision : new Precision[] {Precision.INT8, Precision.INT4}) {
            ChatGLMLanguageModel original = load(folder, precision);
            Path file = dir.resolve("model-" + precision + ".safetensors");
            original.saveQuantized(file);
            Map<String, String> metadata;
            try (SafetensorsFile written = SafetensorsFile.open(file)) {
                metadata = written.metadata();
                String qkv = "transformer.encoder.layers.0.self_attention.query_key_value.";
                assertThat(written.info(qkv + "weight").dtype()).isEqualTo(DType.INT8);
                assertThat(written.info(qkv + "weight").shape()[1])
                        .isEqualTo(precision == Precision.INT4 ? hidden / 2 : hidden);
                assertThat(written.contains(qkv + "weight_scale")).isTrue();
            }
            assertThat(metadata).containsEntry("quantization", ChatGLMLanguageModel.QUANTIZATION_SCHEME)
                    .containsEntry("quantization_bit", Integer.toString(precision.bits()));
            ChatGLMLanguageModel reloaded = ChatGLMLanguageModel.create(original.config(), DType.FLOAT32);
            try (Checkpoint st = Checkpoint.open(file)) {
                reloaded.loadWeights(source(st), name -> Device.CPU, DType.FLOAT32, device -> precision);
            }
            try (PointerScope scope = new PointerScope()) {
                for (Map.Entry<String, Module> m : original.namedModules().entrySet()) {
                    if (m.getValue() instanceof QuantizedLinear) {
                        QuantizedWeight a = ((QuantizedLinear) m.getValue()).quantizedWeight();
                        QuantizedWeight b = ((QuantizedLinear) reloaded.module(m.getKey())).quantizedWeight();
                        assertThat(Ops.longs(b.packed())).as(m.getKey()).containsExactly(Ops.longs(a.packed()));
                        assertThat(Ops.floats(b.scale())).as(m.getKey()).containsExactly(Ops.floats(a.scale()));
                    }
                }
                long[][] ids = firstForwardIds(folder);
                float[] la = Ops.floats(original.forward(ForwardInput.builder(ids).build()));
                float[] lb = Ops.floats(reloaded.forward(ForwardInput.builder(ids).build()));
                assertThat(lb).containsExactly(la);
            }
            original.toMeta();
            reloaded.toMeta();
        }
    }

    @Test
    void int4CheckpointLoadsAsInt8AndAsFloat(@TempDir Path dir) throws IOException {
        Path folder = ReferenceTree.models().resolve("chatglm3-6b-tiny");
        ChatGLMLanguageModel int4 = load(folder, Precision.INT4);
        Path file = dir.resolve("model.safetensors");
        int4.saveQuantized(file);
        long[][] ids = firstForwardIds(folder);
        try (PointerScope scope = new PointerScope()) {
            float[] reference = Ops.floats(int4.forward(ForwardInput.builder(ids).build()));
            ChatGLMLanguageModel asFloat = ChatGLMLanguageModel.create(int4.config(), DType.FLOAT32);
            try (Checkpoint st = Checkpoint.open(file)) {
                asFloat.loadWeights(source(st), Device.CPU, DType.FLOAT32);
            }
            // Dequantized weights in float32 compute what the int4 kernels compute, up to rounding.
            assertThat(relativeError(Ops.floats(asFloat.forward(ForwardInput.builder(ids).build())), reference))
                    .isLessThanOrEqualTo(recipeTolerance(folder));
            ChatGLMLanguageModel asInt8 = ChatGLMLanguageModel.create(int4.config(), DType.FLOAT32);
            try (Checkpoint st = Checkpoint.open(file)) {
                asInt8.loadWeights(source(st), name -> Device.CPU, DType.FLOAT32, d -> Precision.INT8);
            }
            assertThat(((QuantizedLinear) asInt8.module("transformer.encoder.layers.1.mlp.dense_4h_to_h"))
                    .precision()).isEqualTo(Precision.INT8);
            // int4 codes re-quantized to int8: THUDM's int8 rule on THUDM's int4 weights (either scale dtype).
            float[] got = Ops.floats(asInt8.forward(ForwardInput.builder(ids).build()));
            double best = Double.POSITIVE_INFINITY;
            for (boolean half : new boolean[] {false, true}) {
                ChatGLMLanguageModel recipe = recipeModel(folder,
                        w -> thudmDequantized(thudmDequantized(w, 4, half), 8, half));
                best = Math.min(best, relativeError(got, Ops.floats(recipe.forward(ForwardInput.builder(ids).build()))));
                recipe.toMeta();
            }
            assertThat(best).isLessThanOrEqualTo(recipeTolerance(folder));
        }
    }

    @Test
    void quantizedWeightOfTheWrongShapeIsATypedError(@TempDir Path dir) {
        Path folder = ReferenceTree.models().resolve("chatglm3-6b-tiny");
        String name = "transformer.encoder.layers.0.mlp.dense_4h_to_h.weight";
        ChatGLMLanguageModel model = ChatGLMLanguageModel.create(ChatGLMConfig.fromJson(folder.resolve("config.json")),
                DType.FLOAT32);
        try (Checkpoint st = Checkpoint.open(folder); PointerScope scope = new PointerScope()) {
            Tensor bad = org.bytedeco.pytorch.global.torch.zeros(64, 7).to(
                    org.bytedeco.pytorch.global.torch.ScalarType.Char);
            Tensor scale = org.bytedeco.pytorch.global.torch.ones(64);
            assertThatThrownBy(() -> model.loadWeights(n -> n.equals(name) ? bad
                    : n.equals(name + "_scale") ? scale : source(st).apply(n), x -> Device.CPU, DType.FLOAT32,
                    d -> Precision.INT4))
                    .isInstanceOf(WeightLoadException.class).hasMessageContaining(name).hasMessageContaining("[64, 7]");
        }
    }

    @Test
    void officialQuantizationBitIsReadAndSetAside(@TempDir Path dir) throws IOException {
        Path folder = ReferenceTree.models().resolve("chatglm3-6b-tiny");
        ObjectNode config = (ObjectNode) JSON.readTree(folder.resolve("config.json").toFile());
        config.put("quantization_bit", 4);
        Path file = dir.resolve("config.json");
        Files.writeString(file, config.toString());
        assertThat(ChatGLMLanguageModel.quantizationBit(file)).isEqualTo(4);
        assertThat(ChatGLMLanguageModel.quantizationBit(folder.resolve("config.json"))).isZero();
        ChatGLMConfig c = ChatGLMLanguageModel.configOfQuantizedCheckpoint(file);
        assertThat(c.hiddenSize()).isEqualTo(ChatGLMConfig.fromJson(folder.resolve("config.json")).hiddenSize());
        config.put("quantization_bit", 3);
        Files.writeString(file, config.toString());
        assertThatThrownBy(() -> ChatGLMLanguageModel.quantizationBit(file))
                .isInstanceOf(ChatGLMConfigException.class).hasMessageContaining("quantization_bit");
    }

    @Test
    void chatglm3PresetPlansAtInt4AndInt8() {
        ChatGLMLanguageModel model = ChatGLMLanguageModel.create(ChatGLMConfig.preset("chatglm3-6b"), DType.FLOAT16);
        double gib = 1024.0 * 1024 * 1024;
        double int4 = ModuleSizes.compute(model, DType.FLOAT16, Map.of(), Precision.INT4).total() / gib;
        double int8 = ModuleSizes.compute(model, DType.FLOAT16, Map.of(), Precision.INT8).total() / gib;
        double fp16 = ModuleSizes.compute(model, DType.FLOAT16, Map.of(), Precision.FP16).total() / gib;
        LOG.info("chatglm3-6b weights: int4 {} GiB, int8 {} GiB, fp16 {} GiB", int4, int8, fp16);
        assertThat(int4).isBetween(3.4, 3.9);
        assertThat(int8).isBetween(6.2, 6.9);
        assertThat(fp16).isEqualTo(model.byteSize() / gib);
        // The same figures through the dispatch planner's sizes once the layers are planned on meta.
        model.planPrecisions(name -> Device.CPU, DType.FLOAT16, d -> Precision.INT4);
        double planned = ModuleSizes.compute(model, DType.FLOAT16, Map.of()).total() / gib;
        assertThat(planned).isCloseTo(int4, org.assertj.core.data.Offset.offset(1e-9));
        double block = ModuleSizes.compute(model, DType.FLOAT16, Map.of()).size("transformer.encoder.layers.0");
        assertThat(block).isEqualTo((double) model.module("transformer.encoder.layers.0").byteSize());
    }

    /** The loader's source contract: null for a name the checkpoint does not hold. */
    static java.util.function.Function<String, Tensor> source(Checkpoint st) {
        return n -> st.contains(n) ? st.load(n) : null;
    }

    private static long[] longs(JsonNode array) {
        long[] out = new long[array.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = array.get(i).asLong();
        }
        return out;
    }
}
