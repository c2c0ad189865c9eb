package io.github.bigmodel.chatglm.generation;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.github.bigmodel.chatglm.ChatGLMConfig;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.testing.ReferenceTree;
import io.github.bigmodel.safetensors.Checkpoint;
import java.io.IOException;
import java.nio.file.Path;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/** Seeded sampling on the tiny ChatGLM3 reference model; its greedy case anchors top_k=1 to the official ids. */
class SamplingTest {

    private static ChatGLMLanguageModel model;
    private static long[] prompt;
    private static long[] officialGreedy;

    @BeforeAll
    static void load() throws IOException {
        Path folder = ReferenceTree.models().resolve("chatglm3-6b-tiny");
        model = ChatGLMLanguageModel.create(ChatGLMConfig.fromJson(folder.resolve("config.json")), DType.FLOAT32);
        try (Checkpoint ckpt = Checkpoint.open(folder)) {
            model.loadWeights(ckpt::load, Device.CPU, DType.FLOAT32);
        }
        JsonNode expected = new ObjectMapper().readTree(folder.resolve("expected.json").toFile());
        for (JsonNode c : expected.get("cases")) {
            if (c.get("name").asText().equals("greedy/prompt_short")) {
                prompt = longs(c.get("prompt_ids"));
                officialGreedy = longs(c.get("new_ids"));
            }
        }
        assertThat(prompt).as("greedy/prompt_short case").isNotNull();
    }

    @AfterAll
    static void release() {
        model.toMeta();
    }

    private static long[] longs(JsonNode a) {
        long[] out = new long[a.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = a.get(i).asLong();
        }
        return out;
    }

    private static long[] sample(GenerationConfig g) {
        GenerationRequest.Builder b = GenerationRequest.builder(new long[][] {prompt})
                .maxNewTokens(officialGreedy.length);
        return new Generator(model).generate(g.applyTo(b).build()).newIds()[0];
    }

    @Test
    void sameSeedSameIds() {
        GenerationConfig g = GenerationConfig.builder().doSample(true).temperature(1.5).topK(0).seed(11)
                .ignoreEos(true).build();
        long[] first = sample(g);
        assertThat(first).hasSize(officialGreedy.length);
        assertThat(sample(g)).containsExactly(first);
        // Flattened this much, the draws leave the greedy path.
        assertThat(first).isNotEqualTo(officialGreedy);
    }

    @Test
    void topKOneIsGreedy() {
        GenerationConfig g = GenerationConfig.builder().doSample(true).temperature(0.7).topK(1).seed(99)
                .ignoreEos(true).build();
        assertThat(sample(g)).containsExactly(officialGreedy);
        assertThat(sample(GenerationConfig.builder().ignoreEos(true).build())).containsExactly(officialGreedy);
    }

    @Test
    void sessionsStepAndFreeTheirCache() {
        GenerationRequest req = GenerationRequest.builder(new long[][] {prompt}).maxNewTokens(officialGreedy.length)
                .stopAtEos(false).build();
        Generator generator = new Generator(model);
        try (Generator.Session a = generator.start(req); Generator.Session b = generator.start(req)) {
            // Interleaved sessions on one model each keep their own cache.
            for (int i = 0; i < officialGreedy.length; i++) {
                assertThat(a.step()[0]).isEqualTo(officialGreedy[i]);
                assertThat(b.step()[0]).isEqualTo(officialGreedy[i]);
            }
            assertThat(a.isFinished()).isTrue();
            assertThat(a.holdsCache()).isFalse();
        }
        Generator.Session c = generator.start(req);
        c.step();
        c.close();
        assertThat(c.holdsCache()).isFalse();
        assertThat(c.isFinished()).isTrue();
    }
}
