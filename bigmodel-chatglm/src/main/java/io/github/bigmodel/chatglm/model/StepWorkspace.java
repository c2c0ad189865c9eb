package io.github.bigmodel.chatglm.model;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.chatglm.ChatGLMConfig;

/**
 * A documented estimate of the transient memory (activations, "workspace") of one forward step of a ChatGLM
 * model: what the pass allocates besides the weights and the KV cache, all of it released when the step returns.
 * The forward pass sizes its row chunks with the same figures, so the estimate and the code agree by construction.
 *
 * <pre>{@code
 * long decode = StepWorkspace.bytes(config, DType.BFLOAT16, 1, 1, 8192, config.numLayers());
 * long prompt = StepWorkspace.bytes(config, DType.FLOAT16, 1, 2048, 2048, config.numLayers()); // ~170 MiB, 6B
 * }</pre>
 *
 * <p>How a step runs: a batch {@code B}, {@code L} new positions on top of a context of {@code K} positions
 * (including the new ones), {@code s} bytes per element of the model dtype. Blocks run one by one, each in a
 * pointer scope of its own, and only the hidden states between two blocks stay alive (the embedding output, the
 * block's input and its output: {@code 3 * B * L * hidden} elements). Inside a block, work that is independent per
 * position runs in row chunks whose temporaries are sized to stay within {@link #CHUNK_BYTES}
 * ({@link #attentionRowBytes}, {@link #positionRowBytes}); the whole-length tensors of a block are:
 * <ul>
 *   <li>projection: the normed input, the query-key-value output, the rotated queries and keys
 *       ({@code hidden + qkv + (heads + kvHeads) * headDim} per position), plus one chunk of the input norm's
 *       float32 temporaries or of rotary temporaries, whichever is larger (the norm runs in position chunks
 *       too);</li>
 *   <li>attention: the normed input, the queries and the context being assembled ({@code hidden + 2 heads *
 *       headDim} per position), the contiguous copies of the keys and values the products read
 *       ({@code 2 * K * B * kvHeads * headDim}), plus one chunk of query rows: scores in the model dtype, their
 *       float32 copy and softmax, the probabilities cast back. The keys and values themselves are the KV cache's
 *       (a forward without a cache holds its own, as much as a cache of {@code L} positions);</li>
 *   <li>output: the normed input, the context and the block output being assembled ({@code 2 hidden +
 *       heads * headDim} per position), plus one chunk of positions through the dense layer, the norms and the
 *       MLP.</li>
 * </ul>
 * A block counts at the largest of the three; the mask ({@code B * L * K} booleans) and, once, the logits of the
 * last position (float32 plus their model-dtype original) are added. It is an estimate from the code's
 * structure, not a measurement: libtorch may fuse or reuse buffers, and the allocator may keep freed memory
 * (docs/memory.md compares it with measured peaks).
 */
public final class StepWorkspace {

    /**
     * The temporaries one row chunk of a step may hold (32 MiB): a prompt's attention runs over as many query rows
     * as fit, its MLP over as many positions. At least one row runs per chunk whatever its size.
     */
    public static final long CHUNK_BYTES = 32L << 20;

    private StepWorkspace() {
    }

    /**
     * @param config        the model's configuration
     * @param dtype         the model's (activation) dtype
     * @param batch         rows
     * @param queryLength   new positions in this step (1 for a decode step)
     * @param contextLength positions attended to, the new ones included
     * @param layers        how many of the model's layers run on the device counted: 0 counts only the logits;
     *                      any other count gives the same figure, since one block's temporaries are live at a time
     * @throws IllegalArgumentException for a negative size or a context shorter than the step
     */
    public static long bytes(ChatGLMConfig config, DType dtype, long batch, long queryLength, long contextLength,
            int layers) {
        if (batch < 0 || queryLength < 0 || contextLength < queryLength || layers < 0) {
            throw new IllegalArgumentException("Invalid step: batch=" + batch + ", queryLength=" + queryLength
                    + ", contextLength=" + contextLength + ", layers=" + layers);
        }
        long s = dtype.bytesFor(1);
        long logits = queryLength == 0 ? 0 : batch * (long) config.vocabSize() * (s + 4);
        if (layers == 0 || queryLength == 0 || batch == 0) {
            return logits;
        }
        long hidden = config.hiddenSize();
        long heads = config.numAttentionHeads();
        long kvHeads = config.kvHeads();
        long headDim = config.headDim();
        long positions = batch * queryLength;
        long rowsA = PromptChunks.rows(CHUNK_BYTES, attentionRowBytes(config, dtype, batch, contextLength),
                queryLength);
        long rowsP = PromptChunks.rows(CHUNK_BYTES, positionRowBytes(config, dtype, batch), queryLength);
        long projection = positions * (hidden + config.qkvOutFeatures() + (heads + kvHeads) * headDim) * s
                + rowsP * Math.max(rotaryRowBytes(config, dtype, batch), normRowBytes(config, batch));
        long kv = 2L * contextLength * batch * kvHeads * headDim * s;
        long attention = positions * (hidden + 2 * heads * headDim) * s + kv
                + rowsA * attentionRowBytes(config, dtype, batch, contextLength);
        long output = positions * (2 * hidden + heads * headDim) * s
                + rowsP * positionRowBytes(config, dtype, batch);
        long block = Math.max(projection, Math.max(attention, output));
        long hiddenStates = 3 * positions * hidden * s;
        long mask = positions * contextLength;
        return block + hiddenStates + mask + logits;
    }

    /**
     * The temporaries of one query row of the attention (all heads, every batch row) over {@code contextLength}
     * keys: per score, the product in the model dtype, its float32 copy and softmax and the probabilities cast
     * back (float32 models skip the casts); per head, the row's query and context copies; the row's mask.
     */
    static long attentionRowBytes(ChatGLMConfig config, DType dtype, long batch, long contextLength) {
        long s = dtype.bytesFor(1);
        long perScore = s < 4 ? s + 4 + 4 + s : s + s;
        long heads = config.numAttentionHeads();
        return batch * heads * contextLength * perScore + 4 * batch * heads * config.headDim() * s + contextLength;
    }

    /**
     * The temporaries of one position (every batch row) after the attention: the dense output and the residual
     * sums, the second norm with its float32 intermediates, and the MLP (ChatGLM2/3: the {@code 2 ffn} up
     * projection, SiLU and product, the down projection; ChatGLM-6B: the {@code inner} up projection and the nine
     * intermediates of its tanh GELU).
     */
    static long positionRowBytes(ChatGLMConfig config, DType dtype, long batch) {
        long s = dtype.bytesFor(1);
        long hidden = config.hiddenSize();
        long mlp = config.version() == ChatGLMConfig.Version.CHATGLM2
                ? 4L * config.ffnHiddenSize()
                : 10L * config.innerHiddenSize();
        return batch * ((7 * hidden + mlp) * s + 16 * hidden);
    }

    /**
     * The float32 temporaries of the input norm for one position (every batch row): RMSNorm's float32 copy, its
     * square, the normalized values and their weighted product, 16 bytes per hidden unit (LayerNorm's fused kernel
     * makes fewer).
     */
    static long normRowBytes(ChatGLMConfig config, long batch) {
        return batch * 16L * config.hiddenSize();
    }

    /** The rotary temporaries of one position: up to five copies of its query heads. */
    static long rotaryRowBytes(ChatGLMConfig config, DType dtype, long batch) {
        return batch * 5L * config.numAttentionHeads() * config.headDim() * dtype.bytesFor(1);
    }
}
