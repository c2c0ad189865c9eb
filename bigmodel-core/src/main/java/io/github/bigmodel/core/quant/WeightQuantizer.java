package io.github.bigmodel.core.quant;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Tensors;
import io.github.bigmodel.core.kernel.Scopes;
import java.util.Arrays;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.LongOptional;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.ScalarOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * Symmetric per-output-row weight quantization in the layout of THUDM's ChatGLM {@code quantize(bits)}:
 * {@code scale[r] = max|w[r]| / (2^(bits-1) - 1)}, {@code q = round(w / scale)}; int4 values are packed two per
 * byte with the first of each pair in the high nibble.
 *
 * <p>Every method works on the tensors' own device and returns new tensors. The codes are THUDM's bit for bit:
 * each division runs in float32 and its quotient is rounded to the weight's own dtype (what libtorch does for a
 * half-precision division on every device) before rounding half to even.
 *
 * <pre>{@code
 * try (QuantizedWeight q = WeightQuantizer.quantize(weight, Precision.INT8);
 *      Tensor back = WeightQuantizer.dequantize(q, ScalarType.Float)) {
 *     // back is within scale/2 of weight, row by row
 * }
 * }</pre>
 */
// PointerScope blocks are used for what they release on close.
@SuppressWarnings("try")
public final class WeightQuantizer {

    private WeightQuantizer() {
    }

    /**
     * Quantizes a 2-d floating-point weight {@code [out, in]}; the scales keep the weight's dtype (as THUDM's do).
     *
     * @throws IllegalArgumentException for a weight that is not 2-d floating point, an odd {@code in} for int4,
     *     or a float precision
     */
    public static QuantizedWeight quantize(Tensor weight, Precision precision) {
        return quantize(weight, null, precision);
    }

    /**
     * Quantizes a 2-d floating-point weight {@code [out, in]} as if it were converted to {@code asType} first
     * (null: its own dtype); the scales are in that dtype. A CPU weight is read once, on
     * {@link io.github.bigmodel.core.NativeRuntime#threads()} threads, straight into the codes, with no float copy
     * of it (what loading a checkpoint needs: peak memory is the quantized result); on another device libtorch
     * computes the same codes there.
     *
     * <pre>{@code
     * QuantizedWeight q = WeightQuantizer.quantize(mappedBf16Weight, DType.FLOAT16, Precision.INT4);
     * }</pre>
     *
     * @throws IllegalArgumentException for a weight that is not 2-d floating point, an odd {@code in} for int4,
     *     a float precision, or an {@code asType} that is not floating point
     */
    public static QuantizedWeight quantize(Tensor weight, DType asType, Precision precision) {
        if (precision == null || !precision.isQuantized()) {
            throw new IllegalArgumentException("quantize needs int8 or int4, got " + precision);
        }
        long[] shape = Tensors.shape(weight);
        DType type = DType.of(weight.scalar_type());
        if (shape.length != 2 || !type.isFloatingPoint()) {
            throw new IllegalArgumentException("Only 2-d floating-point weights can be quantized, got "
                    + type.torchName() + Arrays.toString(shape));
        }
        if (precision == Precision.INT4 && shape[1] % 2 != 0) {
            throw new IllegalArgumentException("int4 packs two weights per byte: in_features must be even, got "
                    + shape[1]);
        }
        if (asType != null && !asType.isFloatingPoint()) {
            throw new IllegalArgumentException("A weight is quantized from a floating dtype, got "
                    + asType.torchName());
        }
        DType ownType = asType != null ? asType : type;
        Tensor packed;
        Tensor scale;
        if (RowQuantizer.accepts(weight)) {
            try (PointerScope scope = new PointerScope()) {
                QuantizedWeight q = RowQuantizer.quantize(weight, ownType, precision);
                packed = q.packed();
                scale = q.scale();
                packed.retainReference();
                scale.retainReference();
            }
            return new QuantizedWeight(Scopes.handOut(packed), Scopes.handOut(scale), precision, shape[1]);
        }
        return withTorch(weight, ownType, precision);
    }

    /**
     * The libtorch road of {@link #quantize(Tensor, DType, Precision)}, on the weight's device (package-private:
     * tests compare the CPU road's codes with it). Arguments are checked by the caller.
     */
    static QuantizedWeight withTorch(Tensor weight, DType ownType, Precision precision) {
        long[] shape = Tensors.shape(weight);
        Tensor packed;
        Tensor scale;
        try (PointerScope scope = new PointerScope()) {
            ScalarType own = ownType.scalarType();
            Tensor w = weight.to(own).to(ScalarType.Float);
            // THUDM: weight_scale = weight.abs().max(dim=-1).values / (2**(bits-1)-1), in the weight's dtype:
            // libtorch computes a half division in float32 and rounds the quotient to half, as done here.
            Tensor stored = w.abs().amax(new long[] {1}, false).div(new Scalar((double) precision.maxQuantized()))
                    .to(own);
            Tensor scale32 = stored.to(ScalarType.Float);
            // An all-zero row has scale 0: divide by 1 instead so its codes are 0 (THUDM's 0/0 would be NaN).
            Tensor divisor = torch.where(scale32.eq(new Scalar(0.0)), torch.ones_like(scale32), scale32);
            // THUDM: torch.round(weight / weight_scale[:, None]) on tensors of the weight's dtype, so the quotient
            // is rounded to that dtype (float32 division, rounded once) before round-half-to-even; for a float32
            // weight the second cast changes nothing.
            Tensor quotient = w.div(divisor.unsqueeze(1)).to(own).to(ScalarType.Float);
            // A bfloat16 int8 quotient can round up to max+1 (127.5 -> 128), which THUDM's .to(torch.int8) leaves
            // to the platform's cast; the codes here saturate to max (docs/quantization.md, "Bit for bit").
            Tensor q = quotient.round()
                    .clamp(new ScalarOptional(new Scalar(-precision.maxQuantized() - 1.0)),
                            new ScalarOptional(new Scalar((double) precision.maxQuantized())))
                    .to(ScalarType.Char);
            packed = precision == Precision.INT4 ? packInt4(q) : q.contiguous();
            scale = stored.contiguous();
            packed.retainReference();
            scale.retainReference();
        }
        return new QuantizedWeight(Scopes.handOut(packed), Scopes.handOut(scale), precision, shape[1]);
    }

    /**
     * Packs int8 values in {@code [-8, 7]}, {@code [out, in]} with {@code in} even, into int8 {@code [out, in/2]}:
     * byte {@code j} holds value {@code 2j} in its high nibble and {@code 2j+1} in its low nibble.
     */
    public static Tensor packInt4(Tensor values) {
        long[] shape = Tensors.shape(values);
        if (shape.length != 2 || shape[1] % 2 != 0) {
            throw new IllegalArgumentException("int4 packing needs [out, even in], got " + Arrays.toString(shape));
        }
        Tensor packed;
        try (PointerScope scope = new PointerScope()) {
            Tensor v = values.to(ScalarType.Int);
            Tensor high = v.slice(1, new LongOptional(0), new LongOptional(shape[1]), 2);
            Tensor low = v.slice(1, new LongOptional(1), new LongOptional(shape[1]), 2);
            // high * 16 keeps the sign in the top nibble; the byte's bit pattern is what int8 storage keeps.
            Tensor combined = high.mul(new Scalar(16)).add(low.bitwise_and(new Scalar(15)));
            packed = combined.to(ScalarType.Char).contiguous();
            packed.retainReference();
        }
        return Scopes.handOut(packed);
    }

    /** The signed values {@code [out, 2 * packedColumns]} (int8, each in {@code [-8, 7]}) of a packed int4 weight. */
    public static Tensor unpackInt4(Tensor packed) {
        long[] shape = Tensors.shape(packed);
        if (shape.length != 2) {
            throw new IllegalArgumentException("A packed int4 weight is 2-d, got " + Arrays.toString(shape));
        }
        Tensor out;
        try (PointerScope scope = new PointerScope()) {
            Tensor v = packed.to(ScalarType.Int);
            Tensor high = v.bitwise_right_shift(new Scalar(4));
            Tensor low = v.bitwise_and(new Scalar(15)).bitwise_xor(new Scalar(8)).sub(new Scalar(8));
            out = torch.stack(new TensorVector(high, low), 2).reshape(shape[0], shape[1] * 2).to(ScalarType.Char);
            out.retainReference();
        }
        return Scopes.handOut(out);
    }

    /** The integer codes {@code [out, in]} (int8) of a quantized weight, unpacked for int4. */
    public static Tensor codes(QuantizedWeight weight) {
        return weight.precision() == Precision.INT4 ? unpackInt4(weight.packed()) : weight.packed().clone();
    }

    /** {@code codes * scale} as a {@code [out, in]} tensor of {@code type}, on the weight's device. */
    public static Tensor dequantize(QuantizedWeight weight, ScalarType type) {
        Tensor out;
        try (PointerScope scope = new PointerScope()) {
            Tensor codes = codes(weight);
            out = codes.to(ScalarType.Float).mul(weight.scale().to(ScalarType.Float).unsqueeze(1)).to(type);
            out.retainReference();
        }
        return Scopes.handOut(out);
    }
}
