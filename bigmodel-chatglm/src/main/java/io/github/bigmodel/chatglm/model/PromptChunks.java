package io.github.bigmodel.chatglm.model;

import io.github.bigmodel.core.Tensors;
import java.util.function.Supplier;
import io.github.bigmodel.core.kernel.Scopes;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.MemoryFormatOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;

/**
 * The row chunking of a prompt step: work that is independent per position (a query's attention row, a position's
 * MLP) runs over a few rows at a time, each chunk in a pointer scope of its own, so a long prompt never holds its
 * whole attention score matrix or its whole MLP activations. Chunking changes no arithmetic: every row goes through
 * the same operations as in one piece, and a step that fits in one chunk (every decoding step) runs exactly as
 * before.
 */
// PointerScope blocks are used for what they release on close, not referenced by name.
@SuppressWarnings("try")
final class PromptChunks {

    /** One chunk's work: rows {@code [start, start + rows)} of the step. */
    @FunctionalInterface
    interface RowStep {
        Tensor apply(long start, long rows);
    }

    private PromptChunks() {
    }

    /** Rows per chunk so that a chunk's temporaries stay within {@code budget} bytes: at least 1, at most total. */
    static long rows(long budget, long bytesPerRow, long total) {
        long fit = bytesPerRow <= 0 ? total : budget / bytesPerRow;
        return Math.max(1, Math.min(total, fit));
    }

    /**
     * Runs {@code step} over {@code [0, total)} in chunks of {@code chunk} rows and stacks the results along
     * {@code dim} into one tensor allocated once. With a single chunk, returns the step's result itself.
     */
    static Tensor byRows(long total, long chunk, int dim, RowStep step) {
        if (chunk >= total) {
            return step.apply(0, total);
        }
        Tensor out = null;
        try {
            for (long start = 0; start < total; start += chunk) {
                long n = Math.min(chunk, total - start);
                try (PointerScope scope = new PointerScope()) {
                    Tensor part = step.apply(start, n);
                    if (out == null) {
                        long[] shape = Tensors.shape(part);
                        shape[dim] = total;
                        out = torch.empty(shape, part.options(), new MemoryFormatOptional());
                        // Owned here, outside every scope, until handed to the caller's scope below.
                        out.retainReference();
                    }
                    out.narrow(dim, start, n).copy_(part);
                }
            }
        } catch (RuntimeException | Error e) {
            if (out != null) {
                out.releaseReference();
            }
            throw e;
        }
        return Scopes.handOut(out);
    }

    /** {@link ChatGLMLanguageModel#inOwnScope} for a step that returns several tensors. */
    static Tensor[] inOwnScope(Supplier<Tensor[]> step) {
        Tensor[] result;
        try (PointerScope scope = new PointerScope()) {
            result = step.get();
            for (Tensor t : result) {
                t.retainReference();
            }
        }
        for (Tensor t : result) {
            Scopes.handOut(t);
        }
        return result;
    }

    /**
     * Runs {@code layers} blocks one after the other, each in a scope of its own, keeping only the hidden states
     * between two blocks alive: a block's output is freed once the next block has made its own, instead of every
     * block's output staying until the forward returns (28 x 16 MiB for a 2048-token prompt of ChatGLM3-6B in
     * half precision).
     */
    static Tensor chainBlocks(Tensor input, int layers, java.util.function.BiFunction<Integer, Tensor, Tensor> block) {
        Tensor hidden = input;
        Tensor owned = null;
        try {
            for (int i = 0; i < layers; i++) {
                Tensor out;
                try (PointerScope scope = new PointerScope()) {
                    out = block.apply(i, hidden);
                    out.retainReference();
                }
                if (owned != null) {
                    owned.releaseReference();
                }
                owned = out;
                hidden = out;
            }
        } catch (RuntimeException | Error e) {
            if (owned != null) {
                owned.releaseReference();
            }
            throw e;
        }
        return owned == null ? input : Scopes.handOut(owned);
    }
}
