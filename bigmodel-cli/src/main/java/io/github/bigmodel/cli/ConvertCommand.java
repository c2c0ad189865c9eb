package io.github.bigmodel.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.github.bigmodel.chatglm.ChatGLMConfig;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.MemorySize;
import io.github.bigmodel.core.quant.Precision;
import io.github.bigmodel.core.quant.QuantizedLinear;
import io.github.bigmodel.core.quant.QuantizedWeight;
import io.github.bigmodel.core.quant.WeightConversion;
import io.github.bigmodel.safetensors.Checkpoint;
import io.github.bigmodel.safetensors.SafetensorsWriter;
import io.github.bigmodel.safetensors.ShardedCheckpointWriter;
import io.github.bigmodel.safetensors.TensorInfo;
import java.io.IOException;
import java.io.PrintWriter;
import java.nio.charset.StandardCharsets;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.stream.Stream;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

/**
 * {@code bigmodel convert SOURCE OUT}: re-shards a checkpoint (any form {@link Checkpoint} reads: safetensors, torch
 * {@code .bin} shards, an index) into safetensors shards with a {@code model.safetensors.index.json}, tensor by
 * tensor, optionally converting its precision; {@code config.json} and the tokenizer files come along.
 *
 * <pre>
 * bigmodel convert chatglm3-6b chatglm3-6b-bf16 --precision bf16 --shard-size 2GB
 * bigmodel convert chatglm3-6b chatglm3-6b-int4 --precision int4     # loads back without re-quantizing
 * </pre>
 *
 * <p>Float precisions convert floating-point tensors only (integer tensors are copied as they are). int8/int4
 * quantize the linear layers of the blocks exactly as loading with that precision does (the layers are found on
 * the model built on meta from {@code config.json}; everything else is held in the config's {@code torch_dtype}),
 * with THUDM's {@code weight} + {@code weight_scale} layout, so the result loads with the same precision without
 * re-quantizing. Everything is written into a hidden folder beside OUT and moved into OUT at the end, the index
 * last: a failure leaves OUT as it was.
 */
@Command(name = "convert", mixinStandardHelpOptions = true, description = "Re-shard a checkpoint into safetensors shards with an index, "
        + "optionally converting its precision (fp32, bf16, fp16, int8, int4).")
final class ConvertCommand implements Callable<Integer> {

    /** Files other than weights a model folder needs, copied along when present. */
    static final List<String> SIDE_FILES = List.of("config.json", "generation_config.json", "tokenizer.model",
            "ice_text.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
            "added_tokens.json");

    private static final ObjectMapper JSON = new ObjectMapper();

    @Parameters(index = "0", paramLabel = "SOURCE",
            description = "A model folder, a .safetensors or .bin file, or an index json.")
    Path source;

    @Parameters(index = "1", paramLabel = "OUT", description = "The folder to write (must be empty unless --force).")
    Path out;

    @Option(names = "--precision", paramLabel = "P",
            description = "fp32, bf16 or fp16 (floating-point tensors only), int8 or int4 (the blocks' linear "
                    + "weights, as loading with that precision does). Default: every tensor as stored.")
    String precision;

    @Option(names = "--shard-size", paramLabel = "SIZE", defaultValue = "2GB",
            description = "Largest shard, e.g. 2GB, 500MiB, or bytes (default: ${DEFAULT-VALUE}).")
    String shardSize;

    @Option(names = "--force", description = "Write into a non-empty OUT, replacing the checkpoint there.")
    boolean force;

    @Option(names = "--progress", description = "Draw a progress bar on stderr even when it is not a terminal.")
    boolean progress;

    @Option(names = "--json", description = "Print {\"out\", \"precision\", \"tensors\", \"total_bytes\", \"shards\"}.")
    boolean json;

    @Spec
    CommandSpec spec;

    /** What one output tensor is made from. */
    private record Planned(TensorInfo source, SafetensorsWriter.Entry entry, QuantizedLinear linear,
            SafetensorsWriter.Entry scaleEntry) {
    }

    @Override
    public Integer call() throws Exception {
        Precision target = precision == null ? null : parsePrecision(precision);
        long maxShardBytes = parseShardSize(shardSize);
        Path sourceDir = Files.isDirectory(source) ? source : source.toAbsolutePath().getParent();
        checkOut(sourceDir);
        Summary summary;
        try (Checkpoint checkpoint = Checkpoint.open(source)) {
            summary = convert(checkpoint, sourceDir, target, maxShardBytes);
        }
        PrintWriter stdout = spec.commandLine().getOut();
        if (json) {
            ObjectNode root = JSON.createObjectNode();
            root.put("out", out.toString());
            root.put("precision", target == null ? "as stored" : target.name().toLowerCase(Locale.ROOT));
            root.put("tensors", summary.tensors);
            root.put("total_bytes", summary.totalBytes);
            ArrayNode shards = root.putArray("shards");
            summary.shards.forEach(shards::add);
            stdout.println(JSON.writeValueAsString(root));
        } else {
            stdout.printf(Locale.ROOT, "Wrote %d tensors, %s (%d bytes), in %d shard(s) with %s to %s%n",
                    summary.tensors, MemorySize.format(summary.totalBytes), summary.totalBytes, summary.shards.size(),
                    ShardedCheckpointWriter.INDEX_FILE, out);
        }
        return 0;
    }

    private record Summary(int tensors, long totalBytes, List<String> shards) {
    }

    static Precision parsePrecision(String text) {
        try {
            return Precision.parse(text);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("--precision: unknown precision '" + text
                    + "', expected fp32, bf16, fp16, int8 or int4");
        }
    }

    /** A size as {@link MemorySize} reads it ({@code 2GB}, {@code 500MiB}), or a plain positive byte count. */
    static long parseShardSize(String text) {
        long bytes;
        try {
            bytes = text.strip().matches("\\d+") ? Long.parseLong(text.strip()) : MemorySize.parse(text);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("--shard-size: '" + text + "' is not a size (use e.g. 2GB, 500MiB or"
                    + " a number of bytes)");
        }
        if (bytes <= 0) {
            throw new IllegalArgumentException("--shard-size must be positive, got '" + text + "'");
        }
        return bytes;
    }

    private void checkOut(Path sourceDir) throws IOException {
        if (Files.exists(out) && !Files.isDirectory(out)) {
            throw new IllegalArgumentException(out + " exists and is not a folder");
        }
        if (Files.isDirectory(out)) {
            if (Files.isDirectory(sourceDir) && Files.isSameFile(out, sourceDir)) {
                throw new IllegalArgumentException(out + " is the source's own folder: write to another folder");
            }
            if (!force && !isEmpty(out)) {
                throw new IllegalArgumentException(out + " is not empty (use --force to replace the checkpoint in it)");
            }
        }
    }

    private Summary convert(Checkpoint checkpoint, Path sourceDir, Precision target, long maxShardBytes)
            throws IOException {
        List<TensorInfo> tensors = checkpoint.tensors();
        DType floatDtype = null;
        Map<String, QuantizedLinear> linears = Map.of();
        if (target != null && target.isQuantized()) {
            Path configJson = sourceDir.resolve("config.json");
            if (!Files.isRegularFile(configJson)) {
                throw new IllegalArgumentException("--precision " + precision + " needs the model's config.json beside "
                        + "the checkpoint (" + configJson + " not found)");
            }
            ChatGLMConfig config = ChatGLMLanguageModel.configOfQuantizedCheckpoint(configJson);
            floatDtype = config.torchDtype();
            // The model on meta tells which layers loading would quantize; nothing is allocated.
            ChatGLMLanguageModel meta = ChatGLMLanguageModel.create(config, floatDtype);
            linears = meta.planPrecisions(name -> Device.CPU, floatDtype, device -> target);
        }
        List<Planned> plan = plan(checkpoint, tensors, target, floatDtype, linears);
        List<SafetensorsWriter.Entry> entries = new ArrayList<>();
        for (Planned p : plan) {
            entries.add(p.entry);
            if (p.scaleEntry != null) {
                entries.add(p.scaleEntry);
            }
        }
        Map<String, String> metadata = new LinkedHashMap<>();
        metadata.put("format", "pt");
        if (target != null && target.isQuantized()) {
            metadata.put("quantization", ChatGLMLanguageModel.QUANTIZATION_SCHEME);
            metadata.put("quantization_bit", Integer.toString(target.bits()));
        } else {
            checkpoint.metadata().forEach((k, v) -> {
                if (k.startsWith("quantization")) {
                    metadata.put(k, v); // a quantized source stays described as such
                }
            });
        }

        Path parent = out.toAbsolutePath().getParent();
        Files.createDirectories(parent);
        Path staging = Files.createTempDirectory(parent, "." + out.getFileName() + ".converting-");
        ShardedCheckpointWriter writer = null;
        long totalBytes = 0;
        try {
            writer = ShardedCheckpointWriter.create(staging, entries, maxShardBytes, metadata);
            long sourceBytes = 0;
            for (Planned p : plan) {
                sourceBytes += p.source.byteLength();
            }
            try (ProgressBars.Bar bar = ProgressBars.bytes(spec.commandLine().getErr(),
                    ProgressBars.enabled(progress, json), "Converting", sourceBytes)) {
                List<Path> sourceShards = checkpoint.shards();
                for (Planned p : plan) {
                    write(checkpoint, writer, p, target, floatDtype);
                    bar.step(p.source.byteLength(), "shard " + (sourceShards.indexOf(p.source.file()) + 1) + "/"
                            + sourceShards.size());
                }
            }
            ShardedCheckpointWriter finished = writer;
            writer = null;
            finished.close(); // writes the index, into the staging folder
            for (SafetensorsWriter.Entry e : entries) {
                totalBytes += e.byteLength();
            }
            copySideFiles(sourceDir, staging, target);
            List<String> shards = new ArrayList<>();
            for (int i = 0; i < finished.shardCount(); i++) {
                shards.add(finished.shardName(i));
            }
            publish(staging, shards);
            return new Summary(entries.size(), totalBytes, shards);
        } catch (RuntimeException | IOException | Error e) {
            if (writer != null) {
                try {
                    writer.close(); // finishes nothing: the open shard is incomplete, so it is deleted, no index
                } catch (RuntimeException ignored) {
                    // the original failure is the one to report
                }
            }
            deleteRecursively(staging);
            throw e;
        }
    }

    private static List<Planned> plan(Checkpoint checkpoint, List<TensorInfo> tensors, Precision target,
            DType floatDtype, Map<String, QuantizedLinear> linears) {
        List<Planned> plan = new ArrayList<>();
        String scaleSuffix = "." + QuantizedLinear.SCALE_NAME;
        for (TensorInfo t : tensors) {
            String name = t.name();
            String owner = name.contains(".") ? name.substring(0, name.lastIndexOf('.')) : "";
            QuantizedLinear linear = linears.get(owner);
            if (linear != null && name.endsWith(scaleSuffix)) {
                continue; // a pre-quantized source: written beside its weight
            }
            if (linear != null && name.equals(owner + ".weight")) {
                checkLinearWeight(checkpoint, t, linear);
                long out = linear.outFeatures();
                plan.add(new Planned(t, SafetensorsWriter.Entry.of(name, DType.INT8, out,
                        target.rowBytes(linear.inFeatures())), linear,
                        SafetensorsWriter.Entry.of(owner + scaleSuffix, floatDtype, out)));
                continue;
            }
            DType dtype = t.dtype();
            if (target != null && dtype.isFloatingPoint()) {
                dtype = target.isQuantized() ? floatDtype : target.dtype();
            }
            plan.add(new Planned(t, SafetensorsWriter.Entry.of(name, dtype, t.shape()), null, null));
        }
        return plan;
    }

    /** A block's linear weight must be the [out, in] float the config describes, or int8 codes with scales. */
    private static void checkLinearWeight(Checkpoint checkpoint, TensorInfo t, QuantizedLinear linear) {
        String scale = t.name().substring(0, t.name().lastIndexOf('.') + 1) + QuantizedLinear.SCALE_NAME;
        try {
            WeightConversion.storedPrecision(t.name(), t.dtype(), t.shape(), checkpoint.contains(scale),
                    linear.outFeatures(), linear.inFeatures());
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("config.json makes '" + t.name() + "' a linear weight: "
                    + e.getMessage());
        }
    }

    /** Writes one planned tensor; only it (and its float copy when quantized) is in memory meanwhile. */
    private static void write(Checkpoint checkpoint, ShardedCheckpointWriter writer, Planned p, Precision target,
            DType floatDtype) {
        String name = p.source.name();
        try (PointerScope scope = new PointerScope()) {
            Tensor src = checkpoint.load(name);
            if (p.linear == null) {
                DType dtype = p.entry.dtype();
                writer.write(name, dtype == p.source.dtype() ? src : WeightConversion.convert(src, null,
                        WeightConversion.Target.tensor(dtype, Device.CPU)).tensor());
                return;
            }
            // The one road, as loading with this precision does: quantized from floats, taken as stored, or
            // re-quantized from other codes; codes int8, scales in the model's float dtype, on the CPU.
            Tensor scale = DType.of(src.scalar_type()).isFloatingPoint() ? null
                    : checkpoint.load(p.scaleEntry.name());
            QuantizedLinear linear = p.linear;
            QuantizedWeight q = WeightConversion.convert(src, scale, WeightConversion.Target.linearWeight(target,
                    floatDtype, linear.outFeatures(), linear.inFeatures(), Device.CPU)).quantized();
            writer.write(name, q.packed());
            writer.write(p.scaleEntry.name(), q.scale());
        }
    }

    /**
     * Copies config.json and the tokenizer files; a float precision also becomes the config's {@code torch_dtype}
     * (what Hugging Face loaders and {@code ChatGLMConfig} build the model in).
     */
    private static void copySideFiles(Path sourceDir, Path staging, Precision target) throws IOException {
        for (String name : SIDE_FILES) {
            Path file = sourceDir.resolve(name);
            if (!Files.isRegularFile(file)) {
                continue;
            }
            if (name.equals("config.json") && target != null && !target.isQuantized()) {
                JsonNode config = JSON.readTree(file.toFile());
                String dtype = target.dtype().torchName();
                if (config instanceof ObjectNode && config.has("torch_dtype")
                        && !dtype.equals(config.get("torch_dtype").asText())) {
                    ((ObjectNode) config).put("torch_dtype", dtype);
                    Files.writeString(staging.resolve(name), JSON.copy().enable(SerializationFeature.INDENT_OUTPUT)
                            .writeValueAsString(config) + "\n", StandardCharsets.UTF_8);
                    continue;
                }
            }
            Files.copy(file, staging.resolve(name), StandardCopyOption.COPY_ATTRIBUTES);
        }
    }

    /**
     * Moves the finished folder into place: by one rename when OUT is absent or empty, otherwise (--force) file by
     * file after removing the old checkpoint files, the index last so that OUT never names a shard that is not there.
     */
    private void publish(Path staging, List<String> shards) throws IOException {
        if (!Files.exists(out) || isEmpty(out)) {
            Files.deleteIfExists(out);
            Files.move(staging, out, StandardCopyOption.ATOMIC_MOVE);
            return;
        }
        try (DirectoryStream<Path> old = Files.newDirectoryStream(out)) {
            for (Path p : old) {
                String n = p.getFileName().toString();
                if (Files.isRegularFile(p) && (n.endsWith(".safetensors") || n.endsWith(".bin")
                        || n.endsWith(".index.json") || n.equals("index.json"))) {
                    Files.delete(p);
                }
            }
        }
        try (Stream<Path> files = Files.list(staging)) {
            for (Path p : files.toList()) {
                String n = p.getFileName().toString();
                if (!n.equals(ShardedCheckpointWriter.INDEX_FILE)) {
                    Files.move(p, out.resolve(n), StandardCopyOption.REPLACE_EXISTING);
                }
            }
        }
        Files.move(staging.resolve(ShardedCheckpointWriter.INDEX_FILE), out.resolve(ShardedCheckpointWriter.INDEX_FILE),
                StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        Files.delete(staging);
    }

    private static boolean isEmpty(Path dir) throws IOException {
        try (Stream<Path> s = Files.list(dir)) {
            return s.findAny().isEmpty();
        }
    }

    private static void deleteRecursively(Path folder) {
        try (Stream<Path> walk = Files.walk(folder)) {
            for (Path p : walk.sorted(Comparator.reverseOrder()).toList()) {
                Files.deleteIfExists(p);
            }
        } catch (IOException ignored) {
            // best effort: a hidden leftover folder beside OUT is harmless
        }
    }
}
