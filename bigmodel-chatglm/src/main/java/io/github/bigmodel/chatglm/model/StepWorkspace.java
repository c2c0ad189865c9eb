package io.github.bigmodel.chatglm.model;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.chatglm.ChatGLMConfig;

/**
 * A documented estimate of the transient memory (activations, "workspace") of one forward step of a ChatGLM
 * model: what the pass allocates besides the weights and the KV cache, all of it released when the step returns.
 *
 * <pre>{@code
 * long ws = StepWorkspace.bytes(config, DType.BFLOAT16, 1, 1, 8192, config.numLayers()); // one decode step
 * }</pre>
 *
 * <p>The estimate, per layer, for a batch {@code B}, {@code L} new positions on top of a context of {@code K}
 * positions (including the new ones), {@code s} bytes per element of the model dtype:
 * <ul>
 *   <li>attention scores {@code B * heads * L * K} elements, held as up to three tensors in the model dtype (the
 *       product, its scaled copy, the probabilities cast back) and three in float32 (the cast, the layer-scaled
 *       copy, the softmax): {@code (3s + 12)} bytes each;</li>
 *   <li>the contiguous copies of the cached keys and values the two attention products make:
 *       {@code 2 * K * B * kvHeads * headDim * s};</li>
 *   <li>per new position, the layer's activations: query-key-value output, rotated query and key, attention
 *       context and its reshaped copy, the dense output, two norms and two residual sums, and the MLP's
 *       {@code 2 * ffn} up-projection, its {@code ffn} activation and the down-projection: about
 *       {@code qkv + 2 * (heads + kvHeads) * headDim + 3 * heads * headDim + 6 * hidden + 3 * ffn} elements.</li>
 * </ul>
 * Each block runs in a pointer scope of its own, so one block's temporaries are live at a time: the per-layer
 * figure counts once, plus each counted layer's output hidden states ({@code B * L * hidden}, kept until the pass
 * returns) and, once, the float32 logits of the last position (plus their model-dtype original). It is an estimate from the code's structure, not a measurement: libtorch may fuse or reuse
 * buffers, and the allocator may keep freed memory.
 */
public final class StepWorkspace {

    private StepWorkspace() {
    }

    /**
     * @param config        the model's configuration
     * @param dtype         the model's (activation) dtype
     * @param batch         rows
     * @param queryLength   new positions in this step (1 for a decode step)
     * @param contextLength positions attended to, the new ones included
     * @param layers        how many of the model's layers to count (those on one device, or all)
     * @throws IllegalArgumentException for a negative size or a context shorter than the step
     */
    public static long bytes(ChatGLMConfig config, DType dtype, long batch, long queryLength, long contextLength,
            int layers) {
        if (batch < 0 || queryLength < 0 || contextLength < queryLength || layers < 0) {
            throw new IllegalArgumentException("Invalid step: batch=" + batch + ", queryLength=" + queryLength
                    + ", contextLength=" + contextLength + ", layers=" + layers);
        }
        long s = dtype.bytesFor(1);
        long heads = config.numAttentionHeads();
        long kvHeads = config.kvHeads();
        long headDim = config.headDim();
        long scores = batch * heads * queryLength * contextLength * (3 * s + 12);
        long kvCopies = 2L * contextLength * batch * kvHeads * headDim * s;
        long perPosition = config.qkvOutFeatures() + 2 * (heads + kvHeads) * headDim + 3 * heads * headDim
                + 6L * config.hiddenSize() + 3L * config.ffnHiddenSize();
        long activations = batch * queryLength * perPosition * s;
        long logits = queryLength == 0 ? 0 : batch * (long) config.vocabSize() * (s + 4);
        if (layers == 0) {
            return logits;
        }
        long blockOutputs = layers * batch * queryLength * config.hiddenSize() * s;
        return scores + kvCopies + activations + blockOutputs + logits;
    }
}
