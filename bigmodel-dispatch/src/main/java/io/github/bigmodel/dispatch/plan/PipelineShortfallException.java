package io.github.bigmodel.dispatch.plan;

import java.util.List;

/**
 * The hosts of a pipeline cannot hold a model: what is left after every host took what fits, and its size.
 *
 * <pre>{@code
 * try {
 *     DeviceMapPlanner.planHosts(model, Strategy.SEQUENTIAL, options);
 * } catch (PipelineShortfallException e) {
 *     e.shortfallBytes();   // weights no host could take
 *     e.leftOver();         // [transformer.layers.20, ..., lm_head]
 * }
 * }</pre>
 */
public class PipelineShortfallException extends DeviceMapException {

    private final double shortfallBytes;
    private final List<String> leftOver;

    /** @param leftOver the planning units no host could take, in module order */
    public PipelineShortfallException(String message, double shortfallBytes, List<String> leftOver) {
        super("ValueError", message);
        this.shortfallBytes = shortfallBytes;
        this.leftOver = List.copyOf(leftOver);
    }

    /** Bytes of the weights no host could take (at the load dtype and precisions). */
    public double shortfallBytes() {
        return shortfallBytes;
    }

    /** The planning units no host could take, in module order. */
    public List<String> leftOver() {
        return leftOver;
    }
}
