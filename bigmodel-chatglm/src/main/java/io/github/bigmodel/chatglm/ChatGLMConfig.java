package io.github.bigmodel.chatglm;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.github.bigmodel.core.DType;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import io.github.bigmodel.chatglm.model.KvCache;

/**
 * The architecture of a ChatGLM model, read from the official {@code config.json} of ChatGLM-6B (v1, GLM with 2D
 * rotary) or ChatGLM2-6B / ChatGLM3-6B (one modeling), or taken from a built-in preset so that a device map can be
 * planned with no files at hand.
 *
 * <p>Fields absent from a file take the defaults of the official configuration classes. Both generations share
 * one class; {@link #version()} tells which fields matter. Derived sizes ({@link #headDim()},
 * {@link #kvHeads()}, {@link #qkvOutFeatures()}, ...) are computed the way the official modeling code does.
 *
 * <pre>{@code
 * ChatGLMConfig c = ChatGLMConfig.fromJson(Path.of("chatglm3-6b/config.json"));
 * ChatGLMConfig p = ChatGLMConfig.preset("chatglm3-6b");   // same values, no file
 * c.numLayers();      // 28
 * c.kvHeads();        // 2 (multi-query groups)
 * }</pre>
 */
public final class ChatGLMConfig {

    /** The two modeling generations. */
    public enum Version {
        /** ChatGLM-6B: LayerNorm, 2D rotary (GPT-NeoX halves), per-head qkv layout, GELU MLP, tied lm_head. */
        CHATGLM_6B,
        /** ChatGLM2-6B and ChatGLM3-6B: RMSNorm, interleaved rotary on half the head, multi-query, SwiGLU. */
        CHATGLM2
    }

    private static final ObjectMapper JSON = new ObjectMapper();

    /**
     * Most layers a config may have. Published ChatGLM models have 28 and the deepest published transformer language
     * models well under 200; each layer costs Java heap even on meta, so a larger count is taken as damage.
     */
    public static final int MAX_LAYERS = 1024;

    private static final Map<String, String> PRESETS = new LinkedHashMap<>();

    static {
        PRESETS.put("chatglm-6b", "{\"bos_token_id\":130004,\"eos_token_id\":130005,\"mask_token_id\":130000,"
                + "\"gmask_token_id\":130001,\"pad_token_id\":3,\"hidden_size\":4096,\"inner_hidden_size\":16384,"
                + "\"layernorm_epsilon\":1e-05,\"max_sequence_length\":2048,\"model_type\":\"chatglm\","
                + "\"num_attention_heads\":32,\"num_layers\":28,\"position_encoding_2d\":true,"
                + "\"torch_dtype\":\"float16\",\"use_cache\":true,\"vocab_size\":130528}");
        String glm2 = "\"model_type\":\"chatglm\",\"add_bias_linear\":false,\"add_qkv_bias\":true,"
                + "\"apply_query_key_layer_scaling\":true,\"apply_residual_connection_post_layernorm\":false,"
                + "\"attention_dropout\":0.0,\"attention_softmax_in_fp32\":true,\"bias_dropout_fusion\":true,"
                + "\"ffn_hidden_size\":13696,\"fp32_residual_connection\":false,\"hidden_dropout\":0.0,"
                + "\"hidden_size\":4096,\"kv_channels\":128,\"layernorm_epsilon\":1e-05,"
                + "\"multi_query_attention\":true,\"multi_query_group_num\":2,\"num_attention_heads\":32,"
                + "\"num_layers\":28,\"original_rope\":true,\"padded_vocab_size\":65024,\"post_layer_norm\":true,"
                + "\"rmsnorm\":true,\"use_cache\":true,\"torch_dtype\":\"float16\",\"tie_word_embeddings\":false,"
                + "\"eos_token_id\":2,\"pad_token_id\":0";
        PRESETS.put("chatglm2-6b", "{" + glm2 + ",\"seq_length\":32768}");
        PRESETS.put("chatglm3-6b", "{" + glm2 + ",\"seq_length\":8192}");
        PRESETS.put("chatglm3-6b-32k", "{" + glm2 + ",\"seq_length\":32768,\"rope_ratio\":50}");
        PRESETS.put("chatglm3-6b-128k", "{" + glm2 + ",\"seq_length\":131072,\"rope_ratio\":500}");
    }

    private final Version version;
    private final JsonNode source;
    private final int numLayers;
    private final int hiddenSize;
    private final int numAttentionHeads;
    private final double layernormEpsilon;
    private final DType torchDtype;
    private final int vocabSize;
    private final List<Long> eosTokenIds;
    private final long padTokenId;
    private final boolean useCache;
    // ChatGLM-6B
    private final int innerHiddenSize;
    private final boolean positionEncoding2d;
    private final int maxSequenceLength;
    private final long bosTokenId;
    private final long maskTokenId;
    private final long gmaskTokenId;
    // ChatGLM2/3
    private final int ffnHiddenSize;
    private final int kvChannels;
    private final int seqLength;
    private final boolean multiQueryAttention;
    private final int multiQueryGroupNum;
    private final boolean rmsnorm;
    private final boolean addBiasLinear;
    private final boolean addQkvBias;
    private final boolean applyResidualConnectionPostLayernorm;
    private final boolean postLayerNorm;
    private final boolean originalRope;
    private final double ropeRatio;
    private final boolean applyQueryKeyLayerScaling;
    private final boolean attentionSoftmaxInFp32;
    private final boolean tieWordEmbeddings;

    private ChatGLMConfig(JsonNode n, String origin) {
        if (n == null || !n.isObject()) {
            throw new ChatGLMConfigException(origin + ": a ChatGLM config must be a JSON object");
        }
        this.source = n;
        boolean glm2 = n.has("padded_vocab_size") || n.has("kv_channels") || n.has("ffn_hidden_size")
                || n.has("multi_query_attention") || n.has("seq_length");
        boolean glm1 = n.has("inner_hidden_size") || n.has("position_encoding_2d") || n.has("max_sequence_length")
                || n.has("gmask_token_id");
        if (glm2 == glm1) {
            throw new ChatGLMConfigException(origin + ": cannot tell ChatGLM-6B from ChatGLM2/3 (expected either "
                    + "padded_vocab_size/kv_channels/ffn_hidden_size or inner_hidden_size/position_encoding_2d)");
        }
        this.version = glm2 ? Version.CHATGLM2 : Version.CHATGLM_6B;
        requireShape(n, glm2, origin);
        if (intOr(n, "quantization_bit", 0, origin) != 0) {
            throw new ChatGLMConfigException(origin + ": quantization_bit " + n.get("quantization_bit")
                    + " is not supported by this modeling (load an unquantized checkpoint)");
        }
        if (n.hasNonNull("pre_seq_len")) {
            throw new ChatGLMConfigException(origin + ": pre_seq_len (P-tuning prefix) is not supported");
        }
        this.numLayers = positive(n, "num_layers", 28, origin);
        this.hiddenSize = positive(n, "hidden_size", 4096, origin);
        this.numAttentionHeads = positive(n, "num_attention_heads", 32, origin);
        this.layernormEpsilon = doubleOr(n, "layernorm_epsilon", 1e-5, origin);
        if (!(layernormEpsilon > 0)) {
            throw new ChatGLMConfigException(origin + ": layernorm_epsilon must be > 0, got " + layernormEpsilon);
        }
        this.useCache = boolOr(n, "use_cache", true, origin);
        JsonNode dt = n.get("torch_dtype");
        DType defaultDtype = glm2 ? DType.FLOAT32 : DType.FLOAT16;
        try {
            this.torchDtype = dt == null || dt.isNull() ? defaultDtype : DType.parse(dt.asText());
        } catch (IllegalArgumentException e) {
            throw new ChatGLMConfigException(origin + ": torch_dtype " + dt + " is not a dtype", e);
        }
        if (torchDtype != DType.FLOAT32 && torchDtype != DType.FLOAT16 && torchDtype != DType.BFLOAT16) {
            // The model's linear layers hold fp32, fp16 or bf16 (or int8/int4); float64 and float8 have no Precision.
            throw new ChatGLMConfigException(origin + ": torch_dtype must be float32, float16 or bfloat16, got " + dt);
        }
        this.eosTokenIds = idList(n, "eos_token_id", glm2 ? 2 : 150005, origin);
        if (glm2) {
            this.vocabSize = positive(n, "padded_vocab_size", 65024, origin);
            this.padTokenId = intOr(n, "pad_token_id", 0, origin);
            this.ffnHiddenSize = positive(n, "ffn_hidden_size", 13696, origin);
            this.kvChannels = positive(n, "kv_channels", 128, origin);
            this.seqLength = positive(n, "seq_length", 2048, origin);
            this.multiQueryAttention = boolOr(n, "multi_query_attention", false, origin);
            this.multiQueryGroupNum = positive(n, "multi_query_group_num", 1, origin);
            this.rmsnorm = boolOr(n, "rmsnorm", true, origin);
            this.addBiasLinear = boolOr(n, "add_bias_linear", false, origin);
            this.addQkvBias = boolOr(n, "add_qkv_bias", false, origin);
            this.applyResidualConnectionPostLayernorm =
                    boolOr(n, "apply_residual_connection_post_layernorm", false, origin);
            this.postLayerNorm = boolOr(n, "post_layer_norm", true, origin);
            this.originalRope = boolOr(n, "original_rope", true, origin);
            this.ropeRatio = doubleOr(n, "rope_ratio", 1.0, origin);
            this.applyQueryKeyLayerScaling = boolOr(n, "apply_query_key_layer_scaling", true, origin);
            this.attentionSoftmaxInFp32 = boolOr(n, "attention_softmax_in_fp32", true, origin);
            this.tieWordEmbeddings = boolOr(n, "tie_word_embeddings", false, origin);
            if (!(ropeRatio > 0)) {
                throw new ChatGLMConfigException(origin + ": rope_ratio must be > 0, got " + ropeRatio);
            }
            if (multiQueryAttention && numAttentionHeads % multiQueryGroupNum != 0) {
                throw new ChatGLMConfigException(origin + ": num_attention_heads " + numAttentionHeads
                        + " is not a multiple of multi_query_group_num " + multiQueryGroupNum);
            }
            if (kvChannels % 4 != 0) {
                throw new ChatGLMConfigException(origin + ": kv_channels " + kvChannels
                        + " must be a multiple of 4 (rotary pairs over half of each head)");
            }
            this.innerHiddenSize = 0;
            this.positionEncoding2d = false;
            this.maxSequenceLength = 0;
            this.bosTokenId = -1;
            this.maskTokenId = -1;
            this.gmaskTokenId = -1;
        } else {
            this.vocabSize = positive(n, "vocab_size", 150528, origin);
            this.padTokenId = intOr(n, "pad_token_id", 0, origin);
            this.innerHiddenSize = positive(n, "inner_hidden_size", 16384, origin);
            this.positionEncoding2d = boolOr(n, "position_encoding_2d", true, origin);
            this.maxSequenceLength = positive(n, "max_sequence_length", 2048, origin);
            this.bosTokenId = intOr(n, "bos_token_id", 150004, origin);
            this.maskTokenId = intOr(n, "mask_token_id", 150000, origin);
            this.gmaskTokenId = intOr(n, "gmask_token_id", 150001, origin);
            if (hiddenSize % numAttentionHeads != 0) {
                throw new ChatGLMConfigException(origin + ": hidden_size " + hiddenSize
                        + " is not a multiple of num_attention_heads " + numAttentionHeads);
            }
            if (!positionEncoding2d) {
                throw new ChatGLMConfigException(origin + ": position_encoding_2d=false is not supported "
                        + "(every published ChatGLM-6B uses 2D positions)");
            }
            if ((hiddenSize / numAttentionHeads) % 4 != 0) {
                throw new ChatGLMConfigException(origin + ": head size " + (hiddenSize / numAttentionHeads)
                        + " must be a multiple of 4 for 2D rotary");
            }
            this.ffnHiddenSize = 0;
            this.kvChannels = 0;
            this.seqLength = 0;
            this.multiQueryAttention = false;
            this.multiQueryGroupNum = 0;
            this.rmsnorm = false;
            this.addBiasLinear = true;
            this.addQkvBias = true;
            this.applyResidualConnectionPostLayernorm = false;
            this.postLayerNorm = true;
            this.originalRope = true;
            this.ropeRatio = 1.0;
            this.applyQueryKeyLayerScaling = true;
            this.attentionSoftmaxInFp32 = true;
            this.tieWordEmbeddings = true;
        }
        checkSizes(origin);
    }

    /**
     * Rejects a config whose model could not even be described: more layers than {@link #MAX_LAYERS} (building them
     * on meta would exhaust the Java heap), or weights whose element count times 8 bytes overflows a {@code long}
     * (byte sizes would turn negative). Uses an upper bound of every weight and bias of the model.
     */
    private void checkSizes(String origin) {
        if (numLayers > MAX_LAYERS) {
            throw new ChatGLMConfigException(origin + ": num_layers " + numLayers + " is more than " + MAX_LAYERS
                    + "; a damaged config rather than a ChatGLM model");
        }
        try {
            long hidden = hiddenSize;
            long mlp = version == Version.CHATGLM2 ? ffnHiddenSize : innerHiddenSize;
            long attention = Math.multiplyExact((long) numAttentionHeads, (long) headDim());
            long perLayer = Math.addExact(Math.addExact(
                    Math.multiplyExact(qkvOutFeatures(), hidden + 1),
                    Math.multiplyExact(hidden, attention + 1)), Math.addExact(
                    Math.multiplyExact(Math.multiplyExact(2L, mlp), hidden + 1),
                    Math.addExact(Math.multiplyExact(hidden, mlp + 1), Math.multiplyExact(4L, hidden))));
            long total = Math.addExact(Math.multiplyExact(perLayer, (long) numLayers),
                    Math.addExact(Math.multiplyExact(2L, Math.multiplyExact((long) vocabSize, hidden)), 2 * hidden));
            if (total > Long.MAX_VALUE / Long.SIZE) {
                throw new ArithmeticException("more than 2^57 elements");
            }
        } catch (ArithmeticException e) {
            throw new ChatGLMConfigException(origin + ": sizes too large to describe (hidden_size " + hiddenSize
                    + ", num_layers " + numLayers + ", vocabulary " + vocabSize + "): the byte count of the weights"
                    + " overflows", e);
        }
    }

    /** Reads an official {@code config.json}. */
    public static ChatGLMConfig fromJson(Path file) {
        try {
            return new ChatGLMConfig(JSON.readTree(Files.readAllBytes(file)), file.toString());
        } catch (JsonProcessingException e) {
            throw new ChatGLMConfigException(file + ": not valid JSON: " + e.getOriginalMessage(), e);
        } catch (IOException e) {
            throw new ChatGLMConfigException(file + ": cannot read: " + e.getMessage(), e);
        }
    }

    /** Parses the text of an official {@code config.json}. */
    public static ChatGLMConfig fromJsonString(String json) {
        try {
            return new ChatGLMConfig(JSON.readTree(json), "config");
        } catch (JsonProcessingException e) {
            throw new ChatGLMConfigException("config: not valid JSON: " + e.getOriginalMessage(), e);
        }
    }

    /**
     * The published configuration of a THUDM model: {@code chatglm-6b}, {@code chatglm2-6b}, {@code chatglm3-6b},
     * {@code chatglm3-6b-32k}, {@code chatglm3-6b-128k} (an optional {@code THUDM/} prefix is accepted).
     */
    public static ChatGLMConfig preset(String name) {
        String key = name == null ? "" : name.trim().toLowerCase(Locale.ROOT);
        if (key.startsWith("thudm/")) {
            key = key.substring("thudm/".length());
        }
        String json = PRESETS.get(key);
        if (json == null) {
            throw new ChatGLMConfigException("Unknown ChatGLM preset '" + name + "': expected one of " + presetNames());
        }
        return fromJsonString(json);
    }

    /** The names {@link #preset(String)} accepts. */
    public static Set<String> presetNames() {
        return Collections.unmodifiableSet(PRESETS.keySet());
    }

    /**
     * The fields that give the weights their shapes must be stated. THUDM's configuration classes default every
     * field (hidden_size 4096, num_layers 28, ...), but every config.json they write states these, and a file that
     * leaves one out was written by hand: the 6B default would meet smaller weights and fail at load time with a
     * wall of shape mismatches, which is what the official code does too. Flags, dropouts, epsilon, token ids and
     * the context length keep THUDM's defaults.
     */
    private static void requireShape(JsonNode n, boolean glm2, String origin) {
        List<String> required = glm2
                ? List.of("num_layers", "hidden_size", "num_attention_heads", "kv_channels", "ffn_hidden_size",
                        "padded_vocab_size")
                : List.of("num_layers", "hidden_size", "num_attention_heads", "inner_hidden_size", "vocab_size");
        List<String> missing = new ArrayList<>();
        for (String key : required) {
            if (!n.hasNonNull(key)) {
                missing.add(key);
            }
        }
        if (!missing.isEmpty()) {
            throw new ChatGLMConfigException(origin + ": " + String.join(", ", missing) + (missing.size() == 1
                    ? " is" : " are") + " missing; a ChatGLM config states the sizes of its weights ("
                    + String.join(", ", required) + ") rather than take the 6B model's defaults");
        }
    }

    private static int positive(JsonNode n, String key, int dflt, String origin) {
        int v = intOr(n, key, dflt, origin);
        if (v <= 0) {
            throw new ChatGLMConfigException(origin + ": " + key + " must be > 0, got " + v);
        }
        return v;
    }

    private static int intOr(JsonNode n, String key, int dflt, String origin) {
        JsonNode v = n.get(key);
        if (v == null || v.isNull()) {
            return dflt;
        }
        if (v.isNumber() && v.doubleValue() > Integer.MAX_VALUE) {
            // 1e12 or 10000000000: a size, not a malformed number; say which.
            throw new ChatGLMConfigException(origin + ": " + key + " is too large: " + v + " (at most "
                    + Integer.MAX_VALUE + ")");
        }
        if (v.isNumber() && v.doubleValue() < Integer.MIN_VALUE) {
            throw new ChatGLMConfigException(origin + ": " + key + " is too small: " + v);
        }
        if (!v.canConvertToInt() || !v.isIntegralNumber()) {
            throw new ChatGLMConfigException(origin + ": " + key + " must be an integer, got " + v);
        }
        return v.intValue();
    }

    private static double doubleOr(JsonNode n, String key, double dflt, String origin) {
        JsonNode v = n.get(key);
        if (v == null || v.isNull()) {
            return dflt;
        }
        if (!v.isNumber() || !Double.isFinite(v.doubleValue())) {
            // 1e400 parses to Infinity: no usable epsilon or rotary base.
            throw new ChatGLMConfigException(origin + ": " + key + " must be a finite number, got " + v);
        }
        return v.doubleValue();
    }

    private static boolean boolOr(JsonNode n, String key, boolean dflt, String origin) {
        JsonNode v = n.get(key);
        if (v == null || v.isNull()) {
            return dflt;
        }
        if (!v.isBoolean()) {
            throw new ChatGLMConfigException(origin + ": " + key + " must be true or false, got " + v);
        }
        return v.booleanValue();
    }

    private static List<Long> idList(JsonNode n, String key, long dflt, String origin) {
        JsonNode v = n.get(key);
        List<Long> out = new ArrayList<>();
        if (v == null || v.isNull()) {
            out.add(dflt);
        } else if (v.isArray()) {
            for (JsonNode e : v) {
                if (!e.isIntegralNumber()) {
                    throw new ChatGLMConfigException(origin + ": " + key + " must hold integers, got " + v);
                }
                out.add(e.longValue());
            }
        } else if (v.isIntegralNumber()) {
            out.add(v.longValue());
        } else {
            throw new ChatGLMConfigException(origin + ": " + key + " must be an integer or a list, got " + v);
        }
        return Collections.unmodifiableList(out);
    }

    public Version version() {
        return version;
    }

    /** A value of the original JSON (null when absent), for fields this class does not model. */
    public JsonNode raw(String key) {
        return source.get(key);
    }

    public int numLayers() {
        return numLayers;
    }

    public int hiddenSize() {
        return hiddenSize;
    }

    public int numAttentionHeads() {
        return numAttentionHeads;
    }

    public double layernormEpsilon() {
        return layernormEpsilon;
    }

    /** The dtype the official classes allocate parameters in ({@code torch_dtype}). */
    public DType torchDtype() {
        return torchDtype;
    }

    /** Rows of the embedding and of the output layer: {@code vocab_size} (v1) or {@code padded_vocab_size}. */
    public int vocabSize() {
        return vocabSize;
    }

    public List<Long> eosTokenIds() {
        return eosTokenIds;
    }

    public long padTokenId() {
        return padTokenId;
    }

    public boolean useCache() {
        return useCache;
    }

    /** ChatGLM-6B: width of the GELU MLP. */
    public int innerHiddenSize() {
        return innerHiddenSize;
    }

    public boolean positionEncoding2d() {
        return positionEncoding2d;
    }

    /** ChatGLM-6B: {@code max_sequence_length}. */
    public int maxSequenceLength() {
        return maxSequenceLength;
    }

    /** ChatGLM-6B: {@code <sop>}, the token that ends the bidirectional context. */
    public long bosTokenId() {
        return bosTokenId;
    }

    public long maskTokenId() {
        return maskTokenId;
    }

    public long gmaskTokenId() {
        return gmaskTokenId;
    }

    /** ChatGLM2/3: width of one SwiGLU half ({@code dense_h_to_4h} has twice as many outputs). */
    public int ffnHiddenSize() {
        return ffnHiddenSize;
    }

    public int kvChannels() {
        return kvChannels;
    }

    /** ChatGLM2/3: rows of the rotary table; positions must stay below it. */
    public int seqLength() {
        return seqLength;
    }

    public boolean multiQueryAttention() {
        return multiQueryAttention;
    }

    public int multiQueryGroupNum() {
        return multiQueryGroupNum;
    }

    public boolean rmsnorm() {
        return rmsnorm;
    }

    public boolean addBiasLinear() {
        return addBiasLinear;
    }

    public boolean addQkvBias() {
        return addQkvBias;
    }

    public boolean applyResidualConnectionPostLayernorm() {
        return applyResidualConnectionPostLayernorm;
    }

    public boolean postLayerNorm() {
        return postLayerNorm;
    }

    public boolean originalRope() {
        return originalRope;
    }

    /** ChatGLM3 long-context variants: the rotary base is {@code 10000 * rope_ratio}. */
    public double ropeRatio() {
        return ropeRatio;
    }

    public boolean applyQueryKeyLayerScaling() {
        return applyQueryKeyLayerScaling;
    }

    public boolean attentionSoftmaxInFp32() {
        return attentionSoftmaxInFp32;
    }

    public boolean tieWordEmbeddings() {
        return tieWordEmbeddings;
    }

    /** Channels of one attention head. */
    public int headDim() {
        return version == Version.CHATGLM2 ? kvChannels : hiddenSize / numAttentionHeads;
    }

    /** Key/value heads kept in the cache: the multi-query groups of ChatGLM2/3, else every head. */
    public int kvHeads() {
        return version == Version.CHATGLM2 && multiQueryAttention ? multiQueryGroupNum : numAttentionHeads;
    }

    /**
     * Bytes one layer's KV cache holds for {@code positions} positions of a batch of {@code batch}: keys and values,
     * {@code kvHeads x headDim} each, in {@code dtype}. This is exactly what {@link KvCache} allocates, so plans
     * and memory reports use the same figure. ChatGLM3-6B, fp16, 8192 positions: {@code 2 x 2 x 128 x 2 x 8192} =
     * 8 MiB per layer (224 MiB for 28 layers); ChatGLM-6B: 16 KiB per position per layer (448 KiB for 28).
     *
     * <pre>{@code
     * long perLayer = config.kvCacheBytesPerLayer(8192, 1, DType.FLOAT16);
     * }</pre>
     *
     * @throws IllegalArgumentException for a negative count or a dtype with no byte size
     */
    public long kvCacheBytesPerLayer(long positions, long batch, DType dtype) {
        if (positions < 0 || batch < 0) {
            throw new IllegalArgumentException("positions and batch must be >= 0: positions=" + positions
                    + ", batch=" + batch);
        }
        if (dtype == null || !dtype.isFloatingPoint()) {
            throw new IllegalArgumentException("The KV cache is held in a floating-point dtype, not " + dtype);
        }
        return dtype.bytesFor(2L * positions * batch * kvHeads() * headDim());
    }

    /** Outputs of {@code query_key_value}. */
    public long qkvOutFeatures() {
        long q = (long) numAttentionHeads * headDim();
        return version == Version.CHATGLM2 ? q + 2L * kvHeads() * headDim() : 3 * q;
    }

    /** Largest number of positions the model supports (its rotary table for ChatGLM2/3). */
    public int maxPositions() {
        return version == Version.CHATGLM2 ? seqLength : maxSequenceLength;
    }

    @Override
    public String toString() {
        return "ChatGLMConfig(" + version + ", layers=" + numLayers + ", hidden=" + hiddenSize + ", heads="
                + numAttentionHeads + ", kvHeads=" + kvHeads() + ", vocab=" + vocabSize + ", dtype="
                + torchDtype.torchName() + ")";
    }
}
