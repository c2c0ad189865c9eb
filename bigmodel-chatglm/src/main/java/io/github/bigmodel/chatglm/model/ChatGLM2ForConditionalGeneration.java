package io.github.bigmodel.chatglm.model;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.ForwardScope;
import io.github.bigmodel.core.Linear;
import io.github.bigmodel.core.Module;
import io.github.bigmodel.core.ModuleList;
import io.github.bigmodel.core.Parameter;
import io.github.bigmodel.core.Tensors;
import io.github.bigmodel.core.kernel.DecoderStep;
import io.github.bigmodel.core.kernel.NativeKernels;
import io.github.bigmodel.core.kernel.NativeKernels.Format;
import io.github.bigmodel.core.kernel.NativeOps;
import io.github.bigmodel.core.quant.Precision;
import io.github.bigmodel.core.quant.QuantizedLinear;
import java.util.Arrays;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.ScalarTypeOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import io.github.bigmodel.chatglm.ChatGLMConfig;
import io.github.bigmodel.chatglm.generation.GenerationRequest;
import io.github.bigmodel.chatglm.internal.Ops;

/**
 * ChatGLM2-6B / ChatGLM3-6B ({@code ChatGLMForConditionalGeneration} of their official modeling): RMSNorm
 * pre-norm blocks, multi-query attention with the qkv layout {@code [queries | keys | values]}, interleaved rotary
 * on the first half of every head, SwiGLU MLP, a separate {@code transformer.output_layer}.
 *
 * <p>State-dict names: {@code transformer.embedding.word_embeddings.weight},
 * {@code transformer.rotary_pos_emb.inv_freq}, {@code transformer.encoder.layers.N.*},
 * {@code transformer.encoder.final_layernorm.weight}, {@code transformer.output_layer.weight}.
 *
 * <pre>{@code
 * ChatGLMLanguageModel m = ChatGLMLanguageModel.create(ChatGLMConfig.preset("chatglm3-6b"));
 * m.module("transformer.encoder.layers.0").className();   // "GLMBlock"
 * }</pre>
 */
// PointerScope blocks are used for what they release on close, not referenced by name.
@SuppressWarnings("try")
public final class ChatGLM2ForConditionalGeneration extends ChatGLMLanguageModel {

    private static final String INV_FREQ = "transformer.rotary_pos_emb.inv_freq";

    private final Transformer transformer;
    private Tensor ropeCos;
    private Tensor ropeSin;

    ChatGLM2ForConditionalGeneration(ChatGLMConfig config, DType dtype) {
        super(config, dtype);
        if (config.version() != ChatGLMConfig.Version.CHATGLM2) {
            throw new IllegalArgumentException("Not a ChatGLM2/3 config: " + config);
        }
        this.transformer = registerModule("transformer", new Transformer(config, dtype));
    }

    @Override
    public boolean isComputedBuffer(String name) {
        return INV_FREQ.equals(name);
    }

    private static final PartNames PARTS = new PartNames("transformer.encoder.layers.", "transformer.embedding.",
            "transformer.encoder.final_layernorm.", "transformer.output_layer.");

    @Override
    protected Module block(int layer) {
        return transformer.encoder.layers.get(layer);
    }

    @Override
    protected PartNames partNames() {
        return PARTS;
    }

    @Override
    protected Module embeddingModule() {
        return transformer.embedding;
    }

    @Override
    protected Module outputModule() {
        return transformer.outputLayer;
    }

    /**
     * Computes the rotary table as the official code does: theta in float32 over the rotated half of a head, base
     * {@code 10000 * rope_ratio}, {@code seq_length} positions, cos/sin cast to the model dtype when it is half.
     */
    @Override
    protected void initComputedBuffers() {
        ChatGLMConfig c = config();
        Parameter invFreqSlot = tensor(INV_FREQ);
        Device device = stageDevice();
        ScalarType type = dtype().scalarType();
        long rotDim = c.headDim() / 2;
        try (PointerScope scope = new PointerScope()) {
            Tensor steps = torch.arange(new Scalar(0), new Scalar(rotDim), new Scalar(2),
                    Tensors.options(DType.FLOAT32, Device.CPU));
            Tensor theta = torch.reciprocal(torch.pow(new Scalar(10000.0 * c.ropeRatio()),
                    steps.div(new Scalar((double) rotDim))));
            Tensor positions = torch.arange(new Scalar(c.seqLength()), Tensors.options(DType.FLOAT32, Device.CPU));
            Tensor angles = torch.outer(positions, theta);
            Tensor cos = torch.cos(angles);
            Tensor sin = torch.sin(angles);
            if (type == ScalarType.Half || type == ScalarType.BFloat16) {
                // The official table is rounded to the half dtype before use.
                cos = cos.to(type);
                sin = sin.to(type);
            }
            Tensor newCos = Ops.to(cos, device, cos.scalar_type()).contiguous();
            Tensor newSin = Ops.to(sin, device, sin.scalar_type()).contiguous();
            Tensor invFreq = Ops.to(theta, device, type).contiguous();
            newCos.retainReference();
            newSin.retainReference();
            invFreq.retainReference();
            if (ropeCos != null) {
                ropeCos.close();
                ropeSin.close();
            }
            ropeCos = newCos;
            ropeSin = newSin;
            invFreqSlot.set(invFreq);
        }
    }

    @Override
    protected void releaseComputedBuffers() {
        if (ropeCos != null) {
            ropeCos.close();
            ropeSin.close();
            ropeCos = null;
            ropeSin = null;
        }
    }

    @Override
    long computedBufferBytes() {
        return ropeCos == null ? 0 : ropeCos.nbytes() + ropeSin.nbytes();
    }

    @Override
    protected Tensor[] stepInputs(ForwardInput in, long past) {
        ChatGLMConfig c = config();
        if (ropeCos == null) {
            throw new IllegalStateException("Weights are not loaded: call loadWeights first");
        }
        int batch = in.batchSize();
        int len = in.length();
        Device device = stageDevice();
        Tensor positions;
        if (in.positionIds() != null) {
            requireShape("ChatGLM2/3 positionIds", in.positionIds(), batch, len);
            positions = Ops.to(in.positionIds(), device, ScalarType.Long);
        } else {
            positions = torch.arange(new Scalar(len), Tensors.options(DType.INT64, device)).unsqueeze(0)
                    .expand(batch, len);
        }
        long[] posValues = Ops.longs(positions);
        for (long p : posValues) {
            if (p < 0 || p >= c.seqLength()) {
                throw new IllegalArgumentException("Position id " + p + " is outside [0, seq_length="
                        + c.seqLength() + ")");
            }
        }
        return new Tensor[] {positions, attentionMask(in, batch, len, past, device)};
    }

    @Override
    protected Tensor embed(long[][] inputIds) {
        Device device = runsOn(transformer.embedding);
        Tensor ids = Ops.to(Ops.longTensor(Ops.flatten(inputIds), inputIds.length, inputIds[0].length), device,
                ScalarType.Long);
        // [B, L, H] -> [L, B, H], the official sequence-first layout (only the contiguous copy stays).
        return ChatGLMLanguageModel.inOwnScope(() -> transformer.embedding.forward(ids).transpose(0, 1).contiguous());
    }

    @Override
    protected Tensor runBlocks(PipelineStep step, Tensor hiddenIn, int from, int to, KvCache cache) {
        if (from == to) {
            return hiddenIn;
        }
        if (ropeCos == null) {
            throw new IllegalStateException("Weights are not loaded: call loadWeights first");
        }
        int batch = step.batch();
        int len = step.length();
        Device device = stageDevice();
        // cos/sin for every (position, row): [L, B, 1, rot/2].
        Tensor flatPos = Ops.to(step.positions(), device, ScalarType.Long).reshape(-1);
        long half = ropeCos.size(1);
        // Contiguous once per step: row (position, batch row) r of a projection's output takes row r of these.
        Tensor cos = ropeCos.index_select(0, flatPos).view(batch, len, 1, half).transpose(0, 1).contiguous();
        Tensor sin = ropeSin.index_select(0, flatPos).view(batch, len, 1, half).transpose(0, 1).contiguous();
        Tensor mask = step.mask() == null ? null : Ops.to(step.mask(), device, ScalarType.Bool);
        ModuleList<Block> layers = transformer.encoder.layers;
        long[] rows = chunkRows(batch, len, step.past() + len);
        // Each block in a scope of its own: its temporaries, and the previous block's output, are freed as it ends.
        return PromptChunks.chainBlocks(hiddenIn, to - from,
                (i, blockIn) -> layers.get(from + i).forward(blockIn, cos, sin, mask, cache, from + i, rows));
    }

    @Override
    protected Tensor head(Tensor hiddenIn, boolean lastOnly) {
        Tensor hidden = hiddenIn;
        if (lastOnly) {
            // The final norm is per position: normalizing the last one alone gives the same numbers.
            hidden = hidden.narrow(0, hidden.size(0) - 1, 1);
        }
        if (transformer.encoder.finalLayernorm != null) {
            hidden = transformer.encoder.finalLayernorm.forward(hidden);
        }
        Linear out = transformer.outputLayer;
        // By the execution device, not the weight: an offloaded head has no values until its hook runs.
        hidden = Ops.to(hidden, runsOn(out), hidden.scalar_type());
        Tensor logits = out.forward(hidden).transpose(0, 1);
        return logits.to(ScalarType.Float).contiguous();
    }

    /**
     * The boolean mask (true = masked) handed to the layers, or null when the layers need none or build the
     * plain causal one, following the official {@code get_masks}: built when a padding mask has a pad, or when
     * several tokens arrive on top of a cache. Pad query rows of a first call are left fully unmasked, as there.
     */
    private static Tensor attentionMask(ForwardInput in, int batch, int len, long past, Device device) {
        if (in.attentionMask() != null) {
            requireShape("attentionMask", in.attentionMask(), batch, 1, len, past + len);
            return Ops.to(in.attentionMask(), device, ScalarType.Bool);
        }
        Tensor padding = null;
        if (in.paddingMask() != null) {
            requireShape("paddingMask", in.paddingMask(), batch, past + len);
            boolean hasPad = false;
            for (long keep : Ops.longs(in.paddingMask())) {
                hasPad |= keep == 0;
            }
            if (hasPad) {
                padding = Ops.to(in.paddingMask(), device, ScalarType.Float);
            }
        }
        if (padding == null && !(past > 0 && len != 1)) {
            return null;
        }
        Tensor keep = padding;
        return ChatGLMLanguageModel.inOwnScope(() -> {
            // The official float mask in booleans: a key is visible when causal (every cached position, then the
            // lower triangle) and not padding; on a first call, pad query rows see everything (their row of the
            // official mask is shifted up by one). Booleans: B x L x K bytes instead of several float copies.
            Tensor keys = torch.arange(new Scalar(past + len), Tensors.options(DType.INT64, device)).view(1, 1, -1);
            Tensor queries = torch.arange(new Scalar(past), new Scalar(past + len),
                    Tensors.options(DType.INT64, device)).view(1, -1, 1);
            Tensor visible = keys.le(queries);
            if (keep != null) {
                Tensor keyKept = keep.gt(new Scalar(0.5));
                visible = visible.logical_and(keyKept.unsqueeze(1));
                if (past == 0) {
                    visible = visible.logical_or(keyKept.logical_not().unsqueeze(2));
                }
            }
            return visible.logical_not().expand(batch, len, past + len).contiguous().unsqueeze(1);
        });
    }

    /** The {@code [B, 1, L, past+L]} mask (true = masked) the official model builds: for the reference test. */
    static Tensor officialMask(Tensor paddingMask, int length, long past) {
        long[][] dummy = new long[(int) paddingMask.size(0)][length];
        ForwardInput in = ForwardInput.builder(dummy).paddingMask(paddingMask).build();
        Tensor mask;
        try (PointerScope scope = new PointerScope()) {
            mask = attentionMask(in, dummy.length, length, past, Tensors.deviceOf(paddingMask));
            if (mask == null) {
                Tensor causal = torch.ones(new long[] {dummy.length, 1, length, length},
                        Tensors.options(DType.BOOL, Tensors.deviceOf(paddingMask))).tril().logical_not();
                mask = causal;
            }
            mask.retainReference();
        }
        return mask;
    }

    @Override
    public Decoding startDecoding(GenerationRequest request) {
        return new Glm2Decoding(request);
    }

    /** Mirrors ChatGLM2/3's prepare_inputs_for_generation / _update_model_kwargs_for_generation. */
    private static final class Glm2Decoding extends Decoding {
        private final GenerationRequest request;
        private final long[] lastPosition;
        private long[][] padding;
        private Tensor positions;
        private Tensor paddingTensor;

        Glm2Decoding(GenerationRequest request) {
            this.request = request;
            long[][] prompt = request.promptIds();
            this.lastPosition = new long[prompt.length];
            if (request.positionIds() != null) {
                long[][] p = Ops.rows(request.positionIds());
                for (int i = 0; i < p.length; i++) {
                    lastPosition[i] = p[i][p[i].length - 1];
                }
            } else {
                Arrays.fill(lastPosition, prompt[0].length - 1L);
            }
            this.padding = request.paddingMask() == null ? null : Ops.rows(request.paddingMask());
        }

        @Override
        public ForwardInput first(KvCache cache) {
            ForwardInput.Builder b = ForwardInput.builder(request.promptIds()).cache(cache).lastLogitOnly(true);
            if (request.positionIds() != null) {
                b.positionIds(request.positionIds());
            } else {
                int len = request.promptIds()[0].length;
                long[] flat = new long[request.promptIds().length * len];
                for (int i = 0; i < flat.length; i++) {
                    flat[i] = i % len;
                }
                positions = owned(flat, request.promptIds().length, len);
                b.positionIds(positions);
            }
            if (request.paddingMask() != null) {
                b.paddingMask(request.paddingMask());
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
            long[] pos = new long[batch];
            for (int i = 0; i < batch; i++) {
                ids[i][0] = tokens[i];
                lastPosition[i]++;
                pos[i] = lastPosition[i];
            }
            release();
            positions = owned(pos, batch, 1);
            ForwardInput.Builder b = ForwardInput.builder(ids).cache(cache).positionIds(positions).lastLogitOnly(true);
            if (padding != null) {
                long[][] grown = new long[batch][];
                for (int i = 0; i < batch; i++) {
                    grown[i] = Arrays.copyOf(padding[i], padding[i].length + 1);
                    grown[i][padding[i].length] = 1;
                }
                padding = grown;
                paddingTensor = owned(Ops.flatten(padding), batch, padding[0].length);
                b.paddingMask(paddingTensor);
            }
            return b.build();
        }

        private void release() {
            if (positions != null) {
                positions.close();
                positions = null;
            }
            if (paddingTensor != null) {
                paddingTensor.close();
                paddingTensor = null;
            }
        }

        @Override
        public void close() {
            release();
        }
    }

    // ---- modules, named and nested as in the official modeling ----

    static final class Transformer extends Module {
        final Embedding embedding;
        final Module rotaryPosEmb;
        final Encoder encoder;
        final Linear outputLayer;

        Transformer(ChatGLMConfig c, DType dtype) {
            super("ChatGLMModel");
            this.embedding = registerModule("embedding", new Embedding(c, dtype));
            this.rotaryPosEmb = registerModule("rotary_pos_emb", new Module("RotaryEmbedding"));
            rotaryPosEmb.registerBuffer("inv_freq", Parameter.empty(dtype, c.headDim() / 4), true);
            this.encoder = registerModule("encoder", new Encoder(c, dtype));
            this.outputLayer = registerModule("output_layer", new Linear(c.hiddenSize(), c.vocabSize(), false, dtype));
        }
    }

    static final class Embedding extends Module {
        final WordEmbedding wordEmbeddings;

        Embedding(ChatGLMConfig c, DType dtype) {
            super("Embedding");
            this.wordEmbeddings = registerModule("word_embeddings",
                    new WordEmbedding(c.vocabSize(), c.hiddenSize(), dtype));
        }

        /** The device-map entry is this container: its hook scope wraps the lookup. */
        Tensor forward(Tensor ids) {
            try (ForwardScope f = enterForward()) {
                return f.output(wordEmbeddings.forward(f.input(ids)));
            }
        }
    }

    static final class Encoder extends Module {
        final ModuleList<Block> layers;
        final Norm finalLayernorm;

        Encoder(ChatGLMConfig c, DType dtype) {
            super("GLMTransformer");
            this.layers = registerModule("layers", new ModuleList<>());
            for (int i = 0; i < c.numLayers(); i++) {
                layers.add(new Block(c, i + 1, dtype));
            }
            this.finalLayernorm = c.postLayerNorm()
                    ? registerModule("final_layernorm",
                            new Norm(c.rmsnorm(), c.hiddenSize(), c.layernormEpsilon(), dtype))
                    : null;
        }
    }

    /** One transformer layer; reports {@code GLMBlock}, the no-split class of device maps. */
    static final class Block extends Module {
        final Norm inputLayernorm;
        final SelfAttention selfAttention;
        final Norm postAttentionLayernorm;
        final Mlp mlp;
        private final boolean residualFromNorm;
        /** The modules inside the block, whose hooks (if any) the fused step would skip. */
        private final Module[] inside;
        private DecoderStep.Shape shape;

        Block(ChatGLMConfig c, int layerNumber, DType dtype) {
            super(BLOCK_CLASS);
            this.inputLayernorm = registerModule("input_layernorm",
                    new Norm(c.rmsnorm(), c.hiddenSize(), c.layernormEpsilon(), dtype));
            this.selfAttention = registerModule("self_attention", new SelfAttention(c, layerNumber, dtype));
            this.postAttentionLayernorm = registerModule("post_attention_layernorm",
                    new Norm(c.rmsnorm(), c.hiddenSize(), c.layernormEpsilon(), dtype));
            this.mlp = registerModule("mlp", new Mlp(c, dtype));
            this.residualFromNorm = c.applyResidualConnectionPostLayernorm();
            this.inside = new Module[] {inputLayernorm, selfAttention, selfAttention.queryKeyValue,
                selfAttention.dense, postAttentionLayernorm, mlp, mlp.denseHTo4h, mlp.dense4hToH};
        }

        /**
         * @param rows query rows per attention chunk and positions per output chunk
         *             ({@link ChatGLMLanguageModel#chunkRows}); a step within one chunk runs unchunked
         */
        Tensor forward(Tensor hidden, Tensor cos, Tensor sin, Tensor mask, KvCache cache, int layerIndex,
                long[] rows) {
            // Hooks (device alignment, offloaded weights) act on whole blocks: the device map's no-split unit.
            try (ForwardScope f = enterForward()) {
                // Devices come from where modules run, never from weights that a hook may not have brought in yet.
                Tensor x = Ops.onDevice(f.input(hidden), inputLayernorm.executionDevice());
                Tensor fused = fusedStep(x, cos, sin, mask, cache, layerIndex);
                if (fused != null) {
                    return f.output(fused);
                }
                // RMSNorm works in float32: over a whole long prompt its temporaries alone would be several
                // float32 copies of the hidden states (about 120 MiB at 2048 tokens of ChatGLM3-6B), so it runs
                // in the same position chunks as the MLP.
                Tensor normed = PromptChunks.byRows(x.size(0), rows[1], 0,
                        (start, n) -> inputLayernorm.forward(x.narrow(0, start, n)));
                Tensor context = selfAttention.context(normed, cos, sin, mask, cache, layerIndex, rows);
                Tensor residual = residualFromNorm ? normed : x;
                // Everything after the attention is per position: a long prompt runs it a chunk of positions at a
                // time, so the MLP's activations never exist for the whole prompt at once.
                Tensor out = PromptChunks.byRows(x.size(0), rows[1], 0, (start, n) -> {
                    Tensor h = residual.narrow(0, start, n).add(selfAttention.dense.forward(context.narrow(0, start, n)));
                    Tensor normed2 = postAttentionLayernorm.forward(h);
                    Tensor mlpOut = mlp.forward(normed2);
                    return (residualFromNorm ? normed2 : h).add(mlpOut);
                });
                return f.output(out);
            }
        }

        /**
         * The block in one native call ({@link DecoderStep}) for one position of one sequence on the CPU, when each
         * of its parts would run natively op by op (the same arithmetic, bit for bit) and no hook sits inside the
         * block (hooks act on the block as a whole, the device map's unit); else null, and the op-by-op form runs.
         */
        private Tensor fusedStep(Tensor x, Tensor cos, Tensor sin, Tensor mask, KvCache cache, int layerIndex) {
            if (mask != null || cache == null || !DecoderStep.available() || x.numel() != x.size(-1)
                    || !inputLayernorm.isRms() || !postAttentionLayernorm.isRms() || !NativeOps.supports(x)
                    || !NativeOps.supports(cos) || !x.is_contiguous() || hookInside()) {
                return null;
            }
            Tensor norm1 = inputLayernorm.weight().data();
            Tensor norm2 = postAttentionLayernorm.weight().data();
            Tensor keys = cache.keyBuffer(layerIndex);
            Tensor values = cache.valueBuffer(layerIndex);
            if (!NativeOps.supports(norm1) || !NativeOps.supports(norm2) || !Tensors.sameType(keys, x)
                    || !Tensors.sameType(values, x)) {
                return null;
            }
            int type = x.scalar_type().value;
            DecoderStep.Projection qkv = projection(selfAttention.queryKeyValue, type);
            DecoderStep.Projection dense = projection(selfAttention.dense, type);
            DecoderStep.Projection up = projection(mlp.denseHTo4h, type);
            DecoderStep.Projection down = projection(mlp.dense4hToH, type);
            if (qkv == null || dense == null || up == null || down == null) {
                return null;
            }
            if (shape == null) {
                shape = new DecoderStep.Shape(selfAttention.heads, selfAttention.groups, selfAttention.headDim,
                        inputLayernorm.eps(), selfAttention.preScale(), selfAttention.postScale(), residualFromNorm);
            }
            return DecoderStep.run(x, norm1, qkv, cos, sin, keys, values, cache.length(), dense, norm2, up, down,
                    shape);
        }

        private boolean hookInside() {
            for (Module m : inside) {
                if (!m.forwardHooks().isEmpty()) {
                    return true;
                }
            }
            return false;
        }

        /** What the native kernels read for {@code layer} at one row of activations, or null where they do not. */
        private static DecoderStep.Projection projection(Linear layer, int activationType) {
            if (!layer.weight().isMaterialized()) {
                return null;
            }
            Tensor w = layer.weight().data();
            Tensor bias = layer.bias() == null ? null : layer.bias().data();
            if (layer instanceof QuantizedLinear q && q.isQuantized()) {
                Tensor scales = q.nativeKernelScales();
                Format format = q.precision() == Precision.INT4 ? Format.INT4 : Format.INT8;
                return scales == null ? null : new DecoderStep.Projection(format, w, scales, bias);
            }
            Format format = NativeKernels.floatFormat(w, activationType, 1);
            return format == null ? null : new DecoderStep.Projection(format, w, null, bias);
        }
    }

    static final class SelfAttention extends Module {
        final Linear queryKeyValue;
        final Linear dense;
        private final int heads;
        private final int groups;
        private final int headDim;
        private final int layerNumber;
        private final boolean layerScaling;

        SelfAttention(ChatGLMConfig c, int layerNumber, DType dtype) {
            super("SelfAttention");
            this.heads = c.numAttentionHeads();
            this.groups = c.kvHeads();
            this.headDim = c.headDim();
            this.layerNumber = Math.max(1, layerNumber);
            this.layerScaling = c.applyQueryKeyLayerScaling();
            this.queryKeyValue = registerModule("query_key_value", new QuantizedLinear(c.hiddenSize(), c.qkvOutFeatures(),
                    c.addBiasLinear() || c.addQkvBias(), dtype));
            this.dense = registerModule("dense", new QuantizedLinear((long) heads * headDim, c.hiddenSize(),
                    c.addBiasLinear(), dtype));
        }

        /** The scores' scale before rounding to the dtype: {@code 1 / (sqrt(headDim) * coeff)}, as the official code. */
        double preScale() {
            return 1.0 / (Math.sqrt(headDim) * (layerScaling ? layerNumber : 1.0));
        }

        /** The float32 factor after it: the layer-scaling coefficient back, or 1. */
        double postScale() {
            return layerScaling ? layerNumber : 1.0;
        }

        /**
         * The attention context {@code [L, B, heads * headDim]} before the dense projection; the new keys and
         * values go into the cache. Query rows run in chunks of {@code rows[0]} against every key, rotary in
         * chunks of {@code rows[1]} positions; the temporaries are freed on return.
         */
        Tensor context(Tensor x, Tensor cosIn, Tensor sinIn, Tensor maskIn, KvCache cache, int layerIndex,
                long[] rows) {
            return ChatGLMLanguageModel.inOwnScope(() -> contextInScope(x, cosIn, sinIn, maskIn, cache, layerIndex,
                    rows));
        }

        private Tensor contextInScope(Tensor x, Tensor cosIn, Tensor sinIn, Tensor maskIn, KvCache cache,
                int layerIndex, long[] rows) {
            long len = x.size(0);
            long batch = x.size(1);
            Device device = queryKeyValue.executionDevice();
            Tensor cos = Ops.onDevice(cosIn, device);
            Tensor sin = Ops.onDevice(sinIn, device);
            // On the CPU the rotary runs natively, in place on the projection's output (queries and keys are its
            // first heads + groups heads), the single-position attention too: a few calls instead of some fifty.
            boolean nativeOps = NativeOps.available() && device.isCpu();
            long qWidth = (long) heads * headDim;
            Tensor[] qkv = PromptChunks.inOwnScope(() -> {
                Tensor all = queryKeyValue.forward(x);
                boolean inPlace = nativeOps && NativeOps.supports(all) && NativeOps.supports(cos);
                if (inPlace) {
                    all = all.contiguous();
                    NativeOps.rotaryInPlace(all, heads + groups, headDim, cos, sin);
                }
                long kvWidth = (long) groups * headDim;
                Tensor raw = all.narrow(2, 0, qWidth).reshape(len, batch, heads, headDim);
                Tensor k = all.narrow(2, qWidth, kvWidth).reshape(len, batch, groups, headDim);
                Tensor v = all.narrow(2, qWidth + kvWidth, kvWidth).reshape(len, batch, groups, headDim);
                Tensor q = inPlace ? raw : PromptChunks.byRows(len, rows[1], 0, (start, n) -> NativeOps.rotaryOps(
                        raw.narrow(0, start, n), cos.narrow(0, start, n), sin.narrow(0, start, n)));
                if (!inPlace) {
                    k = NativeOps.rotaryOps(k, cos, sin);
                }
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
            Tensor k = qkv[1];
            Tensor v = qkv[2];
            long keyLen = k.size(0);
            long perGroup = heads / groups;
            Tensor kg = k.permute(1, 2, 3, 0);
            Tensor vg = v.permute(1, 2, 0, 3);
            if (rows[0] < len) {
                // One contiguous copy for all chunks, instead of one per chunk inside matmul.
                kg = kg.contiguous();
                vg = vg.contiguous();
            }
            Tensor keys = kg;
            Tensor values = vg;
            Tensor mask = maskIn == null ? null : Ops.onDevice(maskIn, device);
            boolean causal = mask == null && len == keyLen;
            double coeff = layerScaling ? layerNumber : 1.0;
            if (nativeOps && len == 1 && NativeOps.supports(q) && k.is_contiguous() && v.is_contiguous()
                    && Tensors.sameType(q, k) && Tensors.sameType(k, v)) {
                // One position (a decode step): the same arithmetic in one call, keys read once per group.
                Tensor rowMask = mask == null ? null : mask.reshape(batch, keyLen);
                return NativeOps.attendOne(q.view(batch, -1), k, v, heads, groups, rowMask, preScale(), postScale())
                        .view(1, batch, -1);
            }
            return PromptChunks.byRows(len, rows[0], 0, (start, n) -> {
                // Query heads of one group are contiguous: score all of them against the group's keys at once.
                Tensor qg = q.narrow(0, start, n).permute(1, 2, 0, 3).reshape(batch, groups, perGroup * n, headDim);
                Tensor scores = Ops.matmul(qg, keys).view(batch, heads, n, keyLen);
                scores.mul_(new Scalar(1.0 / (Math.sqrt(headDim) * coeff)));
                if (!Tensors.hasType(scores, ScalarType.Float)) {
                    scores = scores.to(ScalarType.Float);
                }
                if (layerScaling) {
                    scores.mul_(new Scalar(coeff));
                }
                Tensor rowMask;
                if (causal) {
                    // Row i (absolute start + i) sees keys 0..start+i.
                    rowMask = torch.ones(new long[] {n, keyLen}, Tensors.options(DType.BOOL, device)).triu(start + 1);
                } else {
                    rowMask = mask == null ? null : mask.narrow(2, start, n);
                }
                if (rowMask != null) {
                    scores.masked_fill_(rowMask, new Scalar(Double.NEGATIVE_INFINITY));
                }
                Tensor probs = scores.softmax(-1, new ScalarTypeOptional());
                if (!Tensors.sameType(probs, values)) {
                    probs = probs.to(values.scalar_type());
                }
                return Ops.matmul(probs.view(batch, groups, perGroup * n, keyLen), values)
                        .view(batch, heads, n, headDim).permute(2, 0, 1, 3).reshape(n, batch, (long) heads * headDim);
            });
        }
    }

    static final class Mlp extends Module {
        final Linear denseHTo4h;
        final Linear dense4hToH;
        private final long ffn;

        Mlp(ChatGLMConfig c, DType dtype) {
            super("MLP");
            this.ffn = c.ffnHiddenSize();
            this.denseHTo4h = registerModule("dense_h_to_4h",
                    new QuantizedLinear(c.hiddenSize(), 2L * ffn, c.addBiasLinear(), dtype));
            this.dense4hToH = registerModule("dense_4h_to_h",
                    new QuantizedLinear(ffn, c.hiddenSize(), c.addBiasLinear(), dtype));
        }

        Tensor forward(Tensor x) {
            Tensor up = denseHTo4h.forward(x);
            Tensor gated = NativeOps.available() && NativeOps.supports(up) ? NativeOps.swiglu(up)
                    : torch.silu(up.narrow(-1, 0, ffn)).mul(up.narrow(-1, ffn, ffn));
            return dense4hToH.forward(gated);
        }
    }
}
