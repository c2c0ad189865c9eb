package io.github.bigmodel.chatglm;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.Module;
import io.github.bigmodel.core.ModuleList;
import io.github.bigmodel.core.quant.Precision;
import io.github.bigmodel.core.testing.ReferenceTree;
import io.github.bigmodel.dispatch.BigModel;
import io.github.bigmodel.dispatch.DispatchOptions;
import io.github.bigmodel.dispatch.DispatchedModel;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.DynamicContainer;
import org.junit.jupiter.api.DynamicNode;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;
import org.junit.jupiter.api.io.TempDir;
import io.github.bigmodel.chatglm.internal.Ops;
import io.github.bigmodel.chatglm.generation.Generator;
import io.github.bigmodel.chatglm.generation.GenerationResult;
import io.github.bigmodel.chatglm.generation.GenerationRequest;
import io.github.bigmodel.chatglm.model.ForwardInput;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.dispatch.plan.DeviceMapPlanner;
import io.github.bigmodel.dispatch.plan.DeviceMap;

/**
 * Placement invariance: where the weights sit must not change a single bit of what the model computes. For every
 * reference model of the tree and each form (float32, the model's half type, int8 and int4 through
 * {@code cpuPrecision}), every distinct device map that the four strategies plan while the CPU budget sweeps from 0
 * (everything that can go to disk does) to the whole model, and hand-written maps ({@code {"": "disk"}},
 * {@code {"transformer": "disk"}}, the container of the blocks on disk, a block split between the CPU and disk down
 * to a single tensor, alternating blocks) give forward logits and greedy ids bit-identical to the all-in-memory
 * run of the same form. Runs alternate prefetch on and off and read disk weights in place from safetensors, or
 * through an offload folder (a torch {@code .bin} checkpoint, or a dtype conversion).
 *
 * <p>Every fact (the blocks, their count, the inputs) comes from the tree: the modules of the model built from
 * {@code config.json}, the cases of {@code expected.json}. The in-memory run of a form is computed once.
 */
class PlacementInvarianceTest {

    static final List<String> STRATEGIES = List.of("auto", "balanced", "balanced_low_0", "sequential");
    /**
     * {@code -Dbigmodel.invariance.exhaustive=true} (the Maven profile {@code invariance-exhaustive}): 32 budget
     * steps, every planned map run even when another strategy planned it already, every hand-written map from
     * every checkpoint with and without prefetch.
     */
    static final boolean EXHAUSTIVE = Boolean.getBoolean("bigmodel.invariance.exhaustive");
    /** Budget steps between 0 and the whole model (the sweep has {@code STEPS + 1} points). */
    static final int STEPS = EXHAUSTIVE ? 32 : 8;

    @TempDir
    static Path offloadRoot;

    /** A precision setting: the float dtype of the weights and the blocks' linear precision (null: float). */
    record Form(String name, DType dtype, Precision precision) {
    }

    /** Inputs from the tree: a forward case's ids, a greedy case's prompt and length. */
    record Probe(long[] forwardIds, long[] greedyPrompt, int greedyTokens) {
    }

    /** What one placement computed. */
    record Outcome(float[] logits, long[] greedy, DeviceMap map) {
    }

    /** Where a run reads its weights and whether it prefetches. */
    record Source(String checkpointFile, int prefetch) {
    }

    private static final Map<String, Outcome> BASELINES = new ConcurrentHashMap<>();
    private static final Map<String, Path> FOLDERS = new ConcurrentHashMap<>();

    @TestFactory
    Stream<DynamicNode> everyPlacementComputesTheSame() throws IOException {
        List<DynamicNode> nodes = new ArrayList<>();
        for (Path folder : referenceModels()) {
            for (Form form : forms(folder)) {
                String label = folder.getFileName() + "/" + form.name();
                nodes.add(DynamicContainer.dynamicContainer(label, Stream.of(
                        DynamicTest.dynamicTest("budget sweep x strategies", () -> sweep(folder, form)),
                        DynamicTest.dynamicTest("hand-written maps", () -> handWritten(folder, form)))));
            }
        }
        assertThat(nodes).as("reference models under " + ReferenceTree.models()).isNotEmpty();
        return nodes.stream();
    }

    /** Every folder of the tree's models with a config and a single-file safetensors checkpoint. */
    static List<Path> referenceModels() throws IOException {
        try (Stream<Path> s = Files.list(ReferenceTree.models())) {
            return s.filter(p -> Files.isRegularFile(p.resolve("config.json"))
                    && Files.isRegularFile(p.resolve("model.safetensors"))
                    && Files.isRegularFile(p.resolve("expected.json"))).sorted().collect(Collectors.toList());
        }
    }

    /** float32, the model's half type (bfloat16 for a float32 model), int8 and int4 over the stored float type. */
    static List<Form> forms(Path folder) {
        DType stored = ChatGLMConfig.fromJson(folder.resolve("config.json")).torchDtype();
        DType half = stored == DType.FLOAT16 || stored == DType.BFLOAT16 ? stored : DType.BFLOAT16;
        DType quantFloat = stored == DType.FLOAT16 || stored == DType.BFLOAT16 ? stored : DType.FLOAT32;
        return List.of(new Form("float32", DType.FLOAT32, null), new Form(half.torchName(), half, null),
                new Form("int8", quantFloat, Precision.INT8), new Form("int4", quantFloat, Precision.INT4));
    }

    /** The checkpoints a run may read: the single safetensors file, and the .bin shards when the tree has them. */
    static List<Source> sources(Path folder) {
        List<String> files = new ArrayList<>(List.of("model.safetensors"));
        if (Files.isRegularFile(folder.resolve("pytorch_model.bin.index.json"))) {
            files.add("pytorch_model.bin.index.json");
        }
        List<Source> out = new ArrayList<>();
        for (int prefetch : new int[] {1, 0}) {
            for (String f : files) {
                out.add(new Source(f, prefetch));
            }
        }
        return out;
    }

    private void sweep(Path folder, Form form) throws Exception {
        Outcome baseline = baseline(folder, form);
        long whole = create(folder, form.dtype()).byteSize();
        List<Source> sources = sources(folder);
        // Several strategies plan the same map without GPUs: each distinct map is loaded and run once, by the
        // first strategy that planned it (planning alone is cheap; loading is checked to give the planned map).
        Map<String, List<String>> plannedBy = new LinkedHashMap<>();
        boolean wholeInMemory = false;
        boolean mixed = false;
        long allDisk = 0;
        long noDisk = whole;
        int runs = 0;
        for (int step = 0; step <= STEPS; step++) {
            long budget = whole * step / STEPS;
            for (String strategy : STRATEGIES) {
                String label = strategy + " cpu=" + budget + "B (" + step + "/" + STEPS + ")";
                Source src = sources.get(runs % sources.size());
                DispatchOptions.Builder b = options(folder, form, src).strategy(strategy).maxMemory("cpu=" + budget);
                DeviceMap planned = plan(folder, form, b.build());
                String json = planned.toJson();
                if (step == 0) {
                    // Nothing fits a zero budget: every entry goes to disk, the whole model if it can.
                    assertThat(planned.devices()).as(label + " " + json).containsOnly(Device.DISK);
                }
                wholeInMemory |= !planned.devices().contains(Device.DISK);
                mixed |= planned.devices().size() > 1;
                if (planned.devices().equals(java.util.Set.of(Device.DISK))) {
                    allDisk = Math.max(allDisk, budget);
                } else if (!planned.devices().contains(Device.DISK)) {
                    noDisk = Math.min(noDisk, budget);
                }
                boolean seen = plannedBy.containsKey(json);
                plannedBy.computeIfAbsent(json, k -> new ArrayList<>()).add(label);
                if (seen && !EXHAUSTIVE) {
                    continue;
                }
                runs++;
                Outcome got = run(folder, form, b, src);
                assertThat(got.map().toJson()).as(label + ": the map loaded is the map planned").isEqualTo(json);
                assertSame(baseline, got, label + " " + json + " from " + src);
            }
        }
        assertThat(plannedBy.values().stream().flatMap(List::stream).map(l -> l.substring(0, l.indexOf(' ')))
                .distinct()).containsExactlyInAnyOrderElementsOf(STRATEGIES);
        assertThat(wholeInMemory).as("the sweep reaches a budget that holds the whole model").isTrue();
        // A small model can jump from all on disk to all on the CPU between two grid points: find a budget between
        // them that splits it (one exists: the CPU keeps the largest layer's room, so a budget just under what the
        // whole model needs leaves its last part on disk).
        for (long lo = allDisk, hi = noDisk; !mixed && hi - lo > 1; ) {
            long budget = lo + (hi - lo) / 2;
            Source src = sources.get(runs % sources.size());
            DispatchOptions.Builder b = options(folder, form, src).strategy("sequential").maxMemory("cpu=" + budget);
            DeviceMap planned = plan(folder, form, b.build());
            if (planned.devices().size() > 1) {
                mixed = true;
                runs++;
                String label = "sequential cpu=" + budget + "B (between grid points)";
                Outcome got = run(folder, form, b, src);
                assertThat(got.map().toJson()).as(label + ": the map loaded is the map planned")
                        .isEqualTo(planned.toJson());
                assertSame(baseline, got, label + " " + planned.toJson() + " from " + src);
            } else if (planned.devices().contains(Device.DISK)) {
                lo = budget;
            } else {
                hi = budget;
            }
        }
        assertThat(mixed).as("a budget that splits the model between cpu and disk, maps planned: " + plannedBy)
                .isTrue();
    }

    /** The map {@link BigModel#loadCheckpointAndDispatch} plans for these options, planned on a meta model. */
    static DeviceMap plan(Path folder, Form form, DispatchOptions o) {
        return DeviceMapPlanner.plan(create(folder, form.dtype()), o.strategy(), o.maxMemory(), o.plan()).deviceMap();
    }

    private void handWritten(Path folder, Form form) throws Exception {
        Outcome baseline = baseline(folder, form);
        ChatGLMLanguageModel meta = create(folder, form.dtype());
        int layers = ChatGLMConfig.fromJson(folder.resolve("config.json")).numLayers();
        String blocks = blocksPath(meta, layers);
        String top = blocks.substring(0, blocks.indexOf('.'));
        // ChatGLM2/3 hold the blocks in transformer.encoder; ChatGLM-6B's list sits in transformer itself.
        String container = parent(blocks).equals(top) ? blocks : parent(blocks);
        Module lastBlock = meta.module(blocks + "." + (layers - 1));
        List<String> inner = lastBlock.children().entrySet().stream()
                .filter(e -> !e.getValue().children().isEmpty()).map(Map.Entry::getKey).collect(Collectors.toList());
        assertThat(inner).as("the block's attention and MLP").hasSizeGreaterThanOrEqualTo(2);
        String splitBlock = blocks + "." + (layers - 1);
        Module mlp = lastBlock.module(inner.get(inner.size() - 1));
        String mlpFirst = mlp.children().keySet().iterator().next();
        String tensorEntry = splitBlock + "." + inner.get(inner.size() - 1) + "." + mlpFirst + "."
                + mlp.module(mlpFirst).parameters().keySet().iterator().next();
        Map<String, Map<String, String>> maps = new LinkedHashMap<>();
        maps.put("whole model on disk", Map.of("", "disk"));
        maps.put(top + " on disk", complete(meta, Map.of(top, "disk")));
        maps.put(container + " on disk", complete(meta, Map.of(container, "disk")));
        Map<String, String> split = new LinkedHashMap<>();
        split.put(splitBlock + "." + inner.get(0), "disk");
        split.put(tensorEntry, "disk");
        maps.put("block " + splitBlock + " split across cpu and disk", complete(meta, split));
        Map<String, String> alternate = new LinkedHashMap<>();
        for (int i = 0; i < layers; i++) {
            alternate.put(blocks + "." + i, i % 2 == 0 ? "disk" : "cpu");
        }
        maps.put("alternating blocks", complete(meta, alternate));
        List<Source> sources = sources(folder);
        int i = 0;
        // Cycling the sources covers each of them (prefetch on/off, in place/offload folder) with several maps.
        for (Map.Entry<String, Map<String, String>> e : maps.entrySet()) {
            for (int k = 0; k < (EXHAUSTIVE ? sources.size() : 1); k++) {
                Source src = sources.get(i++ % sources.size());
                String json = new ObjectMapper().writeValueAsString(e.getValue());
                DispatchOptions.Builder b = options(folder, form, src).deviceMap(json);
                Outcome got = run(folder, form, b, src);
                assertThat(got.map().devices()).as(e.getKey()).contains(Device.DISK);
                assertSame(baseline, got, e.getKey() + " " + json + " from " + src);
            }
        }
    }

    private static Outcome baseline(Path folder, Form form) {
        return BASELINES.computeIfAbsent(folder + "|" + form.name(), k -> {
            DispatchOptions.Builder b = options(folder, form, new Source("model.safetensors", 0))
                    .deviceMap("{\"\": \"cpu\"}");
            return run(folder, form, b, new Source("model.safetensors", 0));
        });
    }

    static DispatchOptions.Builder options(Path folder, Form form, Source src) {
        // No-split classes: the model's own.
        DispatchOptions.Builder b = DispatchOptions.builder().dtype(form.dtype()).prefetch(src.prefetch());
        // One folder per model, form and checkpoint: later loads reuse what earlier ones wrote, as users do.
        b.offloadFolder(FOLDERS.computeIfAbsent(folder + "|" + form.name() + "|" + src.checkpointFile(), k -> {
            try {
                return Files.createTempDirectory(offloadRoot, "offload");
            } catch (IOException e) {
                throw new java.io.UncheckedIOException(e);
            }
        }));
        if (form.precision() != null) {
            b.cpuPrecision(form.precision());
        }
        return b;
    }

    /** Loads with {@code options} and computes the probe's logits and greedy ids. */
    static Outcome run(Path folder, Form form, DispatchOptions.Builder options, Source src) {
        Probe probe = probe(folder);
        ChatGLMLanguageModel model = create(folder, form.dtype());
        closeDeferred();
        DispatchedModel<ChatGLMLanguageModel> d = BigModel.loadCheckpointAndDispatch(model,
                folder.resolve(src.checkpointFile()), options.build());
        try {
            DeviceMap map = d.hfDeviceMap();
            float[] logits;
            try (PointerScope scope = new PointerScope()) {
                Tensor t = model.forward(ForwardInput.builder(new long[][] {probe.forwardIds()}).build());
                logits = Ops.floats(t.contiguous());
            }
            long[] greedy;
            try (PointerScope scope = new PointerScope()) {
                GenerationResult r = new Generator(model).generate(GenerationRequest
                        .builder(new long[][] {probe.greedyPrompt()}).maxNewTokens(probe.greedyTokens())
                        .stopAtEos(false).build());
                greedy = r.newIds()[0];
            }
            return new Outcome(logits, greedy, map);
        } finally {
            if (src.prefetch() > 0) {
                DEFERRED.add(d);
            } else {
                d.close();
            }
        }
    }

    /**
     * A prefetching model is closed when the next run starts, not right after its own: until Prefetcher.close waits
     * for a read in flight (issue 18, helper native), closing right after a forward can free a tensor the prefetch
     * thread is still reading, a JVM crash that has nothing to do with placement. A load and two forwards later
     * the read-ahead of the previous model is long done.
     */
    private static final List<DispatchedModel<?>> DEFERRED = new ArrayList<>();

    private static synchronized void closeDeferred() {
        DEFERRED.forEach(DispatchedModel::close);
        DEFERRED.clear();
    }

    @AfterAll
    static void closeLast() throws InterruptedException {
        Thread.sleep(200); // the last model's read-ahead, as above
        closeDeferred();
    }

    private static void assertSame(Outcome want, Outcome got, String what) {
        assertThat(got.greedy()).as(what + ": greedy ids").containsExactly(want.greedy());
        assertThat(got.logits()).as(what + ": logits length").hasSameSizeAs(want.logits());
        for (int i = 0; i < want.logits().length; i++) {
            if (Float.floatToRawIntBits(got.logits()[i]) != Float.floatToRawIntBits(want.logits()[i])) {
                throw new AssertionError(what + ": logit " + i + " is " + got.logits()[i] + ", in memory "
                        + want.logits()[i] + " (bit-identical expected)");
            }
        }
    }

    static ChatGLMLanguageModel create(Path folder, DType dtype) {
        return ChatGLMLanguageModel.create(ChatGLMConfig.fromJson(folder.resolve("config.json")), dtype);
    }

    /** The list that holds the blocks: the module list with as many elements as the config has layers. */
    static String blocksPath(Module model, int layers) {
        List<String> found = model.namedModules().entrySet().stream()
                .filter(e -> e.getValue() instanceof ModuleList && e.getValue().children().size() == layers)
                .map(Map.Entry::getKey).collect(Collectors.toList());
        assertThat(found).as("the block list of " + model.className()).hasSize(1);
        return found.get(0);
    }

    static Probe probe(Path folder) {
        try {
            JsonNode cases = new ObjectMapper().readTree(folder.resolve("expected.json").toFile()).get("cases");
            long[] forward = null;
            long[] prompt = null;
            int tokens = 0;
            for (JsonNode c : cases) {
                String kind = c.get("kind").asText();
                if (forward == null && kind.equals("forward")) {
                    forward = longs(c.get("input_ids"));
                } else if (prompt == null && kind.equals("greedy")) {
                    prompt = longs(c.get("prompt_ids"));
                    tokens = c.get("new_ids").size();
                }
            }
            assertThat(forward).as("a forward case in " + folder).isNotNull();
            assertThat(prompt).as("a greedy case in " + folder).isNotNull();
            return new Probe(forward, prompt, tokens);
        } catch (IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }

    /**
     * {@code fixed} plus {@code "cpu"} for everything it leaves uncovered, at the shallowest level that does not
     * overlap a fixed entry (siblings along each fixed entry's path, tensors included).
     */
    static Map<String, String> complete(Module model, Map<String, String> fixed) {
        Set<String> onPath = new LinkedHashSet<>();
        for (String key : fixed.keySet()) {
            String n = key;
            onPath.add(n);
            while (!n.isEmpty()) {
                n = parent(n);
                onPath.add(n);
            }
        }
        Map<String, String> out = new LinkedHashMap<>(fixed);
        for (String a : onPath) {
            Module m = model.findModule(a);
            if (fixed.containsKey(a) || m == null) {
                continue;
            }
            List<String> members = new ArrayList<>(m.children().keySet());
            members.addAll(m.parameters().keySet());
            members.addAll(m.buffers().keySet());
            for (String c : members) {
                String p = a.isEmpty() ? c : a + "." + c;
                if (!onPath.contains(p)) {
                    out.putIfAbsent(p, "cpu");
                }
            }
        }
        return out;
    }

    static String parent(String name) {
        int dot = name.lastIndexOf('.');
        return dot < 0 ? "" : name.substring(0, dot);
    }

    private static long[] longs(JsonNode array) {
        long[] out = new long[array.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = array.get(i).asLong();
        }
        return out;
    }
}
