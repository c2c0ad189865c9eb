package io.github.bigmodel.core.quant;

import io.github.bigmodel.core.DType;
import java.util.Locale;

/**
 * How the weights of a model's linear layers are held on one device: a floating-point dtype, or weight-only
 * integer quantization (symmetric, one scale per output row) with 8 or 4 bits per weight.
 *
 * <p>For the integer precisions everything that is not a quantized linear weight (embeddings, norms, the output
 * layer, biases) stays floating point in the model's own dtype (THUDM's recipe: {@code model.half().quantize(bits)}
 * keeps them in float16). Which precision a layer is held in is decided by
 * {@link WeightConversion#layerPrecision}, for planning and loading alike.
 *
 * <pre>{@code
 * Precision gpu = Precision.parse("int4");
 * gpu.isQuantized();   // true
 * gpu.bits();          // 4
 * Precision.parse("bf16").dtype();   // BFLOAT16
 * }</pre>
 */
public enum Precision {
    FP32(DType.FLOAT32, 32),
    FP16(DType.FLOAT16, 16),
    BF16(DType.BFLOAT16, 16),
    /** One signed byte per weight plus one scale per output row. */
    INT8(DType.INT8, 8),
    /** Two signed 4-bit weights per byte (first weight in the high nibble) plus one scale per output row. */
    INT4(DType.INT4, 4);

    private final DType dtype;
    private final int bits;

    Precision(DType dtype, int bits) {
        this.dtype = dtype;
        this.bits = bits;
    }

    /** The dtype of the weights: a float type, or {@link DType#INT8}/{@link DType#INT4} for the quantized ones. */
    public DType dtype() {
        return dtype;
    }

    public int bits() {
        return bits;
    }

    public boolean isQuantized() {
        return this == INT8 || this == INT4;
    }

    /** The largest quantized magnitude: {@code 2^(bits-1) - 1} (127 or 7). */
    public int maxQuantized() {
        if (!isQuantized()) {
            throw new IllegalStateException(this + " is not an integer precision");
        }
        return (1 << (bits - 1)) - 1;
    }

    /** Bytes of the stored weights of one row of {@code inFeatures} (int4 rounds up to whole bytes). */
    public long rowBytes(long inFeatures) {
        return dtype.bytesFor(inFeatures);
    }

    /** The precision of a floating-point dtype. */
    public static Precision of(DType dtype) {
        for (Precision p : values()) {
            if (p.dtype == dtype) {
                return p;
            }
        }
        throw new IllegalArgumentException("No precision holds weights as " + dtype);
    }

    /**
     * Parses {@code fp32}, {@code fp16}, {@code bf16}, {@code int8}, {@code int4} (any case), or a dtype name that
     * {@link DType#parse} knows ({@code float16}, {@code torch.bfloat16}).
     *
     * @throws IllegalArgumentException naming the text when it is no precision
     */
    public static Precision parse(String text) {
        if (text == null) {
            throw new IllegalArgumentException("precision must not be null");
        }
        String s = text.trim().toLowerCase(Locale.ROOT);
        for (Precision p : values()) {
            if (p.name().toLowerCase(Locale.ROOT).equals(s)) {
                return p;
            }
        }
        try {
            return of(DType.parse(s));
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("Unknown precision '" + text
                    + "': expected fp32, fp16, bf16, int8 or int4", e);
        }
    }
}
