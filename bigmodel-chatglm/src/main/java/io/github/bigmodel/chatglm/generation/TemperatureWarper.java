package io.github.bigmodel.chatglm.generation;

import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;

/**
 * Divides the scores by a temperature, as transformers' {@code TemperatureLogitsWarper}: below 1 sharpens the
 * distribution, above 1 flattens it.
 *
 * <pre>{@code
 * GenerationRequest.builder(prompt).doSample(true).processor(new TemperatureWarper(0.8)).build();
 * }</pre>
 */
public final class TemperatureWarper implements LogitsProcessor {

    private final double temperature;

    /** @throws IllegalArgumentException unless {@code temperature > 0} and finite */
    public TemperatureWarper(double temperature) {
        if (!(temperature > 0) || Double.isInfinite(temperature)) {
            throw new IllegalArgumentException("temperature must be a finite number > 0, got " + temperature);
        }
        this.temperature = temperature;
    }

    public double temperature() {
        return temperature;
    }

    @Override
    public Tensor process(long[][] ids, Tensor scores) {
        return scores.div(new Scalar(temperature));
    }

    @Override
    public String toString() {
        return "TemperatureWarper(" + temperature + ")";
    }
}
