package io.github.bigmodel.benchmarks.decode;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.github.bigmodel.chatglm.ChatGLMConfig;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.Tensors;
import io.github.bigmodel.core.MemorySize;
import io.github.bigmodel.core.NativeRuntime;
import io.github.bigmodel.core.Parameter;
import io.github.bigmodel.safetensors.SafetensorsWriter;
import io.github.bigmodel.safetensors.ShardedCheckpointWriter;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.GeneratorOptional;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;

/**
 * Writes a ChatGLM checkpoint with a preset's exact tensor names and shapes (chatglm3-6b by default: 28 blocks,
 * hidden 4096, ffn 13696, 2 key/value groups, vocabulary 65024) and seeded random weights, as safetensors shards of
 * at most {@code --shard-size} bytes, plus the model's {@code config.json}. Random weights decode at the speed of
 * trained ones: decode time depends on shapes and dtypes only.
 *
 * <p>Each tensor is generated in chunks of {@code --chunk} bytes directly in the target dtype and appended to its
 * shard, so memory stays at one chunk whatever the model's size, and libtorch's parallel {@code normal_} keeps the
 * disk the bottleneck. Norm weights are 1, the rotary {@code inv_freq} holds its real values, everything else is
 * normal with standard deviation {@code --std}. {@code --set key=value} overrides a config field (for smaller
 * shapes of the same architecture).
 *
 * <pre>{@code
 * java -cp benchmarks/target/benchmarks.jar io.github.bigmodel.benchmarks.decode.GenerateCheckpoint \
 *     --out /data/chatglm3-6b-random --preset chatglm3-6b --dtype bf16 --shard-size 2GB --seed 42
 * # a 4-layer, hidden-1024 model of the same architecture:
 * java -cp benchmarks/target/benchmarks.jar io.github.bigmodel.benchmarks.decode.GenerateCheckpoint \
 *     --out /tmp/glm-medium --set num_layers=4 --set hidden_size=1024 --set ffn_hidden_size=3424 \
 *     --set kv_channels=32
 * }</pre>
 */
// PointerScope blocks are used for what they release on close, not referenced by name.
@SuppressWarnings("try")
public final class GenerateCheckpoint {

    /** Every config field of the presets, copied into the written {@code config.json}. */
    private static final List<String> CONFIG_KEYS = List.of("model_type", "add_bias_linear", "add_qkv_bias",
            "apply_query_key_layer_scaling", "apply_residual_connection_post_layernorm", "attention_dropout",
            "attention_softmax_in_fp32", "bias_dropout_fusion", "ffn_hidden_size", "fp32_residual_connection",
            "hidden_dropout", "hidden_size", "kv_channels", "layernorm_epsilon", "multi_query_attention",
            "multi_query_group_num", "num_attention_heads", "num_layers", "original_rope", "padded_vocab_size",
            "post_layer_norm", "rmsnorm", "use_cache", "torch_dtype", "tie_word_embeddings", "eos_token_id",
            "pad_token_id", "seq_length", "rope_ratio", "bos_token_id", "mask_token_id", "gmask_token_id",
            "inner_hidden_size", "max_sequence_length", "position_encoding_2d", "vocab_size");

    private static final ObjectMapper JSON = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);

    /** What to write. */
    public static final class Options {
        Path out;
        String preset = "chatglm3-6b";
        DType dtype = DType.BFLOAT16;
        long shardBytes = 2_000_000_000L;
        long chunkBytes = 64L << 20;
        double std = 0.02;
        long seed = 42;
        final Map<String, String> overrides = new LinkedHashMap<>();

        /**
         * Parses {@code --out DIR [--preset NAME] [--dtype bf16] [--shard-size 2GB] [--seed N] [--std X]
         * [--chunk 64MiB] [--set key=value]...}.
         *
         * @throws IllegalArgumentException naming the argument that is not understood
         */
        public static Options parse(String... args) {
            Options o = new Options();
            for (int i = 0; i < args.length; i++) {
                String a = args[i];
                if (i + 1 >= args.length) {
                    throw new IllegalArgumentException("Missing value after " + a);
                }
                String v = args[++i];
                switch (a) {
                    case "--out" -> o.out = Path.of(v);
                    case "--preset" -> o.preset = v;
                    case "--dtype" -> o.dtype = DType.parse(v);
                    case "--shard-size" -> o.shardBytes = MemorySize.parse(v);
                    case "--chunk" -> o.chunkBytes = MemorySize.parse(v);
                    case "--std" -> o.std = Double.parseDouble(v);
                    case "--seed" -> o.seed = Long.parseLong(v);
                    case "--set" -> {
                        int eq = v.indexOf('=');
                        if (eq <= 0) {
                            throw new IllegalArgumentException("--set expects key=value, got '" + v + "'");
                        }
                        o.overrides.put(v.substring(0, eq), v.substring(eq + 1));
                    }
                    default -> throw new IllegalArgumentException("Unknown argument " + a + "; expected --out,"
                            + " --preset, --dtype, --shard-size, --chunk, --std, --seed, --set");
                }
            }
            if (o.out == null) {
                throw new IllegalArgumentException("--out DIR is required");
            }
            if (!o.dtype.isFloatingPoint() || !o.dtype.hasScalarType()) {
                throw new IllegalArgumentException("--dtype must be a floating dtype, got " + o.dtype.torchName());
            }
            if (o.shardBytes <= 0 || o.chunkBytes <= 0) {
                throw new IllegalArgumentException("--shard-size and --chunk must be positive");
            }
            return o;
        }
    }

    private GenerateCheckpoint() {
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
        long started = System.nanoTime();
        long bytes = write(o);
        double seconds = (System.nanoTime() - started) / 1e9;
        System.out.printf(Locale.ROOT, "Wrote %s (%s) in %.1f s: %.2f GB/s%n", o.out, MemorySize.format(bytes),
                seconds, bytes / seconds / 1e9);
    }

    /** The config JSON of {@code preset} with {@code overrides} applied (numbers and booleans parsed). */
    public static ObjectNode configJson(String preset, Map<String, String> overrides, DType dtype) {
        ChatGLMConfig base = ChatGLMConfig.preset(preset);
        ObjectNode node = JSON.createObjectNode();
        node.put("_name_or_path", "bigmodel-random/" + preset);
        for (String key : CONFIG_KEYS) {
            JsonNode v = base.raw(key);
            if (v != null) {
                node.set(key, v);
            }
        }
        node.put("torch_dtype", dtype.torchName());
        overrides.forEach((k, v) -> {
            try {
                node.set(k, JSON.readTree(v));
            } catch (IOException e) {
                node.put(k, v);
            }
        });
        return node;
    }

    /** Writes the checkpoint and config; returns the bytes of tensor data written. */
    public static long write(Options o) {
        NativeRuntime.init();
        ObjectNode configNode = configJson(o.preset, o.overrides, o.dtype);
        String configText;
        try {
            configText = JSON.writeValueAsString(configNode);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        ChatGLMConfig config = ChatGLMConfig.fromJsonString(configText);
        ChatGLMLanguageModel meta = ChatGLMLanguageModel.create(config, o.dtype);
        Map<String, Parameter> stateDict = meta.stateDict();
        List<SafetensorsWriter.Entry> entries = new ArrayList<>();
        long total = 0;
        for (Map.Entry<String, Parameter> e : stateDict.entrySet()) {
            Parameter p = e.getValue();
            DType d = p.dtype().isFloatingPoint() ? o.dtype : p.dtype();
            SafetensorsWriter.Entry entry = SafetensorsWriter.Entry.of(e.getKey(), d, p.shape());
            entries.add(entry);
            total += entry.byteLength();
        }
        torch.manual_seed(o.seed);
        try (ShardedCheckpointWriter writer = ShardedCheckpointWriter.create(o.out, entries, o.shardBytes)) {
            for (SafetensorsWriter.Entry e : entries) {
                writeTensor(writer, e, config, o);
            }
        }
        try {
            Files.writeString(o.out.resolve("config.json"), configText);
        } catch (IOException e) {
            throw new UncheckedIOException("Cannot write " + o.out.resolve("config.json"), e);
        }
        return total;
    }

    private static void writeTensor(ShardedCheckpointWriter writer, SafetensorsWriter.Entry e, ChatGLMConfig config,
            Options o) {
        long elements = 1;
        for (long d : e.shape()) {
            elements *= d;
        }
        if (elements == 0) {
            return;
        }
        long elementBytes = e.byteLength() / elements;
        long chunkElements = Math.max(1, o.chunkBytes / elementBytes);
        if (e.name().endsWith("inv_freq")) {
            try (PointerScope scope = new PointerScope()) {
                writeBytes(writer, e.name(), invFreq(config, elements).to(e.dtype().scalarType()));
            }
            return;
        }
        for (long at = 0; at < elements; at += chunkElements) {
            long n = Math.min(chunkElements, elements - at);
            try (PointerScope scope = new PointerScope()) {
                Tensor chunk;
                if (e.name().endsWith("layernorm.weight")) {
                    chunk = Tensors.empty(e.dtype(), Device.CPU, n).fill_(new Scalar(1.0));
                } else if (e.dtype().isFloatingPoint()) {
                    // libtorch draws float32 normals about 7x faster than bf16 ones (measured on this machine).
                    chunk = Tensors.empty(DType.FLOAT32, Device.CPU, n).normal_(0.0, o.std, new GeneratorOptional())
                            .to(e.dtype().scalarType());
                } else {
                    chunk = Tensors.empty(e.dtype(), Device.CPU, n).zero_();
                }
                writeBytes(writer, e.name(), chunk);
            }
        }
    }

    /** The rotary inverse frequencies as ChatGLM2/3 compute them: {@code 1 / 10000^(2i/d)}, d = head dim / 2. */
    private static Tensor invFreq(ChatGLMConfig config, long elements) {
        double dim = 2.0 * elements;
        float[] values = new float[(int) elements];
        for (int i = 0; i < values.length; i++) {
            values[i] = (float) (1.0 / Math.pow(10000.0, 2.0 * i / dim));
        }
        Tensor t = Tensors.empty(DType.FLOAT32, Device.CPU, elements);
        new org.bytedeco.javacpp.FloatPointer(t.data_ptr()).put(values);
        return t;
    }

    private static void writeBytes(ShardedCheckpointWriter writer, String name, Tensor contiguous) {
        BytePointer data = new BytePointer(contiguous.data_ptr());
        data.capacity(contiguous.nbytes());
        ByteBuffer buffer = data.asByteBuffer();
        writer.write(name, buffer);
    }
}
