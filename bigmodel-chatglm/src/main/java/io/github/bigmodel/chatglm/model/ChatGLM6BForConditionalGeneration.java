package io.github.bigmodel.chatglm.model;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.ForwardScope;
import io.github.bigmodel.core.Linear;
import io.github.bigmodel.core.Module;
import io.github.bigmodel.core.ModuleList;
import io.github.bigmodel.core.Parameter;
import io.github.bigmodel.core.Tensors;
import io.github.bigmodel.core.quant.QuantizedLinear;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.ScalarTypeOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import io.github.bigmodel.chatglm.ChatGLMConfig;
import io.github.bigmodel.chatglm.generation.GenerationRequest;
import io.github.bigmodel.chatglm.internal.Ops;

/**
 * ChatGLM-6B (v1, {@code ChatGLMForConditionalGeneration} of its official modeling): LayerNorm blocks whose
 * residuals re-add the normalized input scaled by {@code sqrt(2 * 28)} (the official block's default
 * {@code num_layers}, never overridden by the model), a per-head qkv layout
 * {@code [q_h | k_h | v_h]}, 2D rotary (GPT-NeoX halves: positions on the first half of each head, block
 * positions on the second) with {@code inv_freq} rounded to float16, scores masked with -10000, a tanh-GELU MLP
 * and an {@code lm_head} tied to {@code transformer.word_embeddings}.
 *
 * <p>Position ids and the bidirectional-prefix mask of a first call are built from the ids as the official
 * {@code get_position_ids} / {@code get_masks} do ({@link #positionIds}, {@link #prefixMask}).
 *
 * <pre>{@code
 * ChatGLMLanguageModel m = ChatGLMLanguageModel.create(ChatGLMConfig.preset("chatglm-6b"));
 * m.tiedParameters();   // [[transformer.word_embeddings.weight, lm_head.weight]]
 * }</pre>
 */
// PointerScope blocks are used for what they release on close, not referenced by name.
@SuppressWarnings("try")
public final class ChatGLM6BForConditionalGeneration extends ChatGLMLanguageModel {

    /** The {@code num_layers} default of the official GLMBlock, which decides its residual scale. */
    static final int GLM_BLOCK_DEFAULT_LAYERS = 28;

    private final Transformer transformer;
    private final TiedHead lmHead;
    /** The cos/sin table; replaced (never modified) when it grows, so a forward pass reads one consistent pair. */
    private volatile RopeTable rope;
    /**
     * Tables replaced by a larger one, kept alive because a forward pass on another thread may still read them
     * (at most the sum of a doubling series: less than the current table's size again).
     */
    private final java.util.List<RopeTable> retiredRope = new java.util.ArrayList<>();

    private record RopeTable(Tensor cos, Tensor sin) {
        long positions() {
            return cos.size(0);
        }
    }

    ChatGLM6BForConditionalGeneration(ChatGLMConfig config, DType dtype) {
        super(config, dtype);
        if (config.version() != ChatGLMConfig.Version.CHATGLM_6B) {
            throw new IllegalArgumentException("Not a ChatGLM-6B config: " + config);
        }
        this.transformer = registerModule("transformer", new Transformer(config, dtype));
        this.lmHead = registerModule("lm_head", new TiedHead(config.hiddenSize(), config.vocabSize(), dtype));
        tie("lm_head.weight", "transformer.word_embeddings.weight");
    }

    @Override
    public boolean isComputedBuffer(String name) {
        return name.endsWith(".attention.rotary_emb.inv_freq");
    }

    private static final PartNames PARTS = new PartNames("transformer.layers.", "transformer.word_embeddings.",
            "transformer.final_layernorm.", "lm_head.");

    @Override
    protected Module block(int layer) {
        return transformer.layers.get(layer);
    }

    @Override
    protected PartNames partNames() {
        return PARTS;
    }

    @Override
    protected Module embeddingModule() {
        return transformer.wordEmbeddings;
    }

    @Override
    protected Module outputModule() {
        return lmHead;
    }

    /** inv_freq computed in float32 and rounded to float16, as the official constructor does. */
    private static Tensor invFreq(int rotaryDim) {
        Tensor steps = torch.arange(new Scalar(0), new Scalar(rotaryDim), new Scalar(2),
                Tensors.options(DType.FLOAT32, Device.CPU));
        Tensor inv = torch.reciprocal(torch.pow(new Scalar(10000.0), steps.div(new Scalar((double) rotaryDim))));
        return inv.to(ScalarType.Half).to(ScalarType.Float);
    }

    @Override
    protected void initComputedBuffers() {
        int rotaryDim = config().headDim() / 2;
        try (PointerScope scope = new PointerScope()) {
            Tensor inv = invFreq(rotaryDim);
            StageSpan span = stage();
            for (int i = span.firstLayer(); i < span.endLayer(); i++) {
                Block block = transformer.layers.get(i);
                Parameter slot = block.attention.rotaryEmb.buffers().get("inv_freq");
                Device device = runsOn(block);
                Tensor t = Ops.to(inv, device, dtype().scalarType()).contiguous();
                t.retainReference();
                slot.set(t);
            }
        }
        ensureRopeTable(config().maxSequenceLength());
    }

    @Override
    protected synchronized void releaseComputedBuffers() {
        RopeTable current = rope;
        rope = null;
        if (current != null) {
            retiredRope.add(current);
        }
        for (RopeTable t : retiredRope) {
            t.cos().close();
            t.sin().close();
        }
        retiredRope.clear();
    }

    @Override
    synchronized long computedBufferBytes() {
        RopeTable current = rope;
        long bytes = current == null ? 0 : current.cos().nbytes() + current.sin().nbytes();
        for (RopeTable t : retiredRope) {
            bytes += t.cos().nbytes() + t.sin().nbytes();
        }
        return bytes;
    }

    /**
     * A cos/sin table covering positions {@code [0, positions)}; it grows past max_sequence_length on demand.
     * The common case (the table is large enough) reads the volatile field without a lock, so concurrent
     * sessions do not serialize on every forward; growing is synchronized.
     */
    private RopeTable ensureRopeTable(long positions) {
        RopeTable current = rope;
        return current != null && current.positions() >= positions ? current : growRopeTable(positions);
    }

    private synchronized RopeTable growRopeTable(long positions) {
        RopeTable current = rope;
        if (current != null && current.positions() >= positions) {
            return current;
        }
        long size = current == null ? positions : Math.max(positions, 2 * current.positions());
        Device device = stageDevice();
        ScalarType type = dtype().scalarType();
        try (PointerScope scope = new PointerScope()) {
            Tensor inv = invFreq(config().headDim() / 2);
            Tensor t = torch.arange(new Scalar(size), Tensors.options(DType.FLOAT32, Device.CPU));
            Tensor freqs = torch.outer(t, inv);
            Tensor emb = torch.cat(new TensorVector(freqs, freqs), 1);
            Tensor cos = torch.cos(emb);
            Tensor sin = torch.sin(emb);
            if (type == ScalarType.Half || type == ScalarType.BFloat16) {
                cos = cos.to(type);
                sin = sin.to(type);
            }
            Tensor newCos = Ops.to(cos, device, cos.scalar_type()).contiguous();
            Tensor newSin = Ops.to(sin, device, sin.scalar_type()).contiguous();
            newCos.retainReference();
            newSin.retainReference();
            if (current != null) {
                retiredRope.add(current);
            }
            RopeTable grown = new RopeTable(newCos, newSin);
            rope = grown;
            return grown;
        }
    }

    /**
     * The {@code [B, 2, L]} position ids the official {@code get_position_ids} builds: context length c = index of
     * the first {@code <sop>} (bos); mask position m = first {@code [gMASK]}, else first {@code [MASK]}; row 0 is
     * {@code 0..c-1} then m, row 1 is 0 over the context then 1, 2, 3, ...
     *
     * @throws IllegalArgumentException when a row has no bos or no mask token
     */
    public static Tensor positionIds(long[][] ids, ChatGLMConfig config) {
        int batch = ids.length;
        int len = ids[0].length;
        long[] flat = new long[batch * 2 * len];
        for (int b = 0; b < batch; b++) {
            int c = contextLength(ids[b], config, b);
            int m = indexOf(ids[b], config.gmaskTokenId());
            if (m < 0) {
                m = indexOf(ids[b], config.maskTokenId());
            }
            if (m < 0) {
                throw new IllegalArgumentException("Row " + b + " has neither [gMASK] (" + config.gmaskTokenId()
                        + ") nor [MASK] (" + config.maskTokenId() + "): ChatGLM-6B needs one to place positions");
            }
            for (int i = 0; i < len; i++) {
                flat[(b * 2) * len + i] = i < c ? i : m;
                flat[(b * 2 + 1) * len + i] = i < c ? 0 : i - c + 1;
            }
        }
        return Ops.longTensor(flat, batch, 2, len);
    }

    /**
     * The {@code [B, 1, L, L]} boolean mask (true = masked) of the official {@code get_masks}: every token sees
     * the whole context (up to the first bos), causal from bos on.
     */
    public static Tensor prefixMask(long[][] ids, ChatGLMConfig config) {
        int batch = ids.length;
        int len = ids[0].length;
        long[] contexts = new long[batch];
        for (int b = 0; b < batch; b++) {
            contexts[b] = contextLength(ids[b], config, b);
        }
        // Built from comparisons of position ranges: B x L x L booleans, never an L x L array of longs.
        return ChatGLMLanguageModel.inOwnScope(() -> {
            Tensor pos = torch.arange(new Scalar(len), Tensors.options(DType.INT64, Device.CPU));
            Tensor causal = pos.view(1, -1).le(pos.view(-1, 1));
            Tensor inContext = pos.view(1, 1, -1).lt(Ops.longTensor(contexts, batch, 1, 1));
            return causal.unsqueeze(0).logical_or(inContext).logical_not().unsqueeze(1).contiguous();
        });
    }

    private static int contextLength(long[] row, ChatGLMConfig config, int b) {
        int c = indexOf(row, config.bosTokenId());
        if (c < 0) {
            throw new IllegalArgumentException("Row " + b + " has no <sop> (bos_token_id " + config.bosTokenId()
                    + "): ChatGLM-6B prompts end with [gMASK] <sop>");
        }
        return c;
    }

    private static int indexOf(long[] row, long id) {
        for (int i = 0; i < row.length; i++) {
            if (row[i] == id) {
                return i;
            }
        }
        return -1;
    }

    @Override
    protected Tensor[] stepInputs(ForwardInput in, long past) {
        if (rope == null) {
            throw new IllegalStateException("Weights are not loaded: call loadWeights first");
        }
        ChatGLMConfig c = config();
        int batch = in.batchSize();
        int len = in.length();
        Device device = stageDevice();
        Tensor positions;
        if (in.positionIds() != null) {
            requireShape("ChatGLM-6B positionIds", in.positionIds(), batch, 2, len);
            positions = in.positionIds();
        } else if (past == 0) {
            positions = positionIds(in.inputIds(), c);
        } else {
            throw new IllegalArgumentException("ChatGLM-6B needs positionIds [B, 2, L] for a call on top of a cache");
        }
        for (long p : Ops.longs(positions)) {
            if (p < 0) {
                throw new IllegalArgumentException("Negative position id " + p);
            }
        }
        Tensor mask;
        if (in.attentionMask() != null) {
            requireShape("ChatGLM-6B attentionMask", in.attentionMask(), batch, 1, len, past + len);
            mask = Ops.to(in.attentionMask(), device, ScalarType.Bool);
        } else if (past == 0) {
            mask = Ops.to(prefixMask(in.inputIds(), c), device, ScalarType.Bool);
        } else {
            mask = null;
        }
        return new Tensor[] {Ops.to(positions, device, ScalarType.Long), mask};
    }

    @Override
    protected Tensor embed(long[][] inputIds) {
        Device device = runsOn(transformer.wordEmbeddings);
        Tensor ids = Ops.to(Ops.longTensor(Ops.flatten(inputIds), inputIds.length, inputIds[0].length), device,
                ScalarType.Long);
        return transformer.wordEmbeddings.forward(ids).transpose(0, 1);
    }

    @Override
    protected Tensor runBlocks(PipelineStep step, Tensor hiddenIn, int from, int to, KvCache cache) {
        if (from == to) {
            return hiddenIn;
        }
        if (rope == null) {
            throw new IllegalStateException("Weights are not loaded: call loadWeights first");
        }
        int batch = step.batch();
        int len = step.length();
        long maxPosition = 0;
        for (long p : Ops.longs(step.positions())) {
            maxPosition = Math.max(maxPosition, p);
        }
        RopeTable table = ensureRopeTable(maxPosition + 1);
        Tensor positions = Ops.to(step.positions(), stageDevice(), ScalarType.Long);
        long d = table.cos().size(1);
        Tensor[] cosSin = new Tensor[4];
        for (int row = 0; row < 2; row++) {
            Tensor flat = positions.select(1, row).reshape(-1);
            cosSin[2 * row] = table.cos().index_select(0, flat).view(batch, len, 1, d).transpose(0, 1);
            cosSin[2 * row + 1] = table.sin().index_select(0, flat).view(batch, len, 1, d).transpose(0, 1);
        }
        Tensor mask = step.mask() == null ? null : Ops.to(step.mask(), stageDevice(), ScalarType.Bool);
        ModuleList<Block> layers = transformer.layers;
        long[] rows = chunkRows(batch, len, step.past() + len);
        // Each block in a scope of its own: its temporaries, and the previous block's output, are freed as it ends.
        return PromptChunks.chainBlocks(hiddenIn, to - from,
                (i, blockIn) -> layers.get(from + i).forward(blockIn, cosSin, mask, cache, from + i, rows));
    }

    @Override
    protected Tensor head(Tensor hiddenIn, boolean lastOnly) {
        Tensor hidden = hiddenIn;
        if (lastOnly) {
            // The final norm is per position: normalizing the last one alone gives the same numbers.
            hidden = hidden.narrow(0, hidden.size(0) - 1, 1);
        }
        hidden = transformer.finalLayernorm.forward(hidden);
        Tensor logits = lmHead.forward(hidden).transpose(0, 1);
        return logits.to(ScalarType.Float).contiguous();
    }

    @Override
    public Decoding startDecoding(GenerationRequest request) {
        return new Glm1Decoding(request, config());
    }

    /** Mirrors ChatGLM-6B's prepare_inputs_for_generation / _update_model_kwargs_for_generation. */
    private static final class Glm1Decoding extends Decoding {
        private final GenerationRequest request;
        private final long[][] lastPosition;
        private Tensor maskRow;
        private Tensor stepPositions;

        Glm1Decoding(GenerationRequest request, ChatGLMConfig config) {
            this.request = request;
            long[][] prompt = request.promptIds();
            int batch = prompt.length;
            int len = prompt[0].length;
            long[] flat;
            if (request.positionIds() != null) {
                requireShape("ChatGLM-6B positionIds", request.positionIds(), batch, 2, len);
                flat = Ops.longs(request.positionIds());
            } else {
                try (Tensor built = positionIds(prompt, config)) {
                    flat = Ops.longs(built);
                }
            }
            this.lastPosition = new long[batch][2];
            for (int b = 0; b < batch; b++) {
                lastPosition[b][0] = flat[(b * 2) * len + len - 1];
                lastPosition[b][1] = flat[(b * 2 + 1) * len + len - 1];
            }
            if (request.attentionMask() != null) {
                requireShape("ChatGLM-6B attentionMask", request.attentionMask(), batch, 1, len, len);
                try (PointerScope scope = new PointerScope()) {
                    maskRow = request.attentionMask().narrow(2, len - 1, 1).to(ScalarType.Bool).clone();
                    maskRow.retainReference();
                }
            }
        }

        @Override
        public ForwardInput first(KvCache cache) {
            ForwardInput.Builder b = ForwardInput.builder(request.promptIds()).cache(cache).lastLogitOnly(true);
            if (request.positionIds() != null) {
                b.positionIds(request.positionIds());
            }
            if (request.attentionMask() != null) {
                b.attentionMask(request.attentionMask());
            }
            return b.build();
        }

        @Override
        public ForwardInput next(long[] tokens, KvCache cache) {
            int batch = tokens.length;
            long[][] ids = new long[batch][1];
            long[] pos = new long[batch * 2];
            for (int i = 0; i < batch; i++) {
                ids[i][0] = tokens[i];
                lastPosition[i][1]++;
                pos[2 * i] = lastPosition[i][0];
                pos[2 * i + 1] = lastPosition[i][1];
            }
            release();
            stepPositions = owned(pos, batch, 2, 1);
            ForwardInput.Builder b = ForwardInput.builder(ids).cache(cache).positionIds(stepPositions)
                    .lastLogitOnly(true);
            if (maskRow != null) {
                // The new token sees what the previous one saw, plus itself.
                try (PointerScope scope = new PointerScope()) {
                    Tensor visible = torch.zeros(new long[] {batch, 1, 1, 1},
                            Tensors.options(DType.BOOL, Tensors.deviceOf(maskRow)));
                    Tensor grown = torch.cat(new TensorVector(maskRow, visible), 3);
                    grown.retainReference();
                    maskRow.close();
                    maskRow = grown;
                }
                b.attentionMask(maskRow);
            }
            return b.build();
        }

        private void release() {
            if (stepPositions != null) {
                stepPositions.close();
                stepPositions = null;
            }
        }

        @Override
        public void close() {
            release();
            if (maskRow != null) {
                maskRow.close();
                maskRow = null;
            }
        }
    }

    // ---- modules, named and nested as in the official modeling ----

    static final class Transformer extends Module {
        final WordEmbedding wordEmbeddings;
        final ModuleList<Block> layers;
        final Norm finalLayernorm;

        Transformer(ChatGLMConfig c, DType dtype) {
            super("ChatGLMModel");
            this.wordEmbeddings = registerModule("word_embeddings",
                    new WordEmbedding(c.vocabSize(), c.hiddenSize(), dtype));
            this.layers = registerModule("layers", new ModuleList<>());
            for (int i = 0; i < c.numLayers(); i++) {
                layers.add(new Block(c, i, dtype));
            }
            this.finalLayernorm = registerModule("final_layernorm",
                    new Norm(false, c.hiddenSize(), c.layernormEpsilon(), dtype));
        }
    }

    /** One transformer layer; reports {@code GLMBlock}, the no-split class of device maps. */
    static final class Block extends Module {
        final Norm inputLayernorm;
        final SelfAttention attention;
        final Norm postAttentionLayernorm;
        final Glu mlp;
        private final double alpha;

        Block(ChatGLMConfig c, int layerId, DType dtype) {
            super(BLOCK_CLASS);
            this.inputLayernorm = registerModule("input_layernorm",
                    new Norm(false, c.hiddenSize(), c.layernormEpsilon(), dtype));
            this.attention = registerModule("attention", new SelfAttention(c, layerId, dtype));
            this.postAttentionLayernorm = registerModule("post_attention_layernorm",
                    new Norm(false, c.hiddenSize(), c.layernormEpsilon(), dtype));
            this.mlp = registerModule("mlp", new Glu(c, dtype));
            // The official ChatGLMModel never passes num_layers to GLMBlock, whose default is 28: the residual
            // scale is sqrt(2 * 28) whatever the config's num_layers.
            this.alpha = Math.sqrt(2.0 * GLM_BLOCK_DEFAULT_LAYERS);
        }

        /**
         * @param rows query rows per attention chunk and positions per output chunk
         *             ({@link ChatGLMLanguageModel#chunkRows}); a step within one chunk runs unchunked
         */
        Tensor forward(Tensor hiddenIn, Tensor[] rope, Tensor mask, KvCache cache, int layerIndex, long[] rows) {
            // Hooks (device alignment, offloaded weights) act on whole blocks: the device map's no-split unit.
            try (ForwardScope f = enterForward()) {
                Tensor hidden = f.input(hiddenIn);
                Tensor normed = inputLayernorm.forward(hidden);
                Tensor context = attention.context(normed, rope, mask, cache, layerIndex, rows);
                // Everything after the attention is per position: a long prompt runs it a chunk of positions at a
                // time, so the MLP's activations never exist for the whole prompt at once.
                Tensor out = PromptChunks.byRows(hidden.size(0), rows[1], 0, (start, n) -> {
                    Tensor h = normed.narrow(0, start, n).mul(new Scalar(alpha))
                            .add(attention.dense.forward(context.narrow(0, start, n)));
                    Tensor normed2 = postAttentionLayernorm.forward(h);
                    Tensor mlpOut = mlp.forward(normed2);
                    return normed2.mul(new Scalar(alpha)).add(mlpOut);
                });
                return f.output(out);
            }
        }
    }

    /**
     * The output projection, reported as PyTorch's {@code Linear}. Its weight is the word embeddings' (tied), so it
     * is looked up by name at each call: tying replaces the slot, not a field.
     */
    static final class TiedHead extends Module {
        TiedHead(long hidden, long vocab, DType dtype) {
            super("Linear");
            registerParameter("weight", Parameter.empty(dtype, vocab, hidden));
        }

        Tensor forward(Tensor x) {
            try (ForwardScope f = enterForward()) {
                Tensor w = parameters().get("weight").data();
                return f.output(Linear.compute(Ops.onDeviceOf(f.input(x), w), w, null));
            }
        }
    }

    static final class SelfAttention extends Module {
        final Module rotaryEmb;
        final Linear queryKeyValue;
        final Linear dense;
        private final int heads;
        private final int headDim;
        private final int layerId;

        SelfAttention(ChatGLMConfig c, int layerId, DType dtype) {
            super("SelfAttention");
            this.heads = c.numAttentionHeads();
            this.headDim = c.headDim();
            this.layerId = layerId;
            this.rotaryEmb = registerModule("rotary_emb", new Module("RotaryEmbedding"));
            rotaryEmb.registerBuffer("inv_freq", Parameter.empty(dtype, headDim / 4), true);
            this.queryKeyValue = registerModule("query_key_value",
                    new QuantizedLinear(c.hiddenSize(), c.qkvOutFeatures(), true, dtype));
            this.dense = registerModule("dense", new QuantizedLinear((long) heads * headDim, c.hiddenSize(), true, dtype));
        }

        /**
         * The attention context {@code [L, B, heads * headDim]} before the dense projection; the new keys and
         * values go into the cache. Query rows run in chunks of {@code rows[0]} against every key, rotary in
         * chunks of {@code rows[1]} positions; the temporaries are freed on return.
         */
        Tensor context(Tensor x, Tensor[] ropeIn, Tensor maskIn, KvCache cache, int layerIndex, long[] rows) {
            return ChatGLMLanguageModel.inOwnScope(() -> contextInScope(x, ropeIn, maskIn, cache, layerIndex, rows));
        }

        private Tensor contextInScope(Tensor x, Tensor[] ropeIn, Tensor maskIn, KvCache cache, int layerIndex,
                long[] rows) {
            long len = x.size(0);
            long batch = x.size(1);
            // The device where the layer runs, not its weight: a hook on the linear releases it after its forward.
            Device device = queryKeyValue.executionDevice();
            Tensor cos = Ops.onDevice(ropeIn[0], device);
            Tensor sin = Ops.onDevice(ropeIn[1], device);
            Tensor blockCos = Ops.onDevice(ropeIn[2], device);
            Tensor blockSin = Ops.onDevice(ropeIn[3], device);
            Tensor[] qkv = PromptChunks.inOwnScope(() -> {
                Tensor all = queryKeyValue.forward(x).view(len, batch, heads, 3L * headDim);
                Tensor q = PromptChunks.byRows(len, rows[1], 0,
                        (start, n) -> rotateHead(all.narrow(0, start, n).narrow(3, 0, headDim), start, n,
                                cos, sin, blockCos, blockSin));
                Tensor k = PromptChunks.byRows(len, rows[1], 0,
                        (start, n) -> rotateHead(all.narrow(0, start, n).narrow(3, headDim, headDim), start, n,
                                cos, sin, blockCos, blockSin));
                Tensor v = all.narrow(3, 2L * headDim, headDim);
                if (cache != null) {
                    Tensor[] kv = cache.write(layerIndex, k, v);
                    k = kv[0];
                    v = kv[1];
                } else if (rows[0] < len) {
                    // Its own copy, so the projection output can go.
                    v = v.contiguous();
                }
                return new Tensor[] {q, k, v};
            });
            Tensor q = qkv[0];
            long keyLen = qkv[1].size(0);
            double coeff = layerId + 1;
            Tensor kt = qkv[1].permute(1, 2, 3, 0);
            Tensor vt = qkv[2].permute(1, 2, 0, 3);
            if (rows[0] < len) {
                // One contiguous copy for all chunks, instead of one per chunk inside matmul.
                kt = kt.contiguous();
                vt = vt.contiguous();
            }
            Tensor keys = kt;
            Tensor values = vt;
            Tensor mask = maskIn == null ? null : Ops.onDevice(maskIn, device);
            return PromptChunks.byRows(len, rows[0], 0, (start, n) -> {
                Tensor qs = q.narrow(0, start, n).div(new Scalar(Math.sqrt(headDim) * coeff)).permute(1, 2, 0, 3);
                Tensor scores = Ops.matmul(qs, keys);
                if (mask != null) {
                    scores.masked_fill_(mask.narrow(2, start, n), new Scalar(-10000.0));
                }
                ScalarType type = scores.scalar_type();
                Tensor scaled = scores.to(ScalarType.Float);
                scaled.mul_(new Scalar(coeff));
                Tensor probs = scaled.softmax(-1, new ScalarTypeOptional());
                if (type.value != ScalarType.Float.value) {
                    probs = probs.to(type);
                }
                return Ops.matmul(probs, values).permute(2, 0, 1, 3).reshape(n, batch, (long) heads * headDim);
            });
        }

        /** Both rotary halves of positions {@code [start, start + n)} of one of q or k. */
        private Tensor rotateHead(Tensor x, long start, long n, Tensor cos, Tensor sin, Tensor blockCos,
                Tensor blockSin) {
            long half = headDim / 2;
            return torch.cat(new TensorVector(
                    rotate(x.narrow(3, 0, half), cos.narrow(0, start, n), sin.narrow(0, start, n)),
                    rotate(x.narrow(3, half, half), blockCos.narrow(0, start, n), blockSin.narrow(0, start, n))), 3);
        }

        /** GPT-NeoX rotary over the whole slice: {@code x cos + rotate_half(x) sin}. */
        private static Tensor rotate(Tensor x, Tensor cos, Tensor sin) {
            long d = x.size(3);
            Tensor rotated = torch.cat(new TensorVector(x.narrow(3, d / 2, d / 2).neg(), x.narrow(3, 0, d / 2)), 3);
            return x.mul(cos).add(rotated.mul(sin));
        }
    }

    static final class Glu extends Module {
        final Linear denseHTo4h;
        final Linear dense4hToH;

        Glu(ChatGLMConfig c, DType dtype) {
            super("GLU");
            this.denseHTo4h = registerModule("dense_h_to_4h",
                    new QuantizedLinear(c.hiddenSize(), c.innerHiddenSize(), true, dtype));
            this.dense4hToH = registerModule("dense_4h_to_h",
                    new QuantizedLinear(c.innerHiddenSize(), c.hiddenSize(), true, dtype));
        }

        Tensor forward(Tensor x) {
            return dense4hToH.forward(Ops.geluTanh(denseHTo4h.forward(x)));
        }
    }
}
