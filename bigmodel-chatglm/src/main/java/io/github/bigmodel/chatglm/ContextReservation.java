package io.github.bigmodel.chatglm;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.dispatch.MemoryReservation;

/**
 * What a ChatGLM model needs beside its weights to generate up to a context length: the {@link MemoryReservation}
 * that makes a device map leave room for it.
 *
 * <ul>
 *   <li><b>KV cache</b>, per block ({@code transformer.encoder.layers.N} for ChatGLM2/3, {@code transformer.layers.N}
 *   for ChatGLM-6B): {@link ChatGLMConfig#kvCacheBytesPerLayer} for {@code context} positions and {@code batch}
 *   rows, in the model's float dtype (the cache stays float when block weights are int8/int4). The planner counts
 *   a block's cache on the device the block executes on: its GPU, or the main device when the block is offloaded
 *   to cpu/disk, because {@link ChatGLMLanguageModel#newCache} allocates each layer's buffers where the layer runs.
 *   ChatGLM3-6B in fp16 (2 multi-query groups x 128 channels, keys and values): 2 x 2 x 128 x 2 bytes = 1 KiB per
 *   position and layer, 28 KiB per position for 28 layers, 224 MiB at 8192; ChatGLM-6B (all 32 heads cached):
 *   16 KiB per position and layer, 448 KiB per position.</li>
 *   <li><b>Workspace</b> of one decoding step (one new token per row attending over the whole context), see
 *   {@link #workspaceBytes}. A forward keeps all its temporaries until it returns (one pointer scope per forward),
 *   so the estimate counts every layer's; prefilling a long prompt in one forward needs more (attention scores
 *   grow with the prompt length squared): pass the prompt length as {@code stepTokens} to size it.</li>
 * </ul>
 *
 * <pre>{@code
 * ChatGLMConfig config = ChatGLMConfig.preset("chatglm3-6b");
 * MemoryReservation r = ContextReservation.of(config, 8192, 1, DType.FLOAT16);
 * r.totalModuleBytes();   // 234881024 (224 MiB)
 * DevicePlan plan = DeviceMapPlanner.plan(ChatGLMLanguageModel.create(config), Strategy.AUTO,
 *         MaxMemory.parse("0=10GiB,cpu=64GiB"),
 *         PlanOptions.builder().noSplit("GLMBlock").dtype(DType.FLOAT16).reservation(r).build());
 * }</pre>
 */
public final class ContextReservation {

    /** Bytes of a float32 element: scores are softmaxed and logits returned in float32. */
    private static final long F32 = 4;

    private ContextReservation() {
    }

    /**
     * The reservation for generating up to {@code context} positions (prompt and reply) for {@code batch} rows,
     * with the KV cache and activations in {@code dtype} (the model's float dtype).
     *
     * @throws IllegalArgumentException when context or batch is not positive, the context exceeds the model's
     *     {@link ChatGLMConfig#maxPositions()}, or the dtype is not floating point
     */
    public static MemoryReservation of(ChatGLMConfig config, long context, long batch, DType dtype) {
        validate(config, context, batch);
        long perLayer = config.kvCacheBytesPerLayer(context, batch, dtype);
        MemoryReservation.Builder b = MemoryReservation.builder("KV cache for " + context + " positions x batch "
                + batch + " in " + dtype.torchName());
        String prefix = blockPrefix(config);
        for (int i = 0; i < config.numLayers(); i++) {
            b.module(prefix + "." + i, perLayer);
        }
        return b.workspace(workspaceBytes(config, context, batch, dtype, 1)).build();
    }

    /** {@link #of(ChatGLMConfig, long, long, DType)} for a model (on meta or loaded), in its float dtype. */
    public static MemoryReservation of(ChatGLMLanguageModel model, long context, long batch) {
        return of(model.config(), context, batch, model.dtype());
    }

    /**
     * Checks a context length and batch size against the model.
     *
     * @throws IllegalArgumentException naming the bad value and the allowed range
     */
    public static void validate(ChatGLMConfig config, long context, long batch) {
        if (context <= 0) {
            throw new IllegalArgumentException("The context length must be positive, got " + context);
        }
        if (batch <= 0) {
            throw new IllegalArgumentException("The batch size must be positive, got " + batch);
        }
        if (context > config.maxPositions()) {
            throw new IllegalArgumentException("The context length " + context + " exceeds the model's maximum of "
                    + config.maxPositions() + " positions");
        }
    }

    /** The module path holding the blocks: {@code transformer.encoder.layers} or {@code transformer.layers}. */
    public static String blockPrefix(ChatGLMConfig config) {
        return config.version() == ChatGLMConfig.Version.CHATGLM2 ? "transformer.encoder.layers"
                : "transformer.layers";
    }

    /**
     * An estimate of the temporaries of one forward of {@code stepTokens} new tokens per row over a context of
     * {@code context} positions, {@code e} bytes per element of {@code dtype}, B = batch, T = stepTokens:
     * <pre>
     * per layer:  B*T*(8*hidden + qkv_out + mlp) * e          (norm outputs, q/k/v, attention output, residuals,
     *                                                           the MLP's up projection and activation)
     *           + B*heads*T*context * (3*e + 2*4)             (scores, scaled, in float32, softmax, back to e)
     * whole step: layers * per layer
     *           + B*T*hidden*e + B*vocab*(e + 4)              (embedding output; last-position logits, float32)
     * </pre>
     * where {@code mlp} is {@code 2*ffn + 2*ffn} for ChatGLM2/3's SwiGLU (up projection of width {@code 2*ffn},
     * gate and product of width {@code ffn}) and {@code 3*inner} for ChatGLM-6B's GELU MLP. Every layer counts
     * because a forward releases its temporaries only when it returns.
     *
     * <pre>{@code
     * long decode = ContextReservation.workspaceBytes(config, 8192, 1, DType.FLOAT16, 1);
     * long prefill = ContextReservation.workspaceBytes(config, 8192, 1, DType.FLOAT16, 8192);
     * }</pre>
     */
    public static long workspaceBytes(ChatGLMConfig config, long context, long batch, DType dtype, long stepTokens) {
        if (stepTokens <= 0 || stepTokens > context) {
            throw new IllegalArgumentException("Step tokens must be in 1.." + context + ", got " + stepTokens);
        }
        if (dtype == null || !dtype.isFloatingPoint()) {
            throw new IllegalArgumentException("Activations are held in a floating-point dtype, not " + dtype);
        }
        long e = dtype.bytesFor(1);
        long hidden = config.hiddenSize();
        long mlp = config.version() == ChatGLMConfig.Version.CHATGLM2 ? 4L * config.ffnHiddenSize()
                : 3L * config.innerHiddenSize();
        long rows = Math.multiplyExact(batch, stepTokens);
        long activations = Math.multiplyExact(rows, (8 * hidden + config.qkvOutFeatures() + mlp) * e);
        long scores = Math.multiplyExact(Math.multiplyExact(rows * config.numAttentionHeads(), context),
                3 * e + 2 * F32);
        long perLayer = Math.addExact(activations, scores);
        long head = rows * hidden * e + batch * config.vocabSize() * (e + F32);
        return Math.addExact(Math.multiplyExact(perLayer, config.numLayers()), head);
    }
}
