package io.github.bigmodel.chatglm.model;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.github.bigmodel.chatglm.ChatGLMConfig;
import io.github.bigmodel.chatglm.generation.GenerationRequest;
import io.github.bigmodel.chatglm.generation.GenerationResult;
import io.github.bigmodel.chatglm.generation.Generator;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.kernel.DecoderStep;
import io.github.bigmodel.core.quant.Precision;
import io.github.bigmodel.core.testing.ReferenceTree;
import io.github.bigmodel.safetensors.Checkpoint;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.bytedeco.javacpp.PointerScope;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;

/**
 * A ChatGLM2/3 decode step through the fused block ({@link DecoderStep}) gives what the op-by-op form gives, bit for
 * bit: greedy generation from each ChatGLM2/3 model of the reference tree, in every activation dtype and weight
 * precision the CPU runs natively, with the tree's config and with the residual taken after the norms and layer
 * scaling switched (flags the official code has), the same ids and the same scores at every step, and the fused
 * block really ran once per layer and step (float32 weights have no native kernel: none ran there).
 */
// PointerScope blocks are used for what they release on close, not referenced by name.
@SuppressWarnings("try")
class FusedDecodeStepTest {

    private static final ObjectMapper JSON = new ObjectMapper();
    private static final int NEW_TOKENS = 5;

    @TestFactory
    Stream<DynamicTest> fusedAndOpByOpDecodeAlike() throws IOException {
        List<DynamicTest> tests = new ArrayList<>();
        try (Stream<Path> folders = Files.list(ReferenceTree.models())) {
            for (Path folder : folders.filter(f -> Files.exists(f.resolve("config.json"))).sorted().toList()) {
                ChatGLMConfig config = ChatGLMConfig.fromJson(folder.resolve("config.json"));
                if (config.version() != ChatGLMConfig.Version.CHATGLM2) {
                    continue;
                }
                ObjectNode switched = (ObjectNode) JSON.readTree(folder.resolve("config.json").toFile());
                switched.put("apply_residual_connection_post_layernorm",
                        !config.applyResidualConnectionPostLayernorm());
                switched.put("apply_query_key_layer_scaling", !config.applyQueryKeyLayerScaling());
                ChatGLMConfig other = ChatGLMConfig.fromJsonString(JSON.writeValueAsString(switched));
                for (DType dtype : new DType[] {DType.BFLOAT16, DType.FLOAT16, DType.FLOAT32}) {
                    for (Precision precision : new Precision[] {null, Precision.INT8, Precision.INT4}) {
                        for (ChatGLMConfig c : new ChatGLMConfig[] {config, other}) {
                            String name = folder.getFileName() + " " + dtype + " "
                                    + (precision == null ? "float" : precision) + (c == other ? " switched" : "");
                            tests.add(DynamicTest.dynamicTest(name, () -> check(folder, c, dtype, precision)));
                        }
                    }
                }
            }
        }
        assertThat(tests).as("ChatGLM2/3 models in " + ReferenceTree.models()).isNotEmpty();
        return tests.stream();
    }

    private static void check(Path folder, ChatGLMConfig config, DType dtype, Precision precision) throws IOException {
        assumeTrue(DecoderStep.available(), "native kernels not available on this machine");
        ChatGLMLanguageModel model = ChatGLMLanguageModel.create(config, dtype);
        try (Checkpoint st = Checkpoint.open(folder); PointerScope scope = new PointerScope()) {
            Precision p = precision == null ? Precision.of(dtype) : precision;
            model.loadWeights(n -> st.contains(n) ? st.load(n) : null, n -> Device.CPU, dtype, d -> p);
            GenerationRequest request = GenerationRequest.builder(new long[][] {prompt(folder)})
                    .maxNewTokens(NEW_TOKENS).stopAtEos(false).keepStepScores(true).build();

            long before = DecoderStep.calls();
            GenerationResult fused = new Generator(model).generate(request);
            long calls = DecoderStep.calls() - before;
            GenerationResult opByOp;
            DecoderStep.setEnabled(false);
            try {
                opByOp = new Generator(model).generate(request);
            } finally {
                DecoderStep.setEnabled(true);
            }

            // the prompt step runs op by op; each later step runs every layer fused, when the weights have kernels
            boolean nativeWeights = dtype != DType.FLOAT32 || precision != null;
            assertThat(calls).as("fused blocks run")
                    .isEqualTo(nativeWeights ? (long) (NEW_TOKENS - 1) * config.numLayers() : 0);
            assertThat(fused.newIds()[0]).as("greedy ids").containsExactly(opByOp.newIds()[0]);
            for (int step = 0; step < NEW_TOKENS; step++) {
                assertThat(fused.stepScores()[0][step]).as("scores of step %d", step)
                        .containsExactly(opByOp.stepScores()[0][step]);
            }
        } finally {
            model.toMeta();
        }
    }

    /** The tree's first greedy case's prompt. */
    private static long[] prompt(Path folder) throws IOException {
        for (JsonNode c : JSON.readTree(folder.resolve("expected.json").toFile()).get("cases")) {
            if (c.get("kind").asText().equals("greedy")) {
                JsonNode ids = c.get("prompt_ids");
                JsonNode row = ids.get(0).isArray() ? ids.get(0) : ids;
                long[] out = new long[row.size()];
                for (int i = 0; i < out.length; i++) {
                    out[i] = row.get(i).asLong();
                }
                return out;
            }
        }
        throw new IllegalStateException("no greedy case in " + folder);
    }
}
