package io.github.bigmodel.chatglm.generation;

/**
 * What {@link Generator#generate} produced: per row the prompt followed by the new tokens, and, when asked for,
 * the scores of every step.
 *
 * <pre>{@code
 * GenerationResult r = generator.generate(request);
 * long[] firstRowNew = r.newIds()[0];
 * }</pre>
 */
public final class GenerationResult {

    private final long[][] outputIds;
    private final int promptLength;
    private final float[][][] stepScores;

    GenerationResult(long[][] outputIds, int promptLength, float[][][] stepScores) {
        this.outputIds = outputIds;
        this.promptLength = promptLength;
        this.stepScores = stepScores;
    }

    /** Prompt plus generated ids, per row. */
    public long[][] outputIds() {
        return outputIds;
    }

    /** The generated ids only, per row. */
    public long[][] newIds() {
        long[][] out = new long[outputIds.length][];
        for (int i = 0; i < out.length; i++) {
            out[i] = java.util.Arrays.copyOfRange(outputIds[i], promptLength, outputIds[i].length);
        }
        return out;
    }

    /** Number of steps run. */
    public int steps() {
        return outputIds[0].length - promptLength;
    }

    /**
     * The processed scores each step chose from, {@code [batch][step][vocab]}, or null when the request did not
     * keep them.
     */
    public float[][][] stepScores() {
        return stepScores;
    }
}
