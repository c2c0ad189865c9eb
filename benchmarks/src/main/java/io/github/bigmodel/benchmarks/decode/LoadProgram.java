package io.github.bigmodel.benchmarks.decode;

import com.sun.management.OperatingSystemMXBean;
import io.github.bigmodel.chatglm.ChatGLMConfig;
import io.github.bigmodel.chatglm.generation.GenerationRequest;
import io.github.bigmodel.chatglm.generation.Generator;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.NativeRuntime;
import io.github.bigmodel.core.quant.Precision;
import io.github.bigmodel.dispatch.BigModel;
import io.github.bigmodel.dispatch.DispatchOptions;
import io.github.bigmodel.dispatch.DispatchedModel;
import io.github.bigmodel.dispatch.plan.DeviceMap;
import java.lang.management.ManagementFactory;
import java.nio.file.Path;
import java.util.Locale;
import java.util.Map;

/**
 * How long loading a ChatGLM folder onto the CPU takes, and what it costs in anonymous memory (docs/benchmarks.md,
 * "Loading"): wall time and process CPU time of {@code loadCheckpointAndDispatch} with the map {@code {"": "cpu"}}
 * in bf16, anonymous memory ({@code RssAnon}) before, after and at its peak (sampled every 10 ms), then the first
 * forward step of a 16-token prompt. CPU time is what to scale on a shared machine: a 6B-shaped folder with fewer
 * layers ({@code GenerateCheckpoint --set num_layers=2}) loads the embedding and output layer plus N blocks, so the
 * per-block cost is (CPU time - the same folder's bf16 CPU time) / N.
 *
 * <pre>
 * java -cp benchmarks/target/benchmarks.jar io.github.bigmodel.benchmarks.decode.LoadProgram \
 *     --model /data/glm-2layers [--precision int8|int4] [--copy] [--threads 2]
 * </pre>
 *
 * <p>{@code --precision} quantizes the block linears while loading (a converted folder loads as stored without
 * it); {@code --copy} turns the default mapped views off ({@code offloadStateDict(false)}).
 */
public final class LoadProgram {

    private LoadProgram() {
    }

    public static void main(String[] args) {
        Path model = null;
        Precision precision = null;
        boolean copy = false;
        int threads = 0;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--model" -> model = Path.of(args[++i]);
                case "--precision" -> precision = Precision.parse(args[++i]);
                case "--copy" -> copy = true;
                case "--threads" -> threads = Integer.parseInt(args[++i]);
                default -> {
                    System.err.println("usage: LoadProgram --model DIR [--precision int8|int4] [--copy] [--threads N]");
                    System.exit(2);
                }
            }
        }
        if (model == null) {
            System.err.println("usage: LoadProgram --model DIR [--precision int8|int4] [--copy] [--threads N]");
            System.exit(2);
        }
        NativeRuntime.init();
        if (threads > 0) {
            NativeRuntime.setThreads(threads);
        }
        DispatchOptions.Builder b = DispatchOptions.builder().dtype(DType.BFLOAT16)
                .deviceMap(DeviceMap.of(Map.of("", Device.CPU))).prefetch(0).offloadStateDict(!copy);
        if (precision != null) {
            b.cpuPrecision(precision);
        }
        OperatingSystemMXBean os = (OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean();
        try (MemorySampler sampler = MemorySampler.start(10)) {
            ChatGLMLanguageModel glm = ChatGLMLanguageModel.create(ChatGLMConfig.fromJson(model.resolve("config.json")),
                    DType.BFLOAT16);
            long anonBefore = MemorySampler.anonymousNow();
            long cpu0 = os.getProcessCpuTime();
            long t0 = System.nanoTime();
            try (DispatchedModel<ChatGLMLanguageModel> d = BigModel.loadCheckpointAndDispatch(glm, model, b.build())) {
                double loadS = (System.nanoTime() - t0) / 1e9;
                double cpuS = (os.getProcessCpuTime() - cpu0) / 1e9;
                long anonAfter = MemorySampler.anonymousNow();
                long peak = sampler.peakAnonymousBytes();
                long[] ids = new long[16];
                for (int i = 0; i < ids.length; i++) {
                    ids[i] = 100 + 37L * i;
                }
                GenerationRequest request = GenerationRequest.builder(new long[][] {ids}).maxNewTokens(2)
                        .stopAtEos(false).build();
                double stepS;
                try (Generator.Session s = new Generator(glm).start(request)) {
                    long g0 = System.nanoTime();
                    s.step();
                    stepS = (System.nanoTime() - g0) / 1e9;
                }
                System.out.printf(Locale.ROOT, "model %s precision %s %s threads %d: load %.2f s wall, %.2f s CPU;"
                        + " anonymous %.2f GiB before, %.2f after, peak %.2f; first step (16-token prompt) %.2f s%n",
                        model, precision == null ? "as stored" : precision, copy ? "copied" : "mapped",
                        NativeRuntime.threads(), loadS, cpuS, gib(anonBefore), gib(anonAfter), gib(peak), stepS);
            }
        }
    }

    private static double gib(long bytes) {
        return bytes / (double) (1L << 30);
    }
}
