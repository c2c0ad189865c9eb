package io.github.bigmodel.chatglm.model;

/**
 * Weights that cannot be put into a ChatGLM model: a state-dict name the checkpoint lacks, a tensor of the wrong
 * shape, a non-floating-point tensor where a weight belongs.
 *
 * <pre>{@code
 * try {
 *     model.loadWeights(checkpoint::tensor, Device.CPU, DType.FLOAT32);
 * } catch (WeightLoadException e) {
 *     log.error("{} ({})", e.getMessage(), e.tensorName());
 * }
 * }</pre>
 */
public class WeightLoadException extends RuntimeException {

    private static final long serialVersionUID = 1L;

    private final String tensorName;

    public WeightLoadException(String tensorName, String message) {
        super(message);
        this.tensorName = tensorName;
    }

    public WeightLoadException(String tensorName, String message, Throwable cause) {
        super(message, cause);
        this.tensorName = tensorName;
    }

    /** The state-dict name the problem is about. */
    public String tensorName() {
        return tensorName;
    }
}
