package io.github.bigmodel.chatglm;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.github.bigmodel.chatglm.generation.TemperatureWarper;
import io.github.bigmodel.chatglm.generation.TopKWarper;
import io.github.bigmodel.chatglm.generation.TopPWarper;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.testing.ReferenceTree;
import io.github.bigmodel.dispatch.BigModel;
import io.github.bigmodel.dispatch.DispatchOptions;
import io.github.bigmodel.dispatch.DispatchedModel;
import io.github.bigmodel.safetensors.Checkpoint;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.bytedeco.javacpp.PointerScope;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;
import org.junit.jupiter.api.io.TempDir;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.chatglm.generation.GenerationRequest;
import io.github.bigmodel.chatglm.generation.Generator;

/**
 * One loaded reference model serving 8 generation sessions at once (each its own KV cache and sampler, the weights
 * shared): every session's ids equal what it produces when the sessions run one after another, over several
 * rounds, in memory and with a block on disk (in place and through an offload folder) read ahead by the
 * prefetcher. The greedy sessions on the fixture prompts also equal the official ids. A session that does not end
 * within the time limit (a deadlock) fails the test.
 */
class ConcurrentSessionsTest {

    private static final int THREADS = 8;
    private static final int ROUNDS = 4;
    private static final long TIMEOUT_SECONDS = 120;

    @TempDir
    static Path offloadRoot;

    /** One session's request: a prompt, greedy or seeded sampling, and the official ids when the fixture has them. */
    record Job(String name, long[] prompt, int maxNew, Long seed, long[] officialNew) {
        GenerationRequest request() {
            GenerationRequest.Builder b = GenerationRequest.builder(new long[][] {prompt}).maxNewTokens(maxNew)
                    .stopAtEos(false);
            if (seed != null) {
                b.processor(new TemperatureWarper(0.8)).processor(new TopKWarper(40)).processor(new TopPWarper(0.9))
                        .doSample(true).seed(seed);
            }
            return b.build();
        }
    }

    @TestFactory
    Stream<DynamicTest> eightSessionsMatchSequentialRuns() {
        List<DynamicTest> tests = new ArrayList<>();
        for (String name : new String[] {"chatglm3-6b-tiny", "chatglm-6b-tiny"}) {
            Path folder = ReferenceTree.models().resolve(name);
            boolean v1 = name.startsWith("chatglm-6b");
            tests.add(DynamicTest.dynamicTest(name + "/in-memory", () -> inMemory(folder)));
            tests.add(DynamicTest.dynamicTest(name + "/disk-in-place-prefetch",
                    () -> dispatched(folder, diskMap(v1), "model.safetensors.index.json")));
            tests.add(DynamicTest.dynamicTest(name + "/disk-offload-folder-prefetch",
                    () -> dispatched(folder, diskMap(v1), "pytorch_model.bin.index.json")));
        }
        return tests.stream();
    }

    private static String diskMap(boolean v1) {
        String blocks = v1 ? "transformer.layers" : "transformer.encoder.layers";
        String front = v1 ? "\"transformer.word_embeddings\": \"cpu\""
                : "\"transformer.embedding\": \"cpu\", \"transformer.rotary_pos_emb\": \"cpu\"";
        String norm = v1 ? "\"transformer.final_layernorm\": \"disk\""
                : "\"transformer.encoder.final_layernorm\": \"disk\"";
        String head = v1 ? "\"lm_head\": \"cpu\"" : "\"transformer.output_layer\": \"disk\"";
        return "{" + front + ", \"" + blocks + ".0\": \"disk\", \"" + blocks + ".1\": \"cpu\", " + norm + ", "
                + head + "}";
    }

    private static void inMemory(Path folder) throws Exception {
        ChatGLMLanguageModel model = ChatGLMLanguageModel.create(ChatGLMConfig.fromJson(folder.resolve("config.json")),
                DType.FLOAT32);
        try (Checkpoint checkpoint = Checkpoint.open(folder.resolve("model.safetensors"))) {
            model.loadWeights(checkpoint::load, Device.CPU, DType.FLOAT32);
        }
        try {
            check(model, jobs(folder));
        } finally {
            model.toMeta();
        }
    }

    private static void dispatched(Path folder, String map, String checkpointFile) throws Exception {
        ChatGLMLanguageModel model = ChatGLMLanguageModel.create(ChatGLMConfig.fromJson(folder.resolve("config.json")),
                DType.FLOAT32);
        DispatchOptions options = DispatchOptions.builder().deviceMap(map).prefetch(1)
                .offloadFolder(Files.createTempDirectory(offloadRoot, "offload")).noSplitModuleClasses("GLMBlock")
                .build();
        try (DispatchedModel<ChatGLMLanguageModel> d = BigModel.loadCheckpointAndDispatch(model,
                folder.resolve(checkpointFile), options)) {
            assertThat(d.hfDeviceMap().devices()).contains(Device.DISK);
            check(model, jobs(folder));
            // Every offloaded block was left by its last user: a session on a thread of its own does not wait on a
            // lock that a pool thread still holds.
            ExecutorService fresh = Executors.newSingleThreadExecutor();
            try {
                List<Job> one = jobs(folder).subList(0, 1);
                fresh.submit(() -> {
                    check(model, one);
                    return null;
                }).get(120, TimeUnit.SECONDS);
            } finally {
                fresh.shutdownNow();
            }
        }
    }

    /** The fixture's greedy prompts, variants of them, and seeded sampling on each: 8 different sessions. */
    private static List<Job> jobs(Path folder) throws Exception {
        JsonNode cases = new ObjectMapper().readTree(folder.resolve("expected.json").toFile()).get("cases");
        List<Job> jobs = new ArrayList<>();
        for (JsonNode c : cases) {
            if (c.get("kind").asText().equals("greedy")) {
                jobs.add(new Job(c.get("name").asText(), longs(c.get("prompt_ids")), c.get("max_new_tokens").asInt(),
                        null, longs(c.get("new_ids"))));
            }
        }
        assertThat(jobs).hasSize(2);
        List<Job> fromFixture = List.copyOf(jobs);
        for (Job j : fromFixture) {
            long[] variant = j.prompt().clone();
            variant[0] = variant[0] == 101 || variant[0] == 77 ? 23 : 101; // another text id, same specials
            jobs.add(new Job(j.name() + "+variant", variant, 12, null, null));
            jobs.add(new Job(j.name() + "+sampled-7", j.prompt(), 20, 7L, null));
            jobs.add(new Job(j.name() + "+variant-sampled-1234", variant, 14, 1234L, null));
        }
        assertThat(jobs).hasSize(THREADS);
        return jobs;
    }

    private static long[] run(ChatGLMLanguageModel model, Job job) {
        try (PointerScope scope = new PointerScope()) {
            return new Generator(model).generate(job.request()).newIds()[0];
        }
    }

    private static void check(ChatGLMLanguageModel model, List<Job> jobs) throws Exception {
        List<long[]> sequential = new ArrayList<>();
        for (Job j : jobs) {
            long[] ids = run(model, j);
            if (j.officialNew() != null) {
                assertThat(ids).as(j.name() + " (official ids)").containsExactly(j.officialNew());
            }
            sequential.add(ids);
        }
        ExecutorService pool = Executors.newFixedThreadPool(THREADS);
        try {
            for (int round = 0; round < ROUNDS; round++) {
                CountDownLatch start = new CountDownLatch(1);
                List<Future<long[]>> futures = new ArrayList<>();
                // Each round shifts which thread runs which job, so different interleavings are tried.
                for (int t = 0; t < THREADS; t++) {
                    Job j = jobs.get((t + round) % jobs.size());
                    futures.add(pool.submit(() -> {
                        start.await();
                        return run(model, j);
                    }));
                }
                start.countDown();
                for (int t = 0; t < THREADS; t++) {
                    int job = (t + round) % jobs.size();
                    long[] got = futures.get(t).get(TIMEOUT_SECONDS, TimeUnit.SECONDS);
                    assertThat(got).as("round " + round + ", " + jobs.get(job).name() + ": "
                            + Arrays.toString(got)).containsExactly(sequential.get(job));
                }
            }
        } finally {
            pool.shutdownNow();
            assertThat(pool.awaitTermination(TIMEOUT_SECONDS, TimeUnit.SECONDS)).isTrue();
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
