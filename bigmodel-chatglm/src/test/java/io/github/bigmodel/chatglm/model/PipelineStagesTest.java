package io.github.bigmodel.chatglm.model;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.github.bigmodel.chatglm.ChatGLMConfig;
import io.github.bigmodel.chatglm.generation.GenerationRequest;
import io.github.bigmodel.chatglm.generation.GenerationResult;
import io.github.bigmodel.chatglm.generation.Generator;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.testing.ReferenceTree;
import io.github.bigmodel.safetensors.Checkpoint;
import io.github.bigmodel.safetensors.SafetensorsFile;
import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestFactory;

/**
 * The model split into pipeline stages in one JVM: a link that runs the other spans on other model instances (each
 * loaded with its own span's weights only) gives logits and greedy ids bit-identical to the whole model, on the
 * reference models, for prompts, decode steps and padded batches, with 2 and 3 stages; closing a session's cache
 * frees the other stages' caches.
 */
// PointerScope blocks are used for what they release on close, not referenced by name.
@SuppressWarnings("try")
class PipelineStagesTest {

    private static final ObjectMapper JSON = new ObjectMapper();

    /** Other stages in this JVM, run in order; each keeps its caches per session as a worker does. */
    static final class InProcessLink implements PipelineLink {
        final List<ChatGLMLanguageModel> stages;
        final List<Map<Long, KvCache>> caches = new ArrayList<>();
        int steps;

        InProcessLink(List<ChatGLMLanguageModel> stages) {
            this.stages = stages;
            stages.forEach(s -> caches.add(new HashMap<>()));
        }

        @Override
        public synchronized Tensor forward(PipelineStep step, Tensor hidden) {
            steps++;
            // What crosses a process boundary: a contiguous copy of the hidden state, nothing shared.
            Tensor h = hidden.contiguous().clone();
            for (int i = 0; i < stages.size(); i++) {
                ChatGLMLanguageModel m = stages.get(i);
                KvCache cache = step.session() == 0 ? null
                        : caches.get(i).computeIfAbsent(step.session(), s -> m.newCache(step.batch(), step.capacity()));
                h = m.forwardStage(step.from(m.stage().firstLayer()), h, cache).clone();
            }
            return h;
        }

        @Override
        public synchronized void free(long session) {
            for (Map<Long, KvCache> c : caches) {
                KvCache cache = c.remove(session);
                if (cache != null) {
                    cache.close();
                }
            }
        }

        synchronized int liveSessions() {
            return caches.stream().mapToInt(Map::size).sum();
        }
    }

    private static ChatGLMLanguageModel load(Path folder, StageSpan span, PipelineLink link) throws IOException {
        ChatGLMLanguageModel m = ChatGLMLanguageModel.create(ChatGLMConfig.fromJson(folder.resolve("config.json")),
                DType.FLOAT32);
        m.setStage(span, link);
        try (Checkpoint st = Checkpoint.open(folder)) {
            m.loadWeights(st::load, Device.CPU, DType.FLOAT32);
        }
        return m;
    }

    /** Splits of a model of {@code n} blocks: the coordinator's span first. */
    private static List<List<StageSpan>> splits(int n) {
        int mid = n / 2;
        return List.of(
                // 2 stages: the worker runs the second half and the head.
                List.of(new StageSpan(true, 0, mid, false), new StageSpan(false, mid, n, true)),
                // 2 stages, the coordinator holds the head: the worker hands the hidden state back.
                List.of(new StageSpan(true, 0, mid, true), new StageSpan(false, mid, n, false)),
                // 3 stages: blocks, blocks, then the head alone.
                List.of(new StageSpan(true, 0, mid, false), new StageSpan(false, mid, n, false),
                        new StageSpan(false, n, n, true)),
                // 3 stages: the embedding alone, then one run of blocks each.
                List.of(new StageSpan(true, 0, 0, false), new StageSpan(false, 0, mid, false),
                        new StageSpan(false, mid, n, true)));
    }

    @TestFactory
    Stream<DynamicTest> stagesGiveTheSameBits() {
        List<DynamicTest> tests = new ArrayList<>();
        for (String name : List.of("chatglm3-6b-tiny", "chatglm-6b-tiny")) {
            Path folder = ReferenceTree.models().resolve(name);
            tests.add(DynamicTest.dynamicTest(name, () -> compareSplits(folder)));
        }
        return tests.stream();
    }

    private static void compareSplits(Path folder) throws IOException {
        JsonNode expected = JSON.readTree(folder.resolve("expected.json").toFile());
        ChatGLMLanguageModel whole = load(folder, null, null);
        int n = whole.config().numLayers();
        try (SafetensorsFile fixtures = SafetensorsFile.open(folder.resolve("expected.safetensors"))) {
            for (List<StageSpan> split : splits(n)) {
                List<ChatGLMLanguageModel> workers = new ArrayList<>();
                for (StageSpan s : split.subList(1, split.size())) {
                    workers.add(load(folder, s, null));
                }
                InProcessLink link = new InProcessLink(workers);
                ChatGLMLanguageModel first = load(folder, split.get(0), link);
                try {
                    assertOnlyOwnWeights(first);
                    workers.forEach(PipelineStagesTest::assertOnlyOwnWeights);
                    for (JsonNode c : expected.get("cases")) {
                        String what = folder.getFileName() + " " + split + " " + c.get("name").asText();
                        runCase(whole, first, c, fixtures, what);
                    }
                    assertThat(link.steps).as("steps that crossed the link").isPositive();
                    assertThat(link.liveSessions()).as("caches the other stages still keep").isZero();
                } finally {
                    first.toMeta();
                    workers.forEach(ChatGLMLanguageModel::toMeta);
                }
            }
        } finally {
            whole.toMeta();
        }
    }

    private static void assertOnlyOwnWeights(ChatGLMLanguageModel m) {
        // A tied weight is held when any of its names is.
        Map<io.github.bigmodel.core.Parameter, Boolean> held = new java.util.IdentityHashMap<>();
        m.stateDict().forEach((name, p) -> held.merge(p, m.holds(name), Boolean::logicalOr));
        m.stateDict().forEach((name, p) -> {
            if (!m.isComputedBuffer(name)) {
                assertThat(p.isMaterialized()).as(name + " loaded by stage " + m.stage()).isEqualTo(held.get(p));
            }
        });
    }

    private static void runCase(ChatGLMLanguageModel whole, ChatGLMLanguageModel first, JsonNode c,
            SafetensorsFile fixtures, String what) {
        try (PointerScope scope = new PointerScope()) {
            switch (c.get("kind").asText()) {
                case "forward" -> {
                    long[][] ids = {longs(c.get("input_ids"))};
                    assertEqualTensors(first.forward(ForwardInput.builder(ids).build()),
                            whole.forward(ForwardInput.builder(ids).build()), what + " logits");
                }
                case "greedy" -> {
                    long[][] prompt = {longs(c.get("prompt_ids"))};
                    assertSameGeneration(whole, first, GenerationRequest.builder(prompt)
                            .maxNewTokens(c.get("max_new_tokens").asInt()).stopAtEos(false).keepStepScores(true)
                            .build(), what);
                }
                case "batch" -> {
                    JsonNode names = c.get("tensors");
                    long[][] ids = io.github.bigmodel.chatglm.internal.Ops.rows(
                            fixtures.load(names.get("input_ids").asText()));
                    GenerationRequest.Builder gen = GenerationRequest.builder(ids)
                            .positionIds(fixtures.load(names.get("position_ids").asText()));
                    Tensor mask = fixtures.load(names.get("attention_mask").asText());
                    if (whole.config().version() == ChatGLMConfig.Version.CHATGLM2) {
                        gen.paddingMask(mask);
                    } else {
                        gen.attentionMask(mask.to(ScalarType.Bool));
                    }
                    assertSameGeneration(whole, first, gen.maxNewTokens(c.get("greedy_new_tokens").asInt())
                            .stopAtEos(false).keepStepScores(true).build(), what);
                }
                default -> {
                    // kv_cache cases: prompt and decode steps are what the greedy cases run through the cache.
                }
            }
        }
    }

    private static void assertSameGeneration(ChatGLMLanguageModel whole, ChatGLMLanguageModel first,
            GenerationRequest request, String what) {
        GenerationResult want = new Generator(whole).generate(request);
        GenerationResult got = new Generator(first).generate(request);
        assertThat(got.newIds()).as(what + " greedy ids").isDeepEqualTo(want.newIds());
        float[][][] a = got.stepScores();
        float[][][] b = want.stepScores();
        assertThat(a.length).isEqualTo(b.length);
        for (int i = 0; i < a.length; i++) {
            for (int r = 0; r < a[i].length; r++) {
                // Bit for bit: the same operations in the same order on the same numbers.
                assertThat(java.util.Arrays.equals(a[i][r], b[i][r])).as(what + " step " + i + " row " + r
                        + " logits bit-identical").isTrue();
            }
        }
    }

    private static void assertEqualTensors(Tensor got, Tensor want, String what) {
        assertThat(got.equal(want)).as(what + " bit-identical (torch.equal)").isTrue();
    }

    @Test
    void aFirstStageWithoutTheWholeModelNeedsALink() throws IOException {
        ChatGLMLanguageModel m = ChatGLMLanguageModel.create(ChatGLMConfig.fromJson(
                ReferenceTree.models().resolve("chatglm3-6b-tiny").resolve("config.json")), DType.FLOAT32);
        org.assertj.core.api.Assertions.assertThatThrownBy(() -> m.setStage(new StageSpan(true, 0, 1, false), null))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("needs a link");
        org.assertj.core.api.Assertions.assertThatThrownBy(() -> m.setStage(new StageSpan(false, 1, 9, true), null))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("blocks");
    }

    private static long[] longs(JsonNode array) {
        long[] out = new long[array.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = array.get(i).asLong();
        }
        return out;
    }
}
