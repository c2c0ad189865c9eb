package io.github.bigmodel.chatglm.model;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.dispatch.plan.MemoryReservation;
import io.github.bigmodel.chatglm.ChatGLMConfig;

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
 *   <li><b>Workspace</b>: the larger of the prompt step (a prompt of {@link #DEFAULT_PROMPT_TOKENS} tokens, or a
 *   length given, in one forward) and one decoding step at the full context, see {@link #workspaceBytes}. Each
 *   block frees its temporaries before the next runs, so this is one block's temporaries plus the hidden states
 *   passed between blocks and the logits.</li>
 * </ul>
 *
 * <pre>{@code
 * ChatGLMConfig config = ChatGLMConfig.preset("chatglm3-6b");
 * MemoryReservation r = ContextReservation.of(config, 8192, 1, DType.FLOAT16);   // prompt step of 512 tokens
 * r.totalModuleBytes();   // 234881024 (224 MiB)
 * DevicePlan plan = DeviceMapPlanner.plan(ChatGLMLanguageModel.create(config), Strategy.AUTO,
 *         MaxMemory.parse("0=10GiB,cpu=64GiB"),
 *         PlanOptions.builder().dtype(DType.FLOAT16).reservation(r).build());
 * }</pre>
 */
public final class ContextReservation {

    /**
     * The prompt step planned for when none is named: the whole prompt runs as one forward, whose attention
     * scores grow with the square of its length (at 512 tokens of ChatGLM3-6B in fp16, about 160 MiB for one
     * block). Longer prompts need {@link #of(ChatGLMConfig, long, long, DType, long)} with their length.
     */
    public static final long DEFAULT_PROMPT_TOKENS = 512;

    private ContextReservation() {
    }

    /**
     * The reservation for generating up to {@code context} positions (prompt and reply) for {@code batch} rows,
     * with the KV cache and activations in {@code dtype} (the model's float dtype), after a prompt step of
     * {@link #DEFAULT_PROMPT_TOKENS} tokens (or the whole context when it is shorter).
     *
     * @throws IllegalArgumentException when context or batch is not positive, the context exceeds the model's
     *     {@link ChatGLMConfig#maxPositions()}, or the dtype is not floating point
     */
    public static MemoryReservation of(ChatGLMConfig config, long context, long batch, DType dtype) {
        return of(config, context, batch, dtype, Math.min(context, DEFAULT_PROMPT_TOKENS));
    }

    /**
     * The reservation for generating up to {@code context} positions for {@code batch} rows after a prompt step of
     * {@code promptTokens} tokens: the workspace kept is the larger of that prompt's forward (its attention scores
     * grow with the square of its length) and one decoding step at the full context.
     *
     * @throws IllegalArgumentException as {@link #of(ChatGLMConfig, long, long, DType)}, or for a prompt step
     *     outside {@code 1..context}
     */
    public static MemoryReservation of(ChatGLMConfig config, long context, long batch, DType dtype,
            long promptTokens) {
        validate(config, context, batch);
        if (promptTokens <= 0 || promptTokens > context) {
            throw new IllegalArgumentException("The prompt step must be in 1.." + context + " tokens (the context), got "
                    + promptTokens);
        }
        long perLayer = config.kvCacheBytesPerLayer(context, batch, dtype);
        long workspace = Math.max(workspaceBytes(config, context, batch, dtype, 1),
                workspaceBytes(config, promptTokens, batch, dtype, promptTokens));
        MemoryReservation.Builder b = MemoryReservation.builder("KV cache for " + context + " positions x batch "
                + batch + " in " + dtype.torchName() + ", prompt step of " + promptTokens + " tokens");
        String prefix = blockPrefix(config);
        for (int i = 0; i < config.numLayers(); i++) {
            b.module(prefix + "." + i, perLayer);
        }
        return b.workspace(workspace).build();
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
     * The temporaries of one forward of {@code stepTokens} new tokens per row over a context of {@code context}
     * positions, every layer counted (a forward releases its temporaries only when it returns): the same estimate
     * the run-time memory report uses, {@link StepWorkspace#bytes}, so plans and reports agree.
     *
     * <pre>{@code
     * long decode = ContextReservation.workspaceBytes(config, 8192, 1, DType.FLOAT16, 1);
     * long prefill = ContextReservation.workspaceBytes(config, 8192, 1, DType.FLOAT16, 8192);
     * }</pre>
     *
     * @throws IllegalArgumentException when {@code stepTokens} is outside {@code 1..context} or the dtype is not
     *     floating point
     */
    public static long workspaceBytes(ChatGLMConfig config, long context, long batch, DType dtype, long stepTokens) {
        if (stepTokens <= 0 || stepTokens > context) {
            throw new IllegalArgumentException("Step tokens must be in 1.." + context + ", got " + stepTokens);
        }
        if (dtype == null || !dtype.isFloatingPoint()) {
            throw new IllegalArgumentException("Activations are held in a floating-point dtype, not " + dtype);
        }
        return StepWorkspace.bytes(config, dtype, batch, stepTokens, context, config.numLayers());
    }
}
