package io.github.bigmodel.core.quant;

import io.github.bigmodel.core.Tensors;
import java.util.Arrays;
import org.bytedeco.pytorch.Tensor;

/**
 * The stored form of a quantized linear weight, THUDM's layout: {@code packed} is int8, {@code [out, in]} for
 * {@link Precision#INT8} or {@code [out, in/2]} for {@link Precision#INT4} (first weight of each pair in the high
 * nibble, both nibbles signed), and {@code scale} is {@code [out]} floating point, so that
 * {@code weight[r][c] = q[r][c] * scale[r]}.
 *
 * <p>Owns both tensors: {@link #close()} releases them.
 *
 * <pre>{@code
 * try (QuantizedWeight q = WeightQuantizer.quantize(weight, Precision.INT4)) {
 *     q.packed();   // int8 [out, in/2]
 *     q.scale();    // [out]
 * }
 * }</pre>
 */
public final class QuantizedWeight implements AutoCloseable {

    private final Tensor packed;
    private final Tensor scale;
    private final Precision precision;
    private final long inFeatures;

    /**
     * Wraps tensors already in the layout above; checks their shapes against {@code inFeatures}.
     *
     * @throws IllegalArgumentException when a shape or the precision does not fit
     */
    public QuantizedWeight(Tensor packed, Tensor scale, Precision precision, long inFeatures) {
        if (precision == null || !precision.isQuantized()) {
            throw new IllegalArgumentException("A quantized weight needs int8 or int4, got " + precision);
        }
        long[] p = Tensors.shape(packed);
        long[] s = Tensors.shape(scale);
        long storedColumns = precision == Precision.INT4 ? inFeatures / 2 : inFeatures;
        if (precision == Precision.INT4 && inFeatures % 2 != 0) {
            throw new IllegalArgumentException("int4 packs two weights per byte: in_features must be even, got "
                    + inFeatures);
        }
        if (p.length != 2 || p[1] != storedColumns) {
            throw new IllegalArgumentException(precision + " weight of " + inFeatures + " inputs must have shape [out, "
                    + storedColumns + "], got " + Arrays.toString(p));
        }
        if (s.length != 1 || s[0] != p[0]) {
            throw new IllegalArgumentException("weight_scale must have shape [" + p[0] + "], got "
                    + Arrays.toString(s));
        }
        this.packed = packed;
        this.scale = scale;
        this.precision = precision;
        this.inFeatures = inFeatures;
    }

    public Tensor packed() {
        return packed;
    }

    public Tensor scale() {
        return scale;
    }

    public Precision precision() {
        return precision;
    }

    public long inFeatures() {
        return inFeatures;
    }

    public long outFeatures() {
        return packed.size(0);
    }

    @Override
    public void close() {
        packed.close();
        scale.close();
    }
}
