package io.github.bigmodel.benchmarks.decode;

import io.github.bigmodel.chatglm.ChatGLMConfig;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.chatglm.generation.GenerationRequest;
import io.github.bigmodel.chatglm.generation.Generator;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.MemorySize;
import io.github.bigmodel.core.NativeRuntime;
import io.github.bigmodel.core.Parameter;
import io.github.bigmodel.dispatch.BigModel;
import io.github.bigmodel.dispatch.DispatchedModel;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.io.UncheckedIOException;
import java.lang.management.ManagementFactory;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.IdentityHashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.bytedeco.pytorch.global.torch;

/**
 * Decode speed of a ChatGLM checkpoint in the settings of {@link DecodeRow}, against the machine's limits. First the
 * bandwidths ({@link Bandwidths}): memory read with the decode thread count, disk read of the checkpoint's files with
 * the page cache dropped. Then each row in a fresh JVM (a child process), so that load time and peak memory are the
 * row's own; with {@code --drop-caches} the page cache is dropped before each row, so every load reads from disk.
 * With {@code --cgroup NAME} the disk rows run inside the existing memory cgroup (v1)
 * {@code /sys/fs/cgroup/memory/NAME}, which caps the page cache as well (benchmarks/run-6b.sh creates it).
 *
 * <p>Each row: load time; time to first token for a {@code --prompt}-token prompt; milliseconds per token over the
 * {@code --tokens} greedy steps after the first; peak resident ({@code VmHWM}) and peak anonymous memory
 * (sampled); the weight bytes a token reads from memory and from disk; the floor (memory bytes / memory
 * bandwidth + disk bytes / disk bandwidth) and the ratio of the measured time to it. Printed as markdown rows and as
 * CSV lines.
 *
 * <pre>{@code
 * java -cp benchmarks/target/benchmarks.jar io.github.bigmodel.benchmarks.decode.DecodeProgram \
 *     --model /data/chatglm3-6b-random --row all --prompt 16 --tokens 64 --threads 2 --drop-caches
 * }</pre>
 */
public final class DecodeProgram {

    /** The line prefix {@code --memory-only} prints its bandwidths after (JSON, bytes per second). */
    static final String MEMORY_PREFIX = "MEMORY-BANDWIDTH ";
    /** The line prefix a child prints its result after. */
    static final String RESULT_PREFIX = "DECODE-RESULT ";
    /** The first embedding row: only this many bytes of the embedding are read per token. */
    private static final String EMBEDDING = "transformer.embedding.word_embeddings.weight";

    /** Parsed command line. */
    static final class Options {
        Path model;
        List<DecodeRow> rows = List.of(DecodeRow.values());
        int prompt = 16;
        int tokens = 64;
        int threads = Runtime.getRuntime().availableProcessors();
        long budgetBytes = 4L << 30;
        String cgroup;
        boolean dropCaches;
        boolean inProcess;
        boolean child;
        boolean memoryOnly;
        long memBytes = 1L << 30;
        long diskBytes = 2L << 30;
        Path offload;
        List<String> javaOptions = new ArrayList<>(List.of("-Xmx1g"));

        static Options parse(String... args) {
            Options o = new Options();
            for (int i = 0; i < args.length; i++) {
                String a = args[i];
                switch (a) {
                    case "--drop-caches" -> o.dropCaches = true;
                    case "--in-process" -> o.inProcess = true;
                    case "--child" -> o.child = true;
                    case "--memory-only" -> o.memoryOnly = true;
                    default -> {
                        if (i + 1 >= args.length) {
                            throw new IllegalArgumentException("Missing value after " + a);
                        }
                        String v = args[++i];
                        switch (a) {
                            case "--model" -> o.model = Path.of(v);
                            case "--row" -> o.rows = DecodeRow.parseList(v);
                            case "--prompt" -> o.prompt = positive(a, Integer.parseInt(v));
                            case "--tokens" -> o.tokens = positive(a, Integer.parseInt(v));
                            case "--threads" -> o.threads = positive(a, Integer.parseInt(v));
                            case "--budget" -> o.budgetBytes = size(v);
                            case "--cgroup" -> o.cgroup = v;
                            case "--mem-bytes" -> o.memBytes = size(v);
                            case "--disk-bytes" -> o.diskBytes = size(v);
                            case "--offload" -> o.offload = Path.of(v);
                            case "--java-opts" -> o.javaOptions = List.of(v.trim().split("\\s+"));
                            default -> throw new IllegalArgumentException("Unknown argument " + a + usage());
                        }
                    }
                }
            }
            if (o.model == null) {
                throw new IllegalArgumentException("--model DIR is required" + usage());
            }
            if (!Files.isRegularFile(o.model.resolve("config.json"))) {
                throw new IllegalArgumentException(o.model + " has no config.json: write one with GenerateCheckpoint");
            }
            return o;
        }

        /** A byte count, or a size with a unit ({@code 4GiB}, {@code 2GB}). */
        static long size(String v) {
            return v.matches("\\d+") ? Long.parseLong(v) : MemorySize.parse(v);
        }

        private static int positive(String name, int v) {
            if (v <= 0) {
                throw new IllegalArgumentException(name + " must be positive, got " + v);
            }
            return v;
        }

        static String usage() {
            return "\nusage: DecodeProgram --model DIR [--row a|b-noprefetch|b-prefetch|b|c|d|b-int8|b-int4|fp16|all[,...]] [--prompt 16]"
                    + " [--tokens 64] [--threads N] [--budget 4GiB] [--cgroup NAME] [--drop-caches] [--in-process]"
                    + " [--mem-bytes 1GiB] [--disk-bytes 2GiB] [--offload DIR] [--java-opts '-Xmx1g'] [--memory-only]";
        }
    }

    /** The machine's limits as measured before the rows. */
    static final class Limits {
        double torchMemory;
        double javaMemory;
        double bf16Linear;
        double fileChannelDisk;
        double mappedDisk;
        /** Read as the offload prefetcher reads: libtorch's mapping, 2 MiB folios, its threads. */
        double prefetcherDisk;
        boolean cacheDropped;

        /** The bandwidth that feeds decode from memory: libtorch's read with decode's thread count. */
        double memory() {
            return torchMemory;
        }

        /** The disk's read bandwidth: the best of the ways of reading (the stricter floor). */
        double disk() {
            return Math.max(fileChannelDisk, Math.max(mappedDisk, prefetcherDisk));
        }
    }

    private DecodeProgram() {
    }

    public static void main(String[] args) {
        Options o;
        try {
            o = Options.parse(args);
        } catch (IllegalArgumentException e) {
            System.err.println(e.getMessage());
            System.exit(2);
            return;
        }
        if (o.memoryOnly) {
            measureMemory(o, System.out);
            System.exit(0);
        }
        if (o.child) {
            RowResult r = runRow(o.rows.get(0), o);
            System.out.println(RESULT_PREFIX + r.toJson());
            System.out.flush();
            System.exit(0);
        }
        run(o, System.out);
        System.exit(0);
    }

    /** Runs the whole program: bandwidths, then every row; returns the rows' results in order. */
    static List<RowResult> run(Options o, PrintStream out) {
        NativeRuntime.init();
        Limits limits = measureLimits(o, out);
        List<RowResult> results = new ArrayList<>();
        for (DecodeRow row : o.rows) {
            if (o.dropCaches && !o.inProcess) {
                boolean dropped = Bandwidths.dropPageCache();
                out.println("# page cache " + (dropped ? "dropped" : "NOT dropped (needs root)") + " before row "
                        + row.key());
            }
            RowResult r = o.inProcess ? runRow(row, o) : runChild(row, o);
            results.add(r);
            out.println("# row " + row.key() + " done: " + tableRow(row, r, limits, o));
            out.println("# row " + row.key() + " read " + gib(r.storageReadBytesPerToken)
                    + " per token from storage (/proc/self/io; the device map offloads " + gib(r.diskBytesPerToken)
                    + "); " + gib(r.filePmdMappedBytes) + " of file mappings in 2 MiB entries at the end");
            out.flush();
        }
        report(results, limits, o, out);
        return results;
    }

    /**
     * The memory bandwidths alone (no disk, no rows), for a caller that runs the rows itself (benchmarks/peer's
     * side-by-side run): the usual comment line, then {@link #MEMORY_PREFIX} and
     * {@code {"torch":..,"java":..,"bf16Linear":..,"threads":..}} in bytes per second.
     */
    static Limits measureMemory(Options o, PrintStream out) {
        NativeRuntime.init();
        Limits l = new Limits();
        l.torchMemory = Bandwidths.torchRead(o.memBytes, o.threads, 5);
        l.javaMemory = Bandwidths.javaRead(o.memBytes, o.threads, 5);
        l.bf16Linear = Bandwidths.bf16Linear(13696, 4096, o.threads, 5);
        out.printf(Locale.ROOT, "# memory read: libtorch %.2f GB/s (%d threads, %s), Java %.2f GB/s; bf16 linear"
                + " 13696x4096 on one token reads its weight at %.2f GB/s%n", l.torchMemory / 1e9, o.threads,
                MemorySize.format(o.memBytes), l.javaMemory / 1e9, l.bf16Linear / 1e9);
        out.printf(Locale.ROOT, "%s{\"torch\":%.0f,\"java\":%.0f,\"bf16Linear\":%.0f,\"threads\":%d}%n",
                MEMORY_PREFIX, l.torchMemory, l.javaMemory, l.bf16Linear, o.threads);
        out.flush();
        return l;
    }

    static Limits measureLimits(Options o, PrintStream out) {
        Limits l = new Limits();
        l.torchMemory = Bandwidths.torchRead(o.memBytes, o.threads, 5);
        l.javaMemory = Bandwidths.javaRead(o.memBytes, o.threads, 5);
        l.bf16Linear = Bandwidths.bf16Linear(13696, 4096, o.threads, 5);
        List<Path> files = shards(o.model);
        l.cacheDropped = o.dropCaches && Bandwidths.dropPageCache();
        l.fileChannelDisk = Bandwidths.fileChannelRead(files, o.diskBytes);
        if (o.dropCaches) {
            l.cacheDropped &= Bandwidths.dropPageCache();
        }
        l.mappedDisk = Bandwidths.mappedRead(files, o.diskBytes);
        if (o.dropCaches) {
            l.cacheDropped &= Bandwidths.dropPageCache();
        }
        l.prefetcherDisk = Bandwidths.prefetcherRead(files, o.diskBytes, o.threads);
        out.printf(Locale.ROOT, "# threads: %d (libtorch), %d processors%n", o.threads,
                Runtime.getRuntime().availableProcessors());
        out.printf(Locale.ROOT, "# memory read: libtorch %.2f GB/s (%d threads, %s; the decode floor uses this),"
                + " Java %.2f GB/s; bf16 linear 13696x4096 on one token reads its weight at %.2f GB/s%n",
                l.torchMemory / 1e9, o.threads, MemorySize.format(o.memBytes), l.javaMemory / 1e9, l.bf16Linear / 1e9);
        out.printf(Locale.ROOT, "# disk read (%s of the checkpoint, page cache %s): FileChannel %.2f GB/s,"
                + " mapped page faults %.2f GB/s (1 thread), %.2f GB/s (as the prefetcher reads); the floor uses %.2f GB/s%n",
                MemorySize.format(o.diskBytes), l.cacheDropped ? "dropped first" : "NOT dropped: may be the page cache's speed",
                l.fileChannelDisk / 1e9, l.mappedDisk / 1e9, l.prefetcherDisk / 1e9, l.disk() / 1e9);
        return l;
    }

    static List<Path> shards(Path model) {
        try (Stream<Path> s = Files.list(model)) {
            return s.filter(p -> p.getFileName().toString().endsWith(".safetensors")).sorted()
                    .collect(Collectors.toList());
        } catch (IOException e) {
            throw new UncheckedIOException("Cannot list " + model, e);
        }
    }

    /** The prompt: fixed ids spread over the vocabulary, away from the special tokens at its ends. */
    static long[] promptIds(int length, int vocab) {
        long[] ids = new long[length];
        int span = Math.max(1, vocab - 200);
        for (int i = 0; i < length; i++) {
            ids[i] = 100 + (i * 7919L + 13) % span;
        }
        return ids;
    }

    /** The generation request every row runs: greedy, exactly {@code tokens + 1} new tokens. */
    static GenerationRequest request(int prompt, int tokens, int vocab) {
        return GenerationRequest.builder(new long[][] {promptIds(prompt, vocab)}).maxNewTokens(tokens + 1)
                .stopAtEos(false).build();
    }

    /** Loads the model as {@code row} says and decodes, in this process. */
    static RowResult runRow(DecodeRow row, Options o) {
        NativeRuntime.init();
        torch.set_num_threads(o.threads);
        RowResult r = new RowResult();
        r.jvmStartEpochMs = ManagementFactory.getRuntimeMXBean().getStartTime();
        r.row = row.key();
        r.threads = o.threads;
        try (MemorySampler sampler = MemorySampler.start(10)) {
            ChatGLMConfig config = ChatGLMConfig.fromJson(o.model.resolve("config.json"));
            ChatGLMLanguageModel model = ChatGLMLanguageModel.create(config, row.modelDtype());
            long started = System.nanoTime();
            try (DispatchedModel<ChatGLMLanguageModel> d = BigModel.loadCheckpointAndDispatch(model, o.model,
                    row.options(o.budgetBytes, o.offload))) {
                r.loadMs = (System.nanoTime() - started) / 1e6;
                r.anonAfterLoadBytes = MemorySampler.anonymousNow();
                countWeightBytes(model, r);
                r.diskModules = (int) d.hfDeviceMap().asMap().values().stream().filter(Device::isDisk).count();
                decode(model, o, r);
            }
            r.peakAnonBytes = sampler.peakAnonymousBytes();
        }
        r.peakRssBytes = MemorySampler.peakResidentBytes();
        return r;
    }

    private static void decode(ChatGLMLanguageModel model, Options o, RowResult r) {
        GenerationRequest request = request(o.prompt, o.tokens, model.config().vocabSize());
        double[] steps = new double[o.tokens];
        try (Generator.Session s = new Generator(model).start(request)) {
            long t0 = System.nanoTime();
            s.step();
            r.ttftMs = (System.nanoTime() - t0) / 1e6;
            r.firstTokenEpochMs = System.currentTimeMillis();
            long readBefore = MemorySampler.storageReadBytes();
            for (int i = 0; i < o.tokens; i++) {
                long t = System.nanoTime();
                s.step();
                steps[i] = (System.nanoTime() - t) / 1e6;
            }
            r.storageReadBytesPerToken = (MemorySampler.storageReadBytes() - readBefore) / o.tokens;
            r.filePmdMappedBytes = MemorySampler.filePmdMappedBytes();
            r.ids = s.ids()[0];
        }
        r.measuredTokens = o.tokens;
        r.msPerToken = Arrays.stream(steps).average().orElse(0);
        double[] sorted = steps.clone();
        Arrays.sort(sorted);
        r.medianMsPerToken = sorted.length % 2 == 1 ? sorted[sorted.length / 2]
                : (sorted[sorted.length / 2 - 1] + sorted[sorted.length / 2]) / 2;
    }

    /**
     * The weight bytes one token reads: every tensor of the blocks and the head as held (int8/int4 packed sizes
     * included), one row of the word embedding; offloaded tensors count towards disk at their stored size.
     */
    static void countWeightBytes(ChatGLMLanguageModel model, RowResult r) {
        Map<Parameter, String> seen = new IdentityHashMap<>();
        long ram = 0;
        long disk = 0;
        for (Map.Entry<String, Parameter> e : model.stateDict().entrySet()) {
            Parameter p = e.getValue();
            if (seen.put(p, e.getKey()) != null || e.getKey().endsWith("inv_freq")) {
                continue;
            }
            long bytes = p.isMaterialized() ? p.data().nbytes() : p.byteSize();
            if (e.getKey().equals(EMBEDDING)) {
                bytes /= p.dim(0);
            }
            if (p.device().isDisk()) {
                disk += bytes;
            } else {
                ram += bytes;
            }
        }
        r.ramBytesPerToken = ram;
        r.diskBytesPerToken = disk;
    }

    /** Runs {@code row} in a fresh JVM on this class path (inside the cgroup for disk rows when one is named). */
    static RowResult runChild(DecodeRow row, Options o) {
        List<String> java = new ArrayList<>();
        java.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
        java.addAll(o.javaOptions);
        java.addAll(List.of("-cp", System.getProperty("java.class.path"), DecodeProgram.class.getName(), "--child",
                "--model", o.model.toString(), "--row", row.key(), "--prompt", String.valueOf(o.prompt),
                "--tokens", String.valueOf(o.tokens), "--threads", String.valueOf(o.threads),
                "--budget", String.valueOf(o.budgetBytes)));
        if (o.offload != null) {
            java.addAll(List.of("--offload", o.offload.toString()));
        }
        List<String> command = new ArrayList<>();
        if (row.usesDisk() && o.cgroup != null) {
            // The child moves itself into the cgroup before exec'ing java; this JVM stays outside it.
            command.addAll(List.of("sh", "-c", "echo $$ > /sys/fs/cgroup/memory/" + o.cgroup + "/cgroup.procs"
                    + " && exec \"$@\"", "sh"));
        }
        command.addAll(java);
        ProcessBuilder pb = new ProcessBuilder(command).redirectError(ProcessBuilder.Redirect.INHERIT);
        pb.environment().put("OMP_NUM_THREADS", String.valueOf(o.threads));
        try {
            Process p = pb.start();
            String result = null;
            try (BufferedReader reader = new BufferedReader(new InputStreamReader(p.getInputStream(),
                    StandardCharsets.UTF_8))) {
                String line;
                while ((line = reader.readLine()) != null) {
                    if (line.startsWith(RESULT_PREFIX)) {
                        result = line.substring(RESULT_PREFIX.length());
                    } else {
                        System.err.println("[" + row.key() + "] " + line);
                    }
                }
            }
            int rc = p.waitFor();
            if (rc != 0 || result == null) {
                throw new IllegalStateException("Row " + row.key() + " failed: exit code " + rc
                        + (result == null ? ", no result line" : "") + " (command: " + String.join(" ", command) + ")");
            }
            return RowResult.fromJson(result);
        } catch (IOException e) {
            throw new UncheckedIOException("Cannot start the row's JVM", e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("Interrupted while row " + row.key() + " ran", e);
        }
    }

    /** The floor of one token in ms: memory bytes / memory bandwidth + disk bytes / disk bandwidth. */
    static double floorMs(RowResult r, Limits l) {
        return (r.ramBytesPerToken / l.memory() + r.diskBytesPerToken / l.disk()) * 1e3;
    }

    static String header() {
        return "| row | setting | load (s) | TTFT, 16-token prompt (ms) | ms/token | peak RSS | peak anon |"
                + " weights/token: memory | from disk | floor (ms/token) | ratio to floor |\n"
                + "|---|---|---|---|---|---|---|---|---|---|---|";
    }

    static String tableRow(DecodeRow row, RowResult r, Limits l, Options o) {
        double floor = floorMs(r, l);
        return String.format(Locale.ROOT, "| (%s) | %s | %.3f | %.0f | %.1f | %s | %s | %s | %s | %.3f | %.2fx |",
                row.key(), row.label(), r.loadMs / 1e3, r.ttftMs, r.msPerToken, gib(r.peakRssBytes),
                gib(r.peakAnonBytes), gib(r.ramBytesPerToken), gib(r.diskBytesPerToken), floor, r.msPerToken / floor);
    }

    static String csvHeader() {
        return "row,threads,load_ms,ttft_ms,ms_per_token,median_ms_per_token,peak_rss_bytes,peak_anon_bytes,"
                + "anon_after_load_bytes,ram_bytes_per_token,disk_bytes_per_token,disk_modules,mem_bw_bytes_s,"
                + "disk_bw_bytes_s,floor_ms,ratio,storage_read_bytes_per_token";
    }

    static String csvLine(RowResult r, Limits l) {
        double floor = floorMs(r, l);
        return String.format(Locale.ROOT, "%s,%d,%.1f,%.1f,%.2f,%.2f,%d,%d,%d,%d,%d,%d,%.0f,%.0f,%.2f,%.3f,%d", r.row,
                r.threads, r.loadMs, r.ttftMs, r.msPerToken, r.medianMsPerToken, r.peakRssBytes, r.peakAnonBytes,
                r.anonAfterLoadBytes, r.ramBytesPerToken, r.diskBytesPerToken, r.diskModules, l.memory(), l.disk(),
                floor, r.msPerToken / floor, r.storageReadBytesPerToken);
    }

    private static String gib(long bytes) {
        return MemorySize.format(bytes);
    }

    private static void report(List<RowResult> results, Limits l, Options o, PrintStream out) {
        out.println();
        out.println(header());
        Map<String, RowResult> byRow = new LinkedHashMap<>();
        for (RowResult r : results) {
            byRow.put(r.row, r);
            out.println(tableRow(DecodeRow.parse(r.row), r, l, o));
        }
        out.println();
        out.println(csvHeader());
        results.forEach(r -> out.println(csvLine(r, l)));
        out.println();
        RowResult a = byRow.get("a");
        if (a != null) {
            target(out, "(a) within 1.5x of its memory floor", a.msPerToken / floorMs(a, l) <= 1.5,
                    String.format(Locale.ROOT, "%.2fx", a.msPerToken / floorMs(a, l)));
        }
        long anonLimit = o.budgetBytes + (1L << 30);
        for (String key : List.of("b-noprefetch", "b-prefetch", "b-int8", "b-int4")) {
            RowResult b = byRow.get(key);
            if (b != null) {
                target(out, "(" + key + ") peak anonymous within the budget + 1 GiB (" + gib(anonLimit) + ")",
                        b.peakAnonBytes <= anonLimit, gib(b.peakAnonBytes));
            }
        }
        for (String key : List.of("b-prefetch", "b-int8", "b-int4")) {
            RowResult bp = byRow.get(key);
            if (bp != null && bp.diskBytesPerToken == 0) {
                out.printf(Locale.ROOT, "# (%s) nothing offloaded: the budget holds every weight (%.2fx of the memory"
                        + " floor)%n", key, bp.msPerToken / floorMs(bp, l));
            } else if (bp != null) {
                double diskOnly = bp.diskBytesPerToken / l.disk() * 1e3;
                target(out, "(" + key + ") within 1.2x of the disk floor", bp.msPerToken / floorMs(bp, l) <= 1.2,
                        String.format(Locale.ROOT, "%.2fx of disk + memory floor %.1f ms; %.2fx of disk-only floor"
                                + " %.1f ms", bp.msPerToken / floorMs(bp, l), floorMs(bp, l), bp.msPerToken / diskOnly,
                                diskOnly));
            }
        }
        RowResult bf = byRow.get("b-prefetch");
        for (String key : List.of("b-int8", "b-int4")) {
            RowResult q = byRow.get(key);
            if (bf != null && q != null) {
                double speedup = bf.msPerToken / q.msPerToken;
                double byteRatio = (double) (bf.ramBytesPerToken + bf.diskBytesPerToken)
                        / (q.ramBytesPerToken + q.diskBytesPerToken);
                target(out, "(" + key + ") faster than (b-prefetch) in proportion to the bytes read",
                        speedup >= 0.8 * byteRatio, String.format(Locale.ROOT,
                                "%.2fx faster, reads %.2fx fewer bytes (%.2fx fewer from disk)", speedup, byteRatio,
                                (double) bf.diskBytesPerToken / Math.max(1, q.diskBytesPerToken)));
            }
        }
        for (String key : List.of("c", "d")) {
            RowResult q = byRow.get(key);
            if (a != null && q != null) {
                double speedup = a.msPerToken / q.msPerToken;
                double byteRatio = (double) a.ramBytesPerToken / q.ramBytesPerToken;
                target(out, "(" + key + ") faster than (a) in proportion to the bytes read", speedup >= 0.8 * byteRatio,
                        String.format(Locale.ROOT, "%.2fx faster, reads %.2fx fewer bytes", speedup, byteRatio));
            }
        }
        List<String> sameIds = new ArrayList<>();
        if (a != null) {
            for (RowResult r : results) {
                if (r.row.startsWith("b") && r.ids != null) {
                    sameIds.add(r.row + (Arrays.equals(r.ids, a.ids) ? " = (a)" : " DIFFERS from (a)"));
                }
            }
        }
        if (!sameIds.isEmpty()) {
            out.println("# greedy ids of the bf16 rows: " + String.join(", ", sameIds));
        }
        out.flush();
    }

    private static void target(PrintStream out, String what, boolean met, String detail) {
        out.println("# target " + what + ": " + (met ? "met" : "MISSED") + " (" + detail + ")");
    }
}
