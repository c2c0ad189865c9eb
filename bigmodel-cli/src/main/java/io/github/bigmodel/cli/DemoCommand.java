package io.github.bigmodel.cli;

import io.github.bigmodel.chatglm.ChatGLMFamily;
import io.github.bigmodel.chatglm.TinyChatGLM3;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.chatglm.chat.ChatGLM;
import io.github.bigmodel.chatglm.chat.ChatOptions;
import io.github.bigmodel.chatglm.chat.ChatStream;
import io.github.bigmodel.chatglm.generation.GenerationConfig;
import io.github.bigmodel.dispatch.DispatchOptions;
import io.github.bigmodel.safetensors.Checkpoint;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.MemorySize;
import io.github.bigmodel.core.ProcessMemory;
import io.github.bigmodel.dispatch.plan.DeviceInventory;
import io.github.bigmodel.dispatch.plan.DeviceMapPlanner;
import io.github.bigmodel.dispatch.plan.DevicePlan;
import io.github.bigmodel.dispatch.plan.MaxMemory;
import io.github.bigmodel.dispatch.plan.ModuleSizes;
import io.github.bigmodel.dispatch.plan.PlanOptions;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.Callable;
import java.util.stream.Stream;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/**
 * {@code bigmodel demo}: the whole pipeline on a small model, with nothing to download: writes the tiny ChatGLM3
 * ({@link TinyChatGLM3}, as {@code bigmodel make-tiny}; random weights, sharded safetensors, its tokenizer) into a
 * temporary folder, reads it back
 * lazily, plans a device map under a small CPU budget, loads and dispatches it (blocks on disk), streams a chat
 * reply (random weights: the text is gibberish) and plans the real chatglm3-6b for a 10 GiB GPU.
 *
 * <pre>
 * ./bigmodel demo
 * ./bigmodel demo --keep --dir /tmp/bigmodel-demo
 * </pre>
 */
@Command(name = "demo", description = "Run the pipeline end to end on a small random-weight ChatGLM3 model.")
final class DemoCommand implements Callable<Integer> {

    @Option(names = "--dir", paramLabel = "DIR", description = "Where to write the demo model (default: a temporary folder).")
    Path dir;

    @Option(names = "--keep", description = "Keep the demo model folder afterwards.")
    boolean keep;

    @Option(names = "--prompt", paramLabel = "TEXT", defaultValue = "你好，请介绍一下你自己。",
            description = "The user message (default: ${DEFAULT-VALUE}).")
    String prompt;

    @Spec
    CommandSpec spec;

    @Override
    public Integer call() throws Exception {
        PrintWriter out = spec.commandLine().getOut();
        long start = System.nanoTime();
        Path folder = dir != null ? Files.createDirectories(dir) : Files.createTempDirectory("bigmodel-demo");
        try {
            run(out, folder);
        } finally {
            if (!keep && dir == null) {
                deleteRecursively(folder);
            }
        }
        out.printf(Locale.ROOT, "%nDemo finished in %.1f s.%n", (System.nanoTime() - start) / 1e9);
        return 0;
    }

    private void run(PrintWriter out, Path folder) throws Exception {
        // 1. A tokenizer, a config and random weights: the tiny ChatGLM3 (bigmodel make-tiny), in 1 MiB shards.
        TinyChatGLM3.write(folder, 1L << 20);
        ChatGLMFamily family = ChatGLMFamily.ofFolder(folder);
        section(out, "1. A ChatGLM3-architecture model in " + folder);

        // 2. Built on meta (no memory); its random weights were written shard by shard.
        ChatGLMLanguageModel meta = family.createModel(DType.FLOAT32);
        out.printf(Locale.ROOT, "built on meta: %,d parameters, %s in float32, 0 bytes allocated%n",
                meta.parameterCount(), MemorySize.format(meta.byteSize()));

        // 3. Read back lazily: names, dtypes, shapes from the headers only.
        section(out, "2. The checkpoint, listed without reading tensor data");
        try (Checkpoint checkpoint = Checkpoint.open(folder)) {
            List<io.github.bigmodel.safetensors.TensorInfo> tensors = checkpoint.tensors();
            InspectCommand.printTable(out, checkpoint, tensors.subList(0, Math.min(6, tensors.size())),
                    checkpoint.totalBytes());
            out.printf(Locale.ROOT, "(first 6 of %d tensors shown)%n", tensors.size());
        }

        // 4. Plan under a CPU budget smaller than the model: later blocks land on disk.
        section(out, "3. A device map under a small CPU budget");
        long budget = meta.byteSize() * 3 / 5;
        MaxMemory maxMemory = MaxMemory.parse("cpu=" + budget / 1024 + "KiB");
        DevicePlan plan = DeviceMapPlanner.plan(meta, "sequential", maxMemory,
                PlanOptions.defaults());
        Map<String, Device> map = plan.deviceMap().inModuleOrder(meta).asMap();
        out.println("budget: cpu=" + MemorySize.format(budget) + " for " + MemorySize.format(meta.byteSize())
                + " of weights");
        printPlan(out, plan, meta, DType.FLOAT32);

        // 5. Load under that budget (each tensor straight to its device, the rest read from disk per layer) and chat.
        section(out, "4. Load and dispatch under the plan, then chat (streaming)");
        ProcessMemory before = ProcessMemory.read();
        long loadStart = System.nanoTime();
        DispatchOptions options = DispatchOptions.builder().deviceMap(plan.deviceMap())
                .offloadFolder(folder.resolve("offload")).prefetch(1).build();
        try (ChatGLM glm = ChatGLM.load(folder, options)) {
            ProcessMemory after = ProcessMemory.read();
            out.printf(Locale.ROOT, "loaded in %.0f ms; process memory %s -> %s (anonymous %s -> %s)%n",
                    (System.nanoTime() - loadStart) / 1e6, MemorySize.format(before.residentBytes()),
                    MemorySize.format(after.residentBytes()), MemorySize.format(before.anonymousBytes()),
                    MemorySize.format(after.anonymousBytes()));
            out.println("hf_device_map: " + glm.hfDeviceMap().toJson());
            out.println("user: " + prompt);
            out.print("assistant (random weights, so gibberish): ");
            out.flush();
            long genStart = System.nanoTime();
            ChatOptions chatOptions = ChatOptions.builder()
                    .generation(GenerationConfig.builder().maxNewTokens(24).build()).build();
            int tokens;
            try (ChatStream stream = glm.streamChat(prompt, List.of(), chatOptions)) {
                stream.drain(delta -> {
                    out.print(delta);
                    out.flush();
                });
                tokens = stream.generatedTokens();
            }
            double ms = (System.nanoTime() - genStart) / 1e6;
            out.println();
            out.printf(Locale.ROOT, "%d tokens in %.0f ms (%.1f ms/token), the disk blocks read back each token%n",
                    tokens, ms, ms / Math.max(1, tokens));
        }

        // 6. The real thing, planned without a single weight.
        section(out, "5. The real chatglm3-6b (float16) on one 10 GiB GPU");
        ChatGLMLanguageModel real = ChatGLMFamily.ofPreset("chatglm3-6b").createModel(DType.FLOAT16);
        DevicePlan realPlan = DeviceMapPlanner.plan(real, "auto", MaxMemory.parse("0=10GiB,cpu=30GiB",
                        DeviceInventory.simulated(List.of(10L << 30), 30L << 30)),
                PlanOptions.builder().dtype(DType.FLOAT16).build());
        out.printf(Locale.ROOT, "%,d parameters%n", real.parameterCount());
        printPlan(out, realPlan, real, DType.FLOAT16);
    }

    private static void printPlan(PrintWriter out, DevicePlan plan, ChatGLMLanguageModel model, DType dtype) {
        Map<String, Device> map = plan.deviceMap().inModuleOrder(model).asMap();
        Map<Device, Double> bytes = new TreeMap<>(plan.deviceMap().bytesPerDevice(ModuleSizes.compute(model, dtype,
                Map.of())));
        Map<Device, List<String>> byDevice = new TreeMap<>();
        map.forEach((name, device) -> byDevice.computeIfAbsent(device, d -> new ArrayList<>()).add(name));
        for (Map.Entry<Device, Double> e : bytes.entrySet()) {
            out.printf(Locale.ROOT, "  %-7s %10s  %s%n", e.getKey(), MemorySize.format(e.getValue()),
                    PlanCommand.summarize(byDevice.getOrDefault(e.getKey(), List.of())));
        }
    }

    private static void section(PrintWriter out, String title) {
        out.println();
        out.println("== " + title);
    }

    private static void deleteRecursively(Path folder) throws Exception {
        try (Stream<Path> walk = Files.walk(folder)) {
            for (Path p : walk.sorted(Comparator.reverseOrder()).toList()) {
                Files.deleteIfExists(p);
            }
        }
    }
}
