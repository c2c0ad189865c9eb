package io.github.bigmodel.benchmarks.memory;

import io.github.bigmodel.chatglm.ChatGLMConfig;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.chatglm.model.ForwardInput;
import io.github.bigmodel.chatglm.model.KvCache;
import io.github.bigmodel.chatglm.model.StepWorkspace;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.NativeRuntime;
import io.github.bigmodel.core.ProcessMemory;
import io.github.bigmodel.core.quant.Precision;
import io.github.bigmodel.safetensors.Checkpoint;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.knowm.xchart.BitmapEncoder;
import org.knowm.xchart.XYChart;
import org.knowm.xchart.XYChartBuilder;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Measures the process's memory against context length for a ChatGLM2/ChatGLM3 model folder on the CPU and sets it
 * beside the library's prediction; writes {@code <name>-context-memory.csv} and {@code .png} (XChart) into the
 * output folder. See docs/memory.md for the method.
 *
 * <pre>{@code
 * java -cp benchmarks/target/benchmarks.jar io.github.bigmodel.benchmarks.memory.ContextMemoryProgram \
 *     /data/chatglm3-6b-random out/ --dtype bf16 --points 9 --fill zeros
 * }</pre>
 *
 * <p>Method, per context point {@code n} (from 0 to the model's maximum positions): one cache of the maximum
 * capacity holds {@code n - 1} positions, filled either by running the model on chunks of tokens
 * ({@code --fill compute}) or by writing zeros ({@code --fill zeros}, {@link KvCache#fillWithZerosForMeasurement}:
 * for the 6B shape, where a prefill of 8192 tokens on a small CPU takes hours); then one real decode step at
 * position {@code n - 1} runs every block with attention over {@code n} positions. The resident and anonymous
 * figures are read after the step, the peak is the kernel's high-water mark reset just before the step. Point 0
 * runs its step on a separate one-position cache, closed before measuring, so that the weights are paged in at
 * every point alike.
 *
 * <p>Prediction: baseline + weights + KV(n) (resident after the step) and + workspace(n) (peak during it). The
 * baseline is the resident memory after a warm-up cycle (load the model, one decode step, release the weights,
 * {@code System.gc()}): what the JVM and libtorch keep whatever the model; weights are the report's weight bytes; KV(n) is
 * {@link ChatGLMConfig#kvCacheBytesPerLayer} times the layers; workspace is {@link StepWorkspace#bytes}.
 */
// PointerScope blocks are used for what they release on close.
@SuppressWarnings("try")
public final class ContextMemoryProgram {

    private static final Logger LOG = LoggerFactory.getLogger(ContextMemoryProgram.class);

    /** One measured point. */
    public record Point(long context, long kvBytes, long workspaceBytes, long predictedResident, long predictedPeak,
            long measuredResident, long measuredAnonymous, long measuredPeak) {

        /** (measured - predicted) / predicted for the resident memory after the step. */
        public double residentError() {
            return (double) (measuredResident - predictedResident) / predictedResident;
        }

        /** The same for the peak during the step; NaN when the peak could not be reset before the step. */
        public double peakError() {
            return measuredPeak <= 0 ? Double.NaN : (double) (measuredPeak - predictedPeak) / predictedPeak;
        }
    }

    /** What a run produced. */
    public record Result(long baselineBytes, long weightBytes, List<Point> points, Path csv, Path png) {
    }

    private ContextMemoryProgram() {
    }

    /**
     * {@code <model folder> <output folder> [--dtype fp32|bf16|fp16] [--points N] [--fill compute|zeros]
     * [--chunk L]}.
     */
    public static void main(String[] args) {
        if (args.length < 2) {
            throw new IllegalArgumentException("Usage: ContextMemoryProgram <model folder> <output folder> "
                    + "[--dtype fp32|bf16|fp16] [--points N] [--fill compute|zeros] [--chunk L]");
        }
        DType dtype = null;
        int points = 9;
        boolean compute = true;
        int chunk = 64;
        for (int i = 2; i < args.length; i += 2) {
            if (i + 1 >= args.length) {
                throw new IllegalArgumentException("Option " + args[i] + " needs a value");
            }
            switch (args[i]) {
                case "--dtype" -> dtype = Precision.parse(args[i + 1]).dtype();
                case "--points" -> points = Integer.parseInt(args[i + 1]);
                case "--fill" -> compute = switch (args[i + 1]) {
                    case "compute" -> true;
                    case "zeros" -> false;
                    default -> throw new IllegalArgumentException("--fill is compute or zeros, not " + args[i + 1]);
                };
                case "--chunk" -> chunk = Integer.parseInt(args[i + 1]);
                default -> throw new IllegalArgumentException("Unknown option " + args[i]);
            }
        }
        Result r = run(Path.of(args[0]), Path.of(args[1]), dtype, points, compute, chunk);
        LOG.info("Wrote {} and {}", r.csv(), r.png());
    }

    /**
     * Runs the measurement.
     *
     * @param dtype   the weights' and cache's dtype, null for the config's
     * @param points  context points from 0 to the maximum, at least 2
     * @param compute fill the cache by running the model (true) or by writing zeros (false)
     * @param chunk   tokens per forward pass when computing
     */
    public static Result run(Path modelDir, Path outDir, DType dtype, int points, boolean compute, int chunk) {
        if (points < 2 || chunk < 1) {
            throw new IllegalArgumentException("points must be >= 2 and chunk >= 1: points=" + points
                    + ", chunk=" + chunk);
        }
        ChatGLMConfig config = ChatGLMConfig.fromJson(modelDir.resolve("config.json"));
        if (config.version() != ChatGLMConfig.Version.CHATGLM2) {
            throw new IllegalArgumentException(modelDir + " is a " + config.version()
                    + " model: this program measures ChatGLM2/ChatGLM3 checkpoints (one position id per token)");
        }
        DType type = dtype != null ? dtype : config.torchDtype();
        NativeRuntime.init();
        // Warm-up cycle: load, one step, unload. What stays (classes, JIT code, libtorch's thread pools and
        // kernels' first-use state) belongs to the process, not to the model; the mapped weights go with the model.
        ChatGLMLanguageModel warm = ChatGLMLanguageModel.create(config, type);
        try {
            try (Checkpoint checkpoint = Checkpoint.open(modelDir)) {
                warm.loadWeights(checkpoint::load, Device.CPU, type);
            }
            // Both paths the measurement takes: a chunk on top of a cache, then single decode steps.
            long warmChunk = Math.min(chunk, config.maxPositions() - 2L);
            try (KvCache once = warm.newCache(1, warmChunk + 2)) {
                step(warm, once, 1);
                step(warm, once, warmChunk);
                step(warm, once, 1);
            }
        } finally {
            warm.toMeta();
        }
        System.gc();
        long baseline = ProcessMemory.read().residentBytes();

        ChatGLMLanguageModel model = ChatGLMLanguageModel.create(config, type);
        try {
            try (Checkpoint checkpoint = Checkpoint.open(modelDir)) {
                model.loadWeights(checkpoint::load, Device.CPU, type);
            }
            long weights = model.memoryReport().row(Device.CPU).weightBytes();
            int max = config.maxPositions();
            List<Point> out = new ArrayList<>();
            try (KvCache cache = model.newCache(1, max)) {
                for (int i = 0; i < points; i++) {
                    long context = Math.round((double) i * max / (points - 1));
                    out.add(measure(model, cache, context, compute, chunk, baseline, weights));
                    LOG.info("context {}: {}", context, out.get(out.size() - 1));
                }
            }
            String name = modelDir.getFileName().toString();
            Files.createDirectories(outDir);
            Path csv = outDir.resolve(name + "-context-memory.csv");
            Path png = outDir.resolve(name + "-context-memory.png");
            writeCsv(csv, out);
            plot(png, name + " (" + type.torchName() + ", CPU)", out);
            return new Result(baseline, weights, out, csv, png);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        } finally {
            model.toMeta();
        }
    }

    private static Point measure(ChatGLMLanguageModel model, KvCache cache, long context, boolean compute, int chunk,
            long baseline, long weights) {
        ChatGLMConfig c = model.config();
        DType type = model.dtype();
        boolean peakReset;
        if (context == 0) {
            try (KvCache once = model.newCache(1, 1)) {
                peakReset = resetPeak();
                step(model, once, 1);
            }
        } else {
            long before = context - 1;
            while (cache.length() < before) {
                long n = Math.min(chunk, before - cache.length());
                if (compute) {
                    step(model, cache, n);
                } else {
                    cache.fillWithZerosForMeasurement(n);
                }
            }
            peakReset = resetPeak();
            step(model, cache, 1);
        }
        // The same collection as before the baseline, so that the Java heap is measured in the same state.
        System.gc();
        ProcessMemory after = ProcessMemory.read();
        long kv = c.kvCacheBytesPerLayer(context, 1, type) * c.numLayers();
        long workspace = StepWorkspace.bytes(c, type, 1, 1, Math.max(1, context), c.numLayers());
        long predicted = baseline + weights + kv;
        return new Point(context, kv, workspace, predicted, predicted + workspace, after.residentBytes(),
                after.anonymousBytes(), peakReset ? after.peakResidentBytes() : -1);
    }

    /** Runs {@code n} tokens through the model on top of the cache, at the positions that follow it. */
    private static void step(ChatGLMLanguageModel model, KvCache cache, long n) {
        long start = cache.length();
        long[] ids = new long[(int) n];
        long[] positions = new long[(int) n];
        for (int j = 0; j < n; j++) {
            // Any ids of the vocabulary do: memory does not depend on which.
            ids[j] = (start + j) * 7919 % model.config().vocabSize();
            positions[j] = start + j;
        }
        try (PointerScope scope = new PointerScope()) {
            Tensor pos = torch.tensor(positions).view(1, n);
            model.forward(ForwardInput.builder(new long[][] {ids}).positionIds(pos).cache(cache)
                    .lastLogitOnly(true).build());
        }
    }

    /** Resets the kernel's high-water mark of resident memory (Linux {@code clear_refs} 5); false if it cannot. */
    private static boolean resetPeak() {
        try {
            Files.writeString(Path.of("/proc/self/clear_refs"), "5");
            return true;
        } catch (IOException e) {
            LOG.debug("Cannot reset the peak resident memory: {}", e.toString());
            return false;
        }
    }

    private static void writeCsv(Path csv, List<Point> points) throws IOException {
        StringBuilder sb = new StringBuilder("context,kv_bytes,workspace_bytes,predicted_resident,predicted_peak,"
                + "measured_resident,measured_anonymous,measured_peak,resident_error,peak_error\n");
        for (Point p : points) {
            sb.append(String.format(Locale.ROOT, "%d,%d,%d,%d,%d,%d,%d,%d,%.4f,%.4f%n", p.context(), p.kvBytes(),
                    p.workspaceBytes(), p.predictedResident(), p.predictedPeak(), p.measuredResident(),
                    p.measuredAnonymous(), p.measuredPeak(), p.residentError(), p.peakError()));
        }
        Files.writeString(csv, sb.toString());
    }

    private static void plot(Path png, String title, List<Point> points) throws IOException {
        XYChart chart = new XYChartBuilder().width(900).height(560).title("Process memory vs context: " + title)
                .xAxisTitle("context length (positions)").yAxisTitle("MiB").build();
        double[] x = points.stream().mapToDouble(Point::context).toArray();
        chart.addSeries("measured resident (after step)", x, mib(points, Point::measuredResident));
        chart.addSeries("predicted resident (baseline+weights+KV)", x, mib(points, Point::predictedResident));
        if (points.stream().allMatch(p -> p.measuredPeak() > 0)) {
            chart.addSeries("measured peak (during step)", x, mib(points, Point::measuredPeak));
            chart.addSeries("predicted peak (+workspace)", x, mib(points, Point::predictedPeak));
        }
        chart.addSeries("measured anonymous", x, mib(points, Point::measuredAnonymous));
        BitmapEncoder.saveBitmap(chart, png.toString(), BitmapEncoder.BitmapFormat.PNG);
    }

    private static double[] mib(List<Point> points, java.util.function.ToLongFunction<Point> f) {
        return points.stream().mapToDouble(p -> f.applyAsLong(p) / (1024.0 * 1024.0)).toArray();
    }
}
