package io.github.bigmodel.pipeline;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.github.bigmodel.chatglm.generation.GenerationRequest;
import io.github.bigmodel.chatglm.generation.GenerationResult;
import io.github.bigmodel.chatglm.generation.Generator;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.chatglm.model.ForwardInput;
import io.github.bigmodel.chatglm.model.StageSpan;
import io.github.bigmodel.core.testing.ReferenceTree;
import io.github.bigmodel.dispatch.DispatchOptions;
import io.github.bigmodel.dispatch.DispatchedModel;
import io.github.bigmodel.dispatch.plan.DeviceMap;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.stream.Stream;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;
import org.junit.jupiter.api.io.TempDir;

/**
 * The reference models split over 2 and 3 JVMs on loopback (this JVM is rank 0, the coordinator; workers are
 * separate processes loading only their own stage): forward logits, and the logits and ids of every greedy step, are
 * bit-identical to the whole model in this JVM, for ChatGLM3 and ChatGLM-6B.
 */
// PointerScope blocks are used for what they release on close, not referenced by name.
@SuppressWarnings("try")
class PipelineProcessesTest {

    private static final ObjectMapper JSON = new ObjectMapper();

    private static final List<String> MODELS = List.of("chatglm3-6b-tiny", "chatglm-6b-tiny");
    private static final int[] WORLDS = {2, 3};

    @TempDir
    static Path tmp;

    /** Every configuration's workers, started at once so that their JVMs load side by side. */
    private static Workers workers;
    private static final java.util.Map<String, int[]> PORTS = new java.util.HashMap<>();
    private static final java.util.Map<String, Path> MAPS = new java.util.HashMap<>();

    @org.junit.jupiter.api.BeforeAll
    static void startWorkers() throws Exception {
        workers = new Workers(tmp);
        for (String name : MODELS) {
            Path folder = ReferenceTree.models().resolve(name);
            int layers = io.github.bigmodel.chatglm.ChatGLMConfig.fromJson(folder.resolve("config.json")).numLayers();
            for (int world : WORLDS) {
                String key = name + "/" + world;
                Path map = PipelineTestSupport.hostMap(folder, spans(layers, world), tmp);
                int port = Workers.freePort();
                MAPS.put(key, map);
                PORTS.put(key, new int[] {port});
                for (int r = 1; r < world; r++) {
                    workers.start(port, r, world, folder, map, 240, 60);
                }
            }
        }
    }

    @org.junit.jupiter.api.AfterAll
    static void stopWorkers() throws Exception {
        try {
            // Every configuration shut its workers down: they all exit 0 (bounded wait).
            assertThat(workers.awaitExit(60)).as("workers shut down cleanly:\n" + workers.allLogs()).isTrue();
        } finally {
            workers.close();
        }
    }

    @TestFactory
    Stream<DynamicTest> processesGiveTheSameBits() {
        List<DynamicTest> tests = new ArrayList<>();
        for (String name : MODELS) {
            for (int world : WORLDS) {
                tests.add(DynamicTest.dynamicTest(name + " in " + world + " processes",
                        () -> run(ReferenceTree.models().resolve(name), world)));
            }
        }
        return tests.stream();
    }

    /** 2 ranks: blocks split in half, the head on the worker; 3 ranks: one run of blocks each, the head last. */
    static List<StageSpan> spans(int layers, int world) {
        int mid = layers / 2;
        return world == 2
                ? List.of(new StageSpan(true, 0, mid, false), new StageSpan(false, mid, layers, true))
                : List.of(new StageSpan(true, 0, 0, false), new StageSpan(false, 0, mid, false),
                        new StageSpan(false, mid, layers, true));
    }

    private void run(Path folder, int world) throws Exception {
        String key = folder.getFileName() + "/" + world;
        Path map = MAPS.get(key);
        int port = PORTS.get(key)[0];
        ChatGLMLanguageModel whole = PipelineTestSupport.wholeModel(folder);
        PipelineCoordinator.Options o = PipelineCoordinator.Options.of("127.0.0.1", port)
                .withTimeouts(Duration.ofSeconds(240), Duration.ofSeconds(60));
        try (PipelineCoordinator c = PipelineCoordinator.start(folder, DeviceMap.fromJson(Files.readString(map)), o);
             DispatchedModel<ChatGLMLanguageModel> first = c.loadModel(DispatchOptions.builder().build())) {
            assertThat(c.plan().world()).isEqualTo(world);
            compare(folder, whole, first.model());
            assertThat(c.ping()).as("round trip ms").isPositive();
            c.shutdownWorkers();
        } catch (RuntimeException | AssertionError e) {
            throw new AssertionError(e.getMessage() + "\nworker logs:\n" + workers.allLogs(), e);
        } finally {
            whole.toMeta();
        }
    }

    static void compare(Path folder, ChatGLMLanguageModel whole, ChatGLMLanguageModel first) throws Exception {
        JsonNode expected = JSON.readTree(folder.resolve("expected.json").toFile());
        int forwards = 0;
        int greedy = 0;
        List<GenerationRequest> requests = new ArrayList<>();
        for (JsonNode c : expected.get("cases")) {
            String what = folder.getFileName() + " " + c.get("name").asText();
            switch (c.get("kind").asText()) {
                case "forward" -> {
                    long[][] ids = {longs(c.get("input_ids"))};
                    try (PointerScope scope = new PointerScope()) {
                        Tensor got = first.forward(ForwardInput.builder(ids).build());
                        Tensor want = whole.forward(ForwardInput.builder(ids).build());
                        assertThat(got.equal(want)).as(what + " logits bit-identical").isTrue();
                    }
                    forwards++;
                }
                case "greedy" -> {
                    GenerationRequest request = GenerationRequest.builder(new long[][] {longs(c.get("prompt_ids"))})
                            .maxNewTokens(c.get("max_new_tokens").asInt()).stopAtEos(false).keepStepScores(true)
                            .build();
                    assertSameGeneration(whole, first, request, what);
                    requests.add(request);
                    greedy++;
                }
                default -> {
                    // kv_cache and batch cases run in the in-process stage test.
                }
            }
        }
        assertThat(forwards).as("forward cases").isPositive();
        assertThat(greedy).as("greedy cases").isPositive();
        assertInterleavedSessions(folder, whole, first, requests);
    }

    /** Sessions stepped in turn (each step of one between two of the others) give each one's own answer. */
    static void assertInterleavedSessions(Path folder, ChatGLMLanguageModel whole, ChatGLMLanguageModel first,
            List<GenerationRequest> requests) {
        assertThat(requests).as("greedy requests to interleave").hasSizeGreaterThan(1);
        List<GenerationResult> want = new ArrayList<>();
        for (GenerationRequest r : requests) {
            want.add(new Generator(whole).generate(r));
        }
        List<Generator.Session> sessions = new ArrayList<>();
        Generator generator = new Generator(first);
        try {
            for (GenerationRequest r : requests) {
                sessions.add(generator.start(r));
            }
            boolean running = true;
            while (running) {
                running = false;
                for (Generator.Session session : sessions) {
                    if (!session.isFinished()) {
                        session.step();
                        running = true;
                    }
                }
            }
            for (int i = 0; i < sessions.size(); i++) {
                GenerationResult got = sessions.get(i).result();
                String what = folder.getFileName() + " interleaved session " + i;
                assertThat(got.newIds()).as(what + " ids").isDeepEqualTo(want.get(i).newIds());
                for (int step = 0; step < got.stepScores().length; step++) {
                    assertThat(Arrays.equals(got.stepScores()[step][0], want.get(i).stepScores()[step][0]))
                            .as(what + " step " + step + " logits bit-identical").isTrue();
                }
            }
        } finally {
            sessions.forEach(Generator.Session::close);
        }
    }

    static void assertSameGeneration(ChatGLMLanguageModel whole, ChatGLMLanguageModel first,
            GenerationRequest request, String what) {
        GenerationResult want = new Generator(whole).generate(request);
        GenerationResult got = new Generator(first).generate(request);
        assertThat(got.newIds()).as(what + " greedy ids").isDeepEqualTo(want.newIds());
        float[][][] a = got.stepScores();
        float[][][] b = want.stepScores();
        assertThat(a.length).isEqualTo(b.length);
        for (int i = 0; i < a.length; i++) {
            for (int r = 0; r < a[i].length; r++) {
                assertThat(Arrays.equals(a[i][r], b[i][r])).as(what + " step " + i + " logits bit-identical")
                        .isTrue();
            }
        }
    }

    static long[] longs(JsonNode array) {
        long[] out = new long[array.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = array.get(i).asLong();
        }
        return out;
    }
}
