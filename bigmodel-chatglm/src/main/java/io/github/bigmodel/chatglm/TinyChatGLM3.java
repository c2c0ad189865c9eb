package io.github.bigmodel.chatglm;

import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.chatglm.tokenizer.ChatGLM3Tokenizer;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Parameter;
import io.github.bigmodel.safetensors.SafetensorsWriter;
import io.github.bigmodel.safetensors.ShardedCheckpointWriter;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.SplittableRandom;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * A ChatGLM3 model small enough to write in a second and chat with at once, for a first program, the command
 * line's examples and its demo: ChatGLM3-6B's architecture and tensor names in miniature (8 layers, hidden size
 * 256, multi-query attention with 2 groups, about 7.6 million parameters, 29 MiB in float32), a real ChatGLM3
 * tokenizer (a small SentencePiece vocabulary with ChatGLM3's role and special tokens) whose vocabulary is the
 * model's, and seeded random weights that know one thing: to open a reply with a newline, as trained ChatGLM3
 * models do, so that replies stream. The replies are nonsense (the weights are random), but every step of a real
 * chat runs: prompt building, streaming generation, decoding.
 *
 * <pre>{@code
 * Path dir = TinyChatGLM3.write(Path.of("chatglm3-tiny"));      // config.json, tokenizer.model, safetensors
 * try (ChatGLM glm = ChatGLM.load(dir)) {
 *     System.out.println(glm.chat("你好", List.of()).text());
 * }
 * }</pre>
 */
public final class TinyChatGLM3 {

    /** Layers, sizes and special ids of the tiny model; {@code %d} is the tokenizer's vocabulary size. */
    private static final String CONFIG = "{\n  \"_name_or_path\": \"bigmodel/chatglm3-tiny\",\n"
            + "  \"model_type\": \"chatglm\",\n  \"architectures\": [\"ChatGLMModel\"],\n"
            + "  \"num_layers\": 8,\n  \"hidden_size\": 256,\n  \"ffn_hidden_size\": 688,\n  \"kv_channels\": 32,\n"
            + "  \"num_attention_heads\": 8,\n  \"multi_query_attention\": true,\n  \"multi_query_group_num\": 2,\n"
            + "  \"padded_vocab_size\": %d,\n  \"seq_length\": 2048,\n  \"layernorm_epsilon\": 1e-05,\n"
            + "  \"rmsnorm\": true,\n  \"add_bias_linear\": false,\n  \"add_qkv_bias\": true,\n"
            + "  \"apply_residual_connection_post_layernorm\": false,\n  \"post_layer_norm\": true,\n"
            + "  \"original_rope\": true,\n  \"torch_dtype\": \"float32\",\n  \"eos_token_id\": 2,\n"
            + "  \"pad_token_id\": 0\n}\n";

    /** Standard deviation of the random weights. */
    private static final double STD = 0.08;
    /** Standard deviation of {@code <|assistant|>}'s embedding: large enough to outweigh the 8 random blocks. */
    private static final double ASSISTANT_STD = 30;
    /** Length of the output-layer row of the newline, pointing along {@code <|assistant|>}'s embedding. */
    private static final double NEWLINE_ROW_NORM = 1.5;

    /** The seed of the random weights: the same folder every time. */
    public static final long SEED = 1234;

    private TinyChatGLM3() {
    }

    /**
     * Random weights (SplittableRandom, so the same on every platform), norms at 1, with one thing learned: after
     * {@code <|assistant|>} the model says a newline, as trained ChatGLM3 models do. ChatGLM3's reply text starts
     * after that first line (the line before it names a tool), so without it a stream shows nothing until the reply
     * ends. The embedding of {@code <|assistant|>} is made large, so the last hidden state of a prompt points along
     * it, and the newline's output row points the same way: its logit stands far above the random ones there, and
     * among them elsewhere.
     */
    private static void writeWeights(ChatGLMLanguageModel meta, ChatGLM3Tokenizer tokenizer, Path folder,
            long maxShardBytes) {
        int assistant = tokenizer.convertTokenToId("<|assistant|>");
        int newline = tokenizer.convertTokenToId("<0x0A>");
        if (!tokenizer.decode(new int[] {newline}).equals("\n")) {
            throw new IllegalStateException("The tiny tokenizer has no newline piece <0x0A>");
        }
        SplittableRandom random = new SplittableRandom(SEED);
        Map<String, Parameter> stateDict = meta.stateDict();
        List<SafetensorsWriter.Entry> entries = new ArrayList<>();
        stateDict.forEach((name, p) -> entries.add(SafetensorsWriter.Entry.of(name, DType.FLOAT32, p.shape())));
        int hidden = meta.config().hiddenSize();
        float[] assistantRow = new float[hidden];
        try (ShardedCheckpointWriter writer = ShardedCheckpointWriter.create(folder, entries, maxShardBytes)) {
            for (SafetensorsWriter.Entry e : entries) {
                long[] shape = e.shape();
                float[] values = new float[Math.toIntExact(Arrays.stream(shape).reduce(1, Math::multiplyExact))];
                if (e.name().endsWith("layernorm.weight")) {
                    Arrays.fill(values, 1f);
                } else {
                    for (int i = 0; i < values.length; i++) {
                        values[i] = (float) (random.nextGaussian() * STD);
                    }
                }
                if (e.name().endsWith("word_embeddings.weight")) {
                    for (int j = 0; j < hidden; j++) {
                        assistantRow[j] = (float) (random.nextGaussian() * ASSISTANT_STD);
                        values[assistant * hidden + j] = assistantRow[j];
                    }
                } else if (e.name().endsWith("output_layer.weight")) {
                    double norm = 0;
                    for (float v : assistantRow) {
                        norm += (double) v * v;
                    }
                    double scale = NEWLINE_ROW_NORM / Math.sqrt(norm);
                    for (int j = 0; j < hidden; j++) {
                        values[newline * hidden + j] = (float) (assistantRow[j] * scale);
                    }
                }
                try (PointerScope scope = new PointerScope(); FloatPointer data = new FloatPointer(values)) {
                    writer.write(e.name(), torch.from_blob(data, shape, new TensorOptions(ScalarType.Float)));
                }
            }
        }
    }

    /** As {@link #write(Path, long)} with one weights file per 8 MiB. */
    public static Path write(Path folder) {
        return write(folder, 8L << 20);
    }

    /**
     * Writes {@code config.json}, {@code tokenizer.model} and random float32 weights (safetensors shards of at most
     * {@code maxShardBytes}, with {@code model.safetensors.index.json}) into {@code folder}, creating it.
     *
     * @return {@code folder}
     * @throws IllegalArgumentException when the folder already holds a {@code config.json} (nothing is overwritten)
     * @throws UncheckedIOException when the folder cannot be written
     */
    public static Path write(Path folder, long maxShardBytes) {
        try {
            Files.createDirectories(folder);
            if (Files.exists(folder.resolve("config.json"))) {
                throw new IllegalArgumentException(folder + " already holds a config.json: choose an empty folder");
            }
            Path tokenizerFile = folder.resolve("tokenizer.model");
            try (InputStream in = TinyChatGLM3.class.getResourceAsStream("tiny/tokenizer.model")) {
                if (in == null) {
                    throw new IllegalStateException("tiny/tokenizer.model is missing from bigmodel-chatglm's jar");
                }
                Files.copy(in, tokenizerFile);
            }
            int vocab = ChatGLM3Tokenizer.load(tokenizerFile).vocabSize();
            Files.writeString(folder.resolve("config.json"), String.format(Locale.ROOT, CONFIG, vocab),
                    StandardCharsets.UTF_8);
            ChatGLMLanguageModel meta = ChatGLMLanguageModel.create(ChatGLMConfig.fromJson(
                    folder.resolve("config.json")), DType.FLOAT32);
            writeWeights(meta, ChatGLM3Tokenizer.load(tokenizerFile), folder, maxShardBytes);
            return folder;
        } catch (IOException e) {
            throw new UncheckedIOException("Cannot write the tiny ChatGLM3 model to " + folder + ": " + e, e);
        }
    }
}
