package io.github.bigmodel.chatglm;

import io.github.bigmodel.chatglm.tokenizer.ChatGLM3Tokenizer;
import io.github.bigmodel.core.DType;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Locale;

/**
 * A ChatGLM3 model small enough to write in a second and chat with at once, for a first program, the command
 * line's examples and its demo: ChatGLM3-6B's architecture and tensor names in miniature (8 layers, hidden size
 * 256, multi-query attention with 2 groups, about 7.6 million parameters, 29 MiB in float32), a real ChatGLM3
 * tokenizer (a small SentencePiece vocabulary with ChatGLM3's role and special tokens) whose vocabulary is the
 * model's, and seeded random weights. The replies are fluent nonsense (the weights are random), but every step of
 * a real chat runs: prompt building, streaming generation, decoding.
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

    /** The seed of the random weights: the same folder every time. */
    public static final long SEED = 1234;

    private TinyChatGLM3() {
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
            RandomCheckpoint.write(meta, folder, DType.FLOAT32, maxShardBytes, 0.08, SEED);
            return folder;
        } catch (IOException e) {
            throw new UncheckedIOException("Cannot write the tiny ChatGLM3 model to " + folder + ": " + e, e);
        }
    }
}
