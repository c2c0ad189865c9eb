package io.github.bigmodel.cli;

import io.github.bigmodel.chatglm.ChatGLMConfig;
import io.github.bigmodel.chatglm.model.ContextReservation;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.dispatch.plan.MemoryReservation;
import picocli.CommandLine;
import picocli.CommandLine.Option;
import picocli.CommandLine.ParameterException;

/**
 * {@code --context N --batch B}: plan a device map that leaves room for generating N positions for B rows (the KV
 * cache of the blocks executing on each device and one decoding step's workspace, see {@link ContextReservation}).
 *
 * <pre>
 * bigmodel plan --preset chatglm3-6b --max-memory "0=10GiB,cpu=64GiB" --context 8192 --batch 1
 * </pre>
 */
final class ContextOptions {

    @Option(names = "--context", paramLabel = "N",
            description = "Plan room for generating N positions (prompt and reply): each device keeps the KV cache "
                    + "of the blocks executing there and one step's workspace. Default: no room kept (accelerate's "
                    + "plan).")
    Long context;

    @Option(names = "--batch", paramLabel = "B",
            description = "Rows generated at once, with --context (default: 1).")
    Long batch;

    @Option(names = "--prompt-tokens", paramLabel = "P",
            description = "Longest prompt run in one forward, with --context: its attention scores grow with the "
                    + "square of its length (default: 512, or the context when shorter).")
    Long promptTokens;

    /** Whether room for generation was asked for. */
    boolean given() {
        return context != null;
    }

    /**
     * The reservation for these options, or {@link MemoryReservation#NONE} without {@code --context}.
     *
     * @throws ParameterException for --batch without --context, a value that is not positive, or a context beyond
     *     the model's maximum positions
     */
    MemoryReservation reservation(CommandLine line, ChatGLMConfig config, DType kvDtype) {
        if (context == null) {
            if (batch != null || promptTokens != null) {
                throw new ParameterException(line, (batch != null ? "--batch" : "--prompt-tokens")
                        + " needs --context");
            }
            return MemoryReservation.NONE;
        }
        long rows = batch == null ? 1 : batch;
        try {
            long prompt = promptTokens != null ? promptTokens
                    : Math.min(context, ContextReservation.DEFAULT_PROMPT_TOKENS);
            return ContextReservation.of(config, context, rows, kvDtype, prompt);
        } catch (IllegalArgumentException e) {
            throw new ParameterException(line, "--context " + context + " --batch " + rows
                    + (promptTokens != null ? " --prompt-tokens " + promptTokens : "") + ": " + e.getMessage());
        }
    }

    /** {@link #context} and {@link #batch} as given ({@code 0, 0} without --context), after validation. */
    long contextOrZero() {
        return context == null ? 0 : context;
    }

    long batchOrZero() {
        return context == null ? 0 : batch == null ? 1 : batch;
    }
}
