package io.github.bigmodel.chatglm.model;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.github.bigmodel.chatglm.ChatGLMConfig;
import io.github.bigmodel.chatglm.generation.GenerationRequest;
import io.github.bigmodel.chatglm.generation.GenerationResult;
import io.github.bigmodel.chatglm.generation.Generator;
import io.github.bigmodel.chatglm.internal.Ops;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.testing.ReferenceTree;
import io.github.bigmodel.safetensors.Checkpoint;
import io.github.bigmodel.safetensors.SafetensorsFile;
import java.nio.file.Path;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.api.Test;

/**
 * Half precision with prompts in row chunks (ChatGLMReferenceTest covers float32 against the official numbers):
 * the padded batch case of each tiny reference model, with the KV cache of generation, gives the same logits and
 * the same greedy ids in chunks as in one piece. And the workspace of a 2048-token prompt on the 6B shapes.
 */
// PointerScope blocks are used for what they release on close, not referenced by name.
@SuppressWarnings("try")
class PromptChunkingTest {

    private static final ObjectMapper JSON = new ObjectMapper();
    private static final org.slf4j.Logger LOG = org.slf4j.LoggerFactory.getLogger(PromptChunkingTest.class);

    @ParameterizedTest
    @CsvSource({"chatglm3-6b-tiny, FLOAT16", "chatglm3-6b-tiny, BFLOAT16", "chatglm-6b-tiny, FLOAT16",
            "chatglm-6b-tiny, BFLOAT16"})
    void halfPrecisionPaddedBatchIsTheSameInChunks(String name, DType dtype) throws Exception {
        Path folder = ReferenceTree.models().resolve(name);
        ChatGLMConfig config = ChatGLMConfig.fromJson(folder.resolve("config.json"));
        ChatGLMLanguageModel model = ChatGLMLanguageModel.create(config, dtype);
        JsonNode batchCase = null;
        for (JsonNode c : JSON.readTree(folder.resolve("expected.json").toFile()).get("cases")) {
            if (c.get("kind").asText().equals("batch")) {
                batchCase = c;
            }
        }
        assertThat(batchCase).as("a batch case in " + folder).isNotNull();
        JsonNode names = batchCase.get("tensors");
        int newTokens = batchCase.get("greedy_new_tokens").asInt();
        try (Checkpoint st = Checkpoint.open(folder);
             SafetensorsFile expected = SafetensorsFile.open(folder.resolve("expected.safetensors"));
             PointerScope scope = new PointerScope()) {
            model.loadWeights(st::load, Device.CPU, dtype);
            long[][] ids = Ops.rows(expected.load(names.get("input_ids").asText()));
            Tensor positions = expected.load(names.get("position_ids").asText());
            Tensor mask = expected.load(names.get("attention_mask").asText());
            boolean v1 = config.version() == ChatGLMConfig.Version.CHATGLM_6B;

            float[][] logits = new float[2][];
            GenerationResult[] greedy = new GenerationResult[2];
            for (int run = 0; run < 2; run++) {
                model.forceChunkRows(run == 0 ? 0 : 2);
                try {
                    ForwardInput.Builder in = ForwardInput.builder(ids).positionIds(positions);
                    GenerationRequest.Builder gen = GenerationRequest.builder(ids).positionIds(positions)
                            .maxNewTokens(newTokens).stopAtEos(false).keepStepScores(true);
                    if (v1) {
                        Tensor bool = mask.to(ScalarType.Bool);
                        in.attentionMask(bool);
                        gen.attentionMask(bool);
                    } else {
                        in.paddingMask(mask);
                        gen.paddingMask(mask);
                    }
                    try (KvCache cache = model.newCache(ids.length, ids[0].length)) {
                        logits[run] = Ops.floats(model.forward(in.cache(cache).build()));
                    }
                    greedy[run] = new Generator(model).generate(gen.build());
                } finally {
                    model.forceChunkRows(0);
                }
            }
            // Every position's logits, pad rows included. The linear kernels give a row the same bits in any chunk
            // (NativeKernelsTest); libtorch's half-precision attention matmuls sum by blocks that depend on the
            // query rows they get, so one rounding step of the largest logit in the model's dtype is allowed
            // (chatglm-6b-tiny fp16: 0.0156 at 28, one float16 ulp; 0 in the other cases).
            double largest = maxDiff(logits[0], new float[logits[0].length]);
            double ulp = Math.ulp((float) largest) * (dtype == DType.BFLOAT16 ? 65536 : 8192);
            LOG.info("{} {}: max |chunked - whole| logits {}, largest logit {}", name, dtype,
                    maxDiff(logits[1], logits[0]), largest);
            assertThat(maxDiff(logits[1], logits[0])).as("max |chunked - whole| logits")
                    .isLessThanOrEqualTo(Math.max(1e-2, ulp));
            for (int b = 0; b < ids.length; b++) {
                assertThat(greedy[1].newIds()[b]).as("greedy ids of row " + b)
                        .containsExactly(greedy[0].newIds()[b]);
                for (int step = 0; step < newTokens; step++) {
                    assertThat(maxDiff(greedy[1].stepScores()[b][step], greedy[0].stepScores()[b][step]))
                            .as("step %d scores of row %d", step, b).isLessThanOrEqualTo(1e-2);
                }
            }
        } finally {
            model.toMeta();
        }
    }

    /** Issue 14's bound: a 2048-token prompt step within 256 MiB of workspace on both 6B shapes, half precision. */
    @Test
    void a2048TokenPromptOfThe6bShapesFitsIn256MiB() {
        for (String preset : new String[] {"chatglm3-6b", "chatglm-6b"}) {
            ChatGLMConfig config = ChatGLMConfig.preset(preset);
            for (DType dtype : new DType[] {DType.FLOAT16, DType.BFLOAT16}) {
                long bytes = StepWorkspace.bytes(config, dtype, 1, 2048, 2048, config.numLayers());
                assertThat(bytes).as(preset + " " + dtype).isLessThanOrEqualTo(256L << 20);
                // The score matrix alone in one piece (heads x 2048 x 2048 in float32) would be 512 MiB.
                assertThat(4L * config.numAttentionHeads() * 2048 * 2048).isGreaterThan(bytes);
            }
        }
    }

    @Test
    void chunksAreSizedByTheBudgetAndDecodeStepsRunWhole() {
        ChatGLMConfig config = ChatGLMConfig.preset("chatglm3-6b");
        long perRow = StepWorkspace.attentionRowBytes(config, DType.FLOAT16, 1, 2048);
        long rows = PromptChunks.rows(StepWorkspace.CHUNK_BYTES, perRow, 2048);
        assertThat(rows * perRow).isLessThanOrEqualTo(StepWorkspace.CHUNK_BYTES);
        assertThat((rows + 1) * perRow).isGreaterThan(StepWorkspace.CHUNK_BYTES);
        assertThat(PromptChunks.rows(StepWorkspace.CHUNK_BYTES, perRow, 1)).isEqualTo(1);
        // A row larger than the budget still runs, alone.
        assertThat(PromptChunks.rows(16, perRow, 2048)).isEqualTo(1);
        // The decode step's workspace does not grow with the layer count: one block's temporaries at a time.
        assertThat(StepWorkspace.bytes(config, DType.FLOAT16, 1, 1, 8192, 28))
                .isEqualTo(StepWorkspace.bytes(config, DType.FLOAT16, 1, 1, 8192, 1));
    }

    private static double maxDiff(float[] a, float[] b) {
        assertThat(a).hasSameSizeAs(b);
        double worst = 0;
        for (int i = 0; i < a.length; i++) {
            worst = Math.max(worst, Math.abs(a[i] - b[i]));
        }
        return worst;
    }
}
