package io.github.bigmodel.chatglm.model;

import io.github.bigmodel.chatglm.ChatGLMConfig;
import io.github.bigmodel.chatglm.tokenizer.ChatGLM3Tokenizer;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Parameter;
import io.github.bigmodel.safetensors.SafetensorsWriter;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;

/**
 * Writes a tiny ChatGLM3 model folder ({@code config.json}, {@code tokenizer.model}, {@code model.safetensors})
 * whose greedy reply is a chosen script: for testing what sits on top of a model (a server, a tool loop, an
 * adapter) through the real tokenizer, model and generation code, where real weights are not at hand and random
 * ones never call a tool.
 *
 * <p>How the weights make the script: the tokenizer is a byte-fallback BPE model whose user-defined pieces are
 * the script's pieces, so each piece is one token. One block: its attention has zero queries and keys, so every
 * position attends uniformly to all positions before it, and its values copy "this token is trigger r" into a
 * flag dimension, which is then positive exactly when trigger r occurs in the context. Its MLP (SwiGLU) turns
 * "last token is {@code <|assistant|>}" AND "flag r" into a rule dimension. The embedding is one-hot for the
 * script's tokens (zero for every other token), and the output layer maps each piece to its successor in its
 * script, {@code <|assistant|>} to the first piece of the default reply, and each rule dimension to the first
 * piece of its reply (an earlier rule suppresses later ones). The last piece is followed by the rule's stop token,
 * or by itself for a looping reply (which then runs until the token budget).
 *
 * <p>A piece must have one successor across all scripts (checked); replies are given as pieces, or as text cut
 * before each space. Triggers are found by the tokenizer, which matches the longest piece first: a reply piece
 * such as {@code " a"} swallows the start of a trigger {@code "apple"} written after a space, so tests put
 * triggers where no piece overlaps them. Sampling leaves the script now and then (each piece wins by a logit
 * margin of about the square root of the hidden size); greedy decoding follows it exactly.
 *
 * <pre>{@code
 * ScriptedCheckpoint.builder()
 *         .reply("Hello from a scripted model.")
 *         .toolCallWhen("Answer the following questions as best as you can. You have access to the following tools:",
 *                 "get_weather", "tool_call(city='Beijing')")
 *         .replyWhen("<|observation|>", "It is sunny in Beijing.")
 *         .write(Path.of("/tmp/scripted"));
 * try (ChatGLM glm = ChatGLM.load(Path.of("/tmp/scripted"))) { ... }
 * }</pre>
 */
public final class ScriptedCheckpoint {

    /** What the flag dimension is multiplied by before the gate: flags are small averages over long contexts. */
    private static final float FLAG_GAIN = 1000f;
    /** How strongly an earlier rule's dimension suppresses a later rule's first piece. */
    private static final float SUPPRESS = -100f;
    private static final List<String> SPECIALS = List.of("[MASK]", "[gMASK]", "[sMASK]", "sop", "eop",
            "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>");
    private static final Set<String> STOPS = Set.of("</s>", "<|user|>", "<|observation|>");
    private static final String SPACE = "\u2581";

    /**
     * One scripted reply.
     *
     * @param trigger the token whose presence in the context selects this reply, null for the default reply
     * @param pieces  the reply's tokens, in text form
     * @param stop    the stop token after the last piece ({@code <|user|>}, {@code <|observation|>} or {@code </s>})
     * @param loop    whether the last piece repeats until the token budget instead of stopping
     */
    public record Rule(String trigger, List<String> pieces, String stop, boolean loop) {
        public Rule {
            pieces = List.copyOf(pieces);
            if (pieces.isEmpty()) {
                throw new IllegalArgumentException("a scripted reply needs at least one piece");
            }
            if (!STOPS.contains(stop)) {
                throw new IllegalArgumentException("stop must be one of " + STOPS + ", got " + stop);
            }
        }
    }

    private ScriptedCheckpoint() {
    }

    public static Builder builder() {
        return new Builder();
    }

    /** The pieces of {@code text} cut before each space: {@code "It is sunny"} gives {@code It, " is", " sunny"}. */
    public static List<String> words(String text) {
        List<String> out = new ArrayList<>();
        int start = 0;
        for (int i = 1; i <= text.length(); i++) {
            if (i == text.length() || text.charAt(i) == ' ') {
                if (i > start) {
                    out.add(text.substring(start, i));
                }
                start = i;
            }
        }
        return out;
    }

    /** Builder of a scripted model folder. */
    public static final class Builder {
        private Rule fallback;
        private final List<Rule> rules = new ArrayList<>();
        private int seqLength = 2048;

        private Builder() {
        }

        /** The reply when no rule's trigger is in the context ({@link #words} of {@code text}, then {@code <|user|>}). */
        public Builder reply(String text) {
            fallback = new Rule(null, words(text), "<|user|>", false);
            return this;
        }

        /** The reply when {@code trigger} (a special token such as {@code <|observation|>}, or any piece) occurs. */
        public Builder replyWhen(String trigger, String text) {
            return rule(new Rule(trigger, words(text), "<|user|>", false));
        }

        /**
         * A ChatGLM3 tool call when {@code trigger} occurs: the tool's name on the first line, then the call in a
         * python code block, then {@code <|observation|>}, as THUDM's model writes it.
         *
         * @param call the call's text, e.g. {@code tool_call(city='Beijing')}
         */
        public Builder toolCallWhen(String trigger, String tool, String call) {
            return rule(new Rule(trigger, List.of(tool + "\n", "```python\n", call, "\n```"), "<|observation|>",
                    false));
        }

        /** {@code first}, then {@code repeated} over and over until the token budget runs out, when {@code trigger} occurs. */
        public Builder loopWhen(String trigger, String first, String repeated) {
            return rule(new Rule(trigger, List.of(first, repeated), "<|user|>", true));
        }

        /** A rule; earlier rules win over later ones when several triggers occur. */
        public Builder rule(Rule rule) {
            if (rule.trigger() == null) {
                throw new IllegalArgumentException("a rule needs a trigger; use reply() for the default");
            }
            rules.add(rule);
            return this;
        }

        /** The model's positions (default 2048). */
        public Builder seqLength(int seqLength) {
            if (seqLength < 16) {
                throw new IllegalArgumentException("seqLength must be >= 16, got " + seqLength);
            }
            this.seqLength = seqLength;
            return this;
        }

        /**
         * Writes the folder (created if needed) and returns it.
         *
         * @throws IllegalArgumentException when no default reply is set or a piece would need two successors
         */
        public Path write(Path folder) {
            if (fallback == null) {
                throw new IllegalArgumentException("set the default reply with reply(text)");
            }
            try {
                Files.createDirectories(folder);
                return new Writer(fallback, rules, seqLength).write(folder);
            } catch (IOException e) {
                throw new UncheckedIOException("Cannot write the scripted model to " + folder, e);
            }
        }
    }

    private static final class Writer {
        private final Rule fallback;
        private final List<Rule> rules;
        private final int seqLength;

        Writer(Rule fallback, List<Rule> rules, int seqLength) {
            this.fallback = fallback;
            this.rules = List.copyOf(rules);
            this.seqLength = seqLength;
        }

        Path write(Path folder) throws IOException {
            // 1. Vocabulary: every piece and every trigger that is not a special token.
            Set<String> userPieces = new LinkedHashSet<>();
            List<Rule> all = new ArrayList<>(rules);
            all.add(0, fallback);
            for (Rule r : all) {
                userPieces.addAll(r.pieces());
                if (r.trigger() != null && !SPECIALS.contains(r.trigger())) {
                    userPieces.add(r.trigger());
                }
            }
            for (Rule r : all) {
                for (String p : r.pieces()) {
                    if (SPECIALS.contains(p) || STOPS.contains(p)) {
                        throw new IllegalArgumentException("a reply piece cannot be the special token " + p);
                    }
                }
            }
            for (Rule r : rules) {
                for (Rule other : all) {
                    if (other.pieces().contains(r.trigger())) {
                        throw new IllegalArgumentException("trigger '" + r.trigger() + "' is also a reply piece");
                    }
                }
            }
            Path tokenizerFile = folder.resolve("tokenizer.model");
            Files.write(tokenizerFile, sentencePieceModel(new ArrayList<>(userPieces)));
            ChatGLM3Tokenizer tok = ChatGLM3Tokenizer.load(tokenizerFile);

            // 2. Transitions: piece id -> next id; each piece must have one successor.
            Map<Integer, Integer> next = new LinkedHashMap<>();
            for (Rule r : all) {
                List<Integer> ids = new ArrayList<>();
                for (String p : r.pieces()) {
                    ids.add(id(tok, p));
                }
                for (int i = 0; i < ids.size(); i++) {
                    int succ = i + 1 < ids.size() ? ids.get(i + 1) : r.loop() ? ids.get(i) : id(tok, r.stop());
                    Integer before = next.putIfAbsent(ids.get(i), succ);
                    if (before != null && before != succ) {
                        throw new IllegalArgumentException("piece '" + r.pieces().get(i) + "' would need two "
                                + "successors; cut the replies differently");
                    }
                }
            }
            Set<Integer> firsts = new LinkedHashSet<>();
            for (Rule r : all) {
                if (!firsts.add(id(tok, r.pieces().get(0)))) {
                    throw new IllegalArgumentException("two replies start with '" + r.pieces().get(0) + "'");
                }
            }

            // 3. Dimensions: one per state token, then one flag and one rule dimension per rule.
            int assistant = tok.command("<|assistant|>");
            Map<Integer, Integer> dim = new LinkedHashMap<>();
            dim.put(assistant, 0);
            for (int id : next.keySet()) {
                dim.putIfAbsent(id, dim.size());
            }
            for (Rule r : rules) {
                dim.putIfAbsent(id(tok, r.trigger()), dim.size());
            }
            int states = dim.size();
            int n = rules.size();
            int hidden = roundUp(Math.max(states + 2 * n, 32), 32);
            int headDim = hidden / 2;
            int ffn = Math.max(n, 1);
            int vocab = roundUp(tok.vocabSize(), 64);
            String config = String.format(Locale.ROOT, "{\"_name_or_path\": \"bigmodel-scripted-chatglm3\", "
                    + "\"model_type\": \"chatglm\", \"architectures\": [\"ChatGLMModel\"], \"num_layers\": 1, "
                    + "\"hidden_size\": %d, \"ffn_hidden_size\": %d, \"kv_channels\": %d, "
                    + "\"num_attention_heads\": 2, \"multi_query_attention\": true, \"multi_query_group_num\": 1, "
                    + "\"padded_vocab_size\": %d, \"seq_length\": %d, \"layernorm_epsilon\": 1e-05, "
                    + "\"rmsnorm\": true, \"add_bias_linear\": false, \"add_qkv_bias\": true, "
                    + "\"apply_residual_connection_post_layernorm\": false, \"post_layer_norm\": true, "
                    + "\"original_rope\": true, \"torch_dtype\": \"float32\", \"eos_token_id\": %d, "
                    + "\"pad_token_id\": %d}", hidden, ffn, headDim, vocab, seqLength, tok.eosTokenId(),
                    tok.padTokenId());
            Files.writeString(folder.resolve("config.json"), config, StandardCharsets.UTF_8);
            ChatGLMConfig cfg = ChatGLMConfig.fromJson(folder.resolve("config.json"));

            // 4. Weights, named and shaped as the model's state dict.
            ChatGLMLanguageModel meta = ChatGLMLanguageModel.create(cfg, DType.FLOAT32);
            Map<String, Parameter> stateDict = meta.stateDict();
            List<SafetensorsWriter.Entry> entries = new ArrayList<>();
            stateDict.forEach((name, p) -> entries.add(SafetensorsWriter.Entry.of(name, DType.FLOAT32, p.shape())));
            try (SafetensorsWriter w = SafetensorsWriter.create(folder.resolve("model.safetensors"), entries,
                    Map.of("format", "pt"))) {
                for (SafetensorsWriter.Entry e : entries) {
                    long[] shape = e.shape();
                    int rows = shape.length == 0 ? 1 : (int) shape[0];
                    int cols = shape.length < 2 ? 1 : (int) shape[1];
                    float[] v = new float[rows * cols];
                    String name = e.name();
                    if (name.endsWith("layernorm.weight")) {
                        java.util.Arrays.fill(v, 1f);
                    } else if (name.endsWith("word_embeddings.weight")) {
                        dim.forEach((id, d) -> v[id * cols + d] = 1f);
                    } else if (name.endsWith("query_key_value.weight")) {
                        // Values: slot r of the (single) value head reads "this token is trigger r".
                        int valueRow = hidden + headDim;
                        for (int r = 0; r < n; r++) {
                            v[(valueRow + r) * cols + dim.get(id(tok, rules.get(r).trigger()))] = 1f;
                        }
                    } else if (name.endsWith("self_attention.dense.weight")) {
                        for (int r = 0; r < n; r++) {
                            v[(states + r) * cols + r] = 1f; // head 0's slot r -> flag dimension r
                        }
                    } else if (name.endsWith("dense_h_to_4h.weight")) {
                        for (int r = 0; r < n; r++) {
                            v[r * cols + states + r] = FLAG_GAIN; // silu(gain * flag r) ...
                            v[(ffn + r) * cols + 0] = 1f;         // ... times "this is <|assistant|>"
                        }
                    } else if (name.endsWith("dense_4h_to_h.weight")) {
                        for (int r = 0; r < n; r++) {
                            v[(states + n + r) * cols + r] = 1f;
                        }
                    } else if (name.endsWith("output_layer.weight")) {
                        for (Map.Entry<Integer, Integer> t : next.entrySet()) {
                            v[t.getValue() * cols + dim.get(t.getKey())] = 1f;
                        }
                        v[id(tok, fallback.pieces().get(0)) * cols + 0] = 1f;
                        for (int r = 0; r < n; r++) {
                            int first = id(tok, rules.get(r).pieces().get(0));
                            v[first * cols + states + n + r] = 1f;
                            for (int q = 0; q < r; q++) {
                                v[first * cols + states + n + q] = SUPPRESS;
                            }
                        }
                    } else if (name.endsWith("inv_freq")) {
                        int rot = 2 * v.length;
                        for (int i = 0; i < v.length; i++) {
                            v[i] = (float) (1.0 / Math.pow(10000, (2.0 * i) / rot));
                        }
                    }
                    // Everything else (queries, keys, biases) stays zero.
                    ByteBuffer bytes = ByteBuffer.allocate(v.length * 4).order(ByteOrder.LITTLE_ENDIAN);
                    bytes.asFloatBuffer().put(v);
                    w.write(name, bytes);
                }
            }
            return folder;
        }

        private static int id(ChatGLM3Tokenizer tok, String token) {
            if (SPECIALS.contains(token)) {
                return tok.command(token);
            }
            if (token.equals("</s>")) {
                return tok.eosTokenId();
            }
            int id = tok.sentencePiece().model().pieceToId(token.replace(" ", SPACE));
            if (id == tok.sentencePiece().model().trainerSpec().unkId()) {
                throw new IllegalStateException("piece '" + token + "' is not in the written vocabulary");
            }
            return id;
        }

        private static int roundUp(int x, int m) {
            return (x + m - 1) / m * m;
        }
    }

    /**
     * A SentencePiece {@code ModelProto}: {@code <unk> <s> </s>}, the 256 byte pieces, then {@code pieces} as
     * user-defined pieces (spaces written as U+2581); BPE with byte fallback and the identity normaliser.
     */
    static byte[] sentencePieceModel(List<String> pieces) {
        Proto model = new Proto();
        model.piece("<unk>", 2);
        model.piece("<s>", 3);
        model.piece("</s>", 3);
        for (int b = 0; b < 256; b++) {
            model.piece(String.format(Locale.ROOT, "<0x%02X>", b), 6);
        }
        for (String p : pieces) {
            model.piece(p.replace(" ", SPACE), 4);
        }
        Proto trainer = new Proto();
        trainer.varint(3, 2); // model_type BPE
        trainer.varint(4, 3 + 256 + pieces.size());
        trainer.varint(35, 1); // byte_fallback
        Proto normalizer = new Proto();
        normalizer.bytes(1, "identity".getBytes(StandardCharsets.UTF_8));
        normalizer.varint(3, 0); // add_dummy_prefix
        normalizer.varint(4, 0); // remove_extra_whitespaces
        normalizer.varint(5, 1); // escape_whitespaces
        model.bytes(2, trainer.out.toByteArray());
        model.bytes(3, normalizer.out.toByteArray());
        return model.out.toByteArray();
    }

    /** Just enough of the protobuf wire format for a SentencePiece model. */
    private static final class Proto {
        final ByteArrayOutputStream out = new ByteArrayOutputStream();

        void piece(String text, int type) {
            Proto p = new Proto();
            p.bytes(1, text.getBytes(StandardCharsets.UTF_8));
            p.tag(2, 5);
            int bits = Float.floatToIntBits(0f);
            for (int i = 0; i < 4; i++) {
                p.out.write(bits >>> (8 * i));
            }
            p.varint(3, type);
            bytes(1, p.out.toByteArray());
        }

        void varint(int field, long value) {
            tag(field, 0);
            raw(value);
        }

        void bytes(int field, byte[] data) {
            tag(field, 2);
            raw(data.length);
            out.writeBytes(data);
        }

        void tag(int field, int wireType) {
            raw(((long) field << 3) | wireType);
        }

        void raw(long v) {
            while ((v & ~0x7FL) != 0) {
                out.write((int) ((v & 0x7F) | 0x80));
                v >>>= 7;
            }
            out.write((int) v);
        }
    }
}
