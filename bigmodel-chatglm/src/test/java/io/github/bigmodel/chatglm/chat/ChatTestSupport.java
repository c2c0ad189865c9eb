package io.github.bigmodel.chatglm.chat;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.github.bigmodel.chatglm.ChatGLMConfig;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.chatglm.generation.LogitsProcessor;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.testing.ReferenceTree;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/** Random-weight models sized to the fixture tokenizers, scripted token choice and fixture JSON helpers. */
final class ChatTestSupport {

    static final ObjectMapper MAPPER = new ObjectMapper();

    private ChatTestSupport() {
    }

    /**
     * A small ChatGLM3 model folder in {@code folder}: the fixture tokenizer, a 2-layer config over its vocabulary with
     * {@code seqLength} positions, random weights stored as {@code stored} (the model computes in float32).
     */
    static java.nio.file.Path writeSmallChatGLM3(java.nio.file.Path folder, int seqLength, DType stored, long seed)
            throws IOException {
        java.nio.file.Files.createDirectories(folder);
        java.nio.file.Files.copy(ReferenceTree.tokenizer().resolve("tokenizer.model"), folder.resolve("tokenizer.model"));
        int vocab = io.github.bigmodel.chatglm.tokenizer.ChatGLM3Tokenizer.load(folder.resolve("tokenizer.model"))
                .vocabSize();
        java.nio.file.Files.writeString(folder.resolve("config.json"), String.format(java.util.Locale.ROOT,
                "{\"num_layers\": 2, \"hidden_size\": 64, \"ffn_hidden_size\": 128, \"kv_channels\": 16,"
                + " \"num_attention_heads\": 4, \"multi_query_attention\": true, \"multi_query_group_num\": 2,"
                + " \"padded_vocab_size\": %d, \"seq_length\": %d, \"rmsnorm\": true, \"add_bias_linear\": false,"
                + " \"add_qkv_bias\": true, \"torch_dtype\": \"float32\"}", vocab, seqLength),
                java.nio.charset.StandardCharsets.UTF_8);
        ChatGLMLanguageModel meta = ChatGLMLanguageModel.create(ChatGLMConfig.fromJson(folder.resolve("config.json")),
                DType.FLOAT32);
        io.github.bigmodel.chatglm.model.RandomCheckpoint.write(meta, folder, stored, 1L << 20, 0.1, seed);
        return folder;
    }

    static JsonNode fixture(String name) {
        try {
            return MAPPER.readTree(ReferenceTree.tokenizer().resolve(name).toFile());
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** A one-layer ChatGLM2/3 model (on meta, then seeded random weights) whose vocabulary is {@code vocab}. */
    static ChatGLMLanguageModel randomGlm2(int vocab, int seqLength, long seed) {
        ChatGLMConfig config = ChatGLMConfig.fromJsonString("{\"padded_vocab_size\":" + vocab
                + ",\"hidden_size\":32,\"num_attention_heads\":2,\"kv_channels\":16,\"ffn_hidden_size\":48,"
                + "\"num_layers\":1,\"multi_query_attention\":true,\"multi_query_group_num\":1,\"seq_length\":"
                + seqLength + ",\"add_qkv_bias\":true,\"torch_dtype\":\"float32\",\"eos_token_id\":2,"
                + "\"pad_token_id\":0}");
        return randomWeights(ChatGLMLanguageModel.create(config, DType.FLOAT32), seed);
    }

    /** A one-layer ChatGLM-6B model with the special ids of the fixture tokenizer (chatglm1_cases.json). */
    static ChatGLMLanguageModel randomGlm1(int vocab, long seed) {
        JsonNode ids = fixture("chatglm1_cases.json");
        ChatGLMConfig config = ChatGLMConfig.fromJsonString("{\"vocab_size\":" + vocab
                + ",\"hidden_size\":32,\"num_attention_heads\":2,\"inner_hidden_size\":64,\"num_layers\":1,"
                + "\"position_encoding_2d\":true,\"max_sequence_length\":1024,\"bos_token_id\":"
                + ids.get("bos_token_id") + ",\"eos_token_id\":" + ids.get("eos_token_id") + ",\"mask_token_id\":"
                + ids.get("mask_token_id") + ",\"gmask_token_id\":" + ids.get("gmask_token_id")
                + ",\"pad_token_id\":" + ids.get("pad_token_id") + ",\"torch_dtype\":\"float32\"}");
        return randomWeights(ChatGLMLanguageModel.create(config, DType.FLOAT32), seed);
    }

    private static ChatGLMLanguageModel randomWeights(ChatGLMLanguageModel model, long seed) {
        SplittableRandom random = new SplittableRandom(seed);
        model.loadWeights(name -> {
            long[] shape = model.tensor(name).shape();
            int n = 1;
            for (long d : shape) {
                n *= (int) d;
            }
            float[] values = new float[n];
            boolean norm = name.contains("layernorm") || name.endsWith("norm.weight");
            for (int i = 0; i < n; i++) {
                values[i] = norm ? 1f : (float) (random.nextGaussian() * 0.3);
            }
            try (FloatPointer p = new FloatPointer(values)) {
                return torch.from_blob(p, shape, new TensorOptions(ScalarType.Float)).clone();
            }
        }, Device.CPU, DType.FLOAT32);
        return model;
    }

    /** A ChatGLM-6B tokenizer: it does not fit a ChatGLM2/3 model. */
    static io.github.bigmodel.chatglm.tokenizer.ChatTokenizer smallVocabTokenizer() {
        return io.github.bigmodel.chatglm.tokenizer.ChatGLM1Tokenizer.load(
                ReferenceTree.tokenizer().resolve("ice_text.model"), 0);
    }

    /** Forces the model's choice at step i to {@code ids[i]} (scores -inf except that id). */
    static LogitsProcessor scripted(int[] ids, int promptLength) {
        return (rows, scores) -> {
            int step = rows[0].length - promptLength;
            Tensor forced = scores.clone().fill_(new Scalar(Float.NEGATIVE_INFINITY));
            forced.narrow(1, ids[step], 1).fill_(new Scalar(0));
            return forced;
        };
    }

    static int[] ints(JsonNode array) {
        int[] out = new int[array.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = array.get(i).intValue();
        }
        return out;
    }

    /** ChatGLM3 history items of a fixture. */
    static List<ChatMessage> messages(JsonNode array) {
        List<ChatMessage> out = new ArrayList<>();
        for (JsonNode item : array) {
            out.add(new ChatMessage(item.get("role").textValue(), item.get("content").textValue(),
                    item.has("metadata") ? item.get("metadata").textValue() : null, item.get("tools")));
        }
        return out;
    }

    /** ChatGLM-6B / ChatGLM2 fixture history {@code [[query, response], ...]} as message pairs. */
    static List<ChatMessage> pairs(JsonNode array) {
        List<ChatMessage> out = new ArrayList<>();
        for (JsonNode pair : array) {
            out.add(ChatMessage.of("user", pair.get(0).textValue()));
            out.add(ChatMessage.of("assistant", pair.get(1).textValue()));
        }
        return out;
    }

    static JsonNode messagesJson(List<ChatMessage> history) {
        List<Object> out = new ArrayList<>();
        for (ChatMessage m : history) {
            ObjectNode node = MAPPER.createObjectNode();
            node.put("role", m.role());
            if (m.metadata() != null) {
                node.put("metadata", m.metadata());
            }
            node.put("content", m.content());
            if (m.tools() != null) {
                node.set("tools", m.tools());
            }
            out.add(node);
        }
        return normalized(out);
    }

    static JsonNode pairsJson(List<ChatMessage> history) {
        List<List<String>> out = new ArrayList<>();
        ChatGLM.roundsOf(history).forEach(r -> out.add(List.of(r.query(), r.response())));
        return normalized(out);
    }

    static JsonNode normalized(Object value) {
        try {
            return MAPPER.readTree(MAPPER.writeValueAsString(value));
        } catch (JsonProcessingException e) {
            throw new IllegalStateException(e);
        }
    }
}
