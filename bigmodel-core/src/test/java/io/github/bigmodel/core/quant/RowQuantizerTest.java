package io.github.bigmodel.core.quant;

import static org.assertj.core.api.Assertions.assertThat;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.NativeRuntime;
import java.util.Random;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;

/**
 * The CPU road of {@link WeightQuantizer#quantize(Tensor, DType, Precision)} ({@link RowQuantizer}) gives the
 * libtorch road's codes and scales bit for bit, for every stored dtype, target dtype and precision, on rows built to
 * hit the edges (all zero, ties of the quotient, saturation at max+1, tiny and huge values), and with several
 * threads; and its 16-bit float rounding is libtorch's on every half and bfloat16 boundary it is tested on.
 */
// PointerScope blocks are used for what they release on close.
@SuppressWarnings("try")
class RowQuantizerTest {

    private static final ScalarType[] FLOATS = {ScalarType.Float, ScalarType.BFloat16, ScalarType.Half};

    private static byte[] bytes(Tensor t) {
        Tensor c = t.contiguous().view(ScalarType.Byte);
        byte[] out = new byte[(int) c.numel()];
        c.data_ptr_byte().get(out);
        return out;
    }

    /** Random rows of widely spread magnitudes, plus rows that hit the rounding and saturation edges. */
    private static Tensor edgeWeight(long rows, long cols, long seed) {
        torch.manual_seed(seed);
        Tensor w = torch.randn(rows, cols).mul(torch.exp(torch.randn(rows, 1).mul(new Scalar(4.0))));
        // row 0 all zero; row 1 exact ties of the int8 quotient (k + 0.5) * max/127; row 2 one huge value among
        // small ones; row 3 subnormal-sized values in half
        w.select(0, 0).zero_();
        Tensor ties = torch.arange(new Scalar(-cols / 2.0), new Scalar(cols / 2.0)).add(new Scalar(0.5))
                .div(new Scalar(cols / 2.0)).mul(new Scalar(127.0));
        w.select(0, 1).copy_(ties);
        w.select(0, 2).copy_(torch.randn(cols).mul(new Scalar(1e-3)));
        w.select(0, 2).select(0, 7).fill_(new Scalar(3.0e4));
        w.select(0, 3).copy_(torch.randn(cols).mul(new Scalar(1e-6)));
        return w;
    }

    @Test
    void codesAndScalesAreTheLibtorchRoadsBitForBit() {
        try (PointerScope scope = new PointerScope()) {
            for (ScalarType stored : FLOATS) {
                Tensor w = edgeWeight(67, 96, 5).to(stored);
                assertThat(RowQuantizer.accepts(w)).as("a CPU %s weight takes the CPU road", stored).isTrue();
                for (ScalarType own : FLOATS) {
                    for (Precision p : new Precision[] {Precision.INT8, Precision.INT4}) {
                        QuantizedWeight fast = RowQuantizer.quantize(w, DType.of(own), p);
                        QuantizedWeight front = WeightQuantizer.quantize(w, DType.of(own), p);
                        assertThat(bytes(front.packed())).isEqualTo(bytes(fast.packed()));
                        QuantizedWeight ref = WeightQuantizer.withTorch(w, DType.of(own), p);
                        String what = stored + " as " + own + " " + p;
                        assertThat(fast.scale().scalar_type().value).as(what).isEqualTo(own.value);
                        assertThat(bytes(fast.scale())).as(what + " scales").isEqualTo(bytes(ref.scale()));
                        assertThat(bytes(fast.packed())).as(what + " codes").isEqualTo(bytes(ref.packed()));
                    }
                }
            }
        }
    }

    @Test
    void severalThreadsAndStridedWeightsGiveTheSameCodes() {
        int before = NativeRuntime.threads();
        try (PointerScope scope = new PointerScope()) {
            // 600 rows: many row tasks; a transposed view is not contiguous and is read through a copy
            Tensor w = edgeWeight(256, 600, 9).to(ScalarType.BFloat16).t();
            QuantizedWeight ref = WeightQuantizer.withTorch(w, DType.BFLOAT16, Precision.INT4);
            for (int threads : new int[] {1, 3}) {
                NativeRuntime.setThreads(threads);
                QuantizedWeight fast = RowQuantizer.quantize(w, DType.BFLOAT16, Precision.INT4);
                assertThat(bytes(fast.packed())).as(threads + " threads").isEqualTo(bytes(ref.packed()));
                assertThat(bytes(fast.scale())).isEqualTo(bytes(ref.scale()));
            }
        } finally {
            NativeRuntime.setThreads(before);
        }
    }

    @Test
    void packedInt4UnpacksToTheCpuKernelsInputAndTiles() {
        int before = NativeRuntime.threads();
        try (PointerScope scope = new PointerScope()) {
            QuantizedWeight q = RowQuantizer.quantize(edgeWeight(208, 128, 13), DType.FLOAT32, Precision.INT4);
            Tensor want = WeightQuantizer.unpackInt4(q.packed()).to(ScalarType.Int).add(new Scalar(8));
            for (int threads : new int[] {1, 2}) {
                NativeRuntime.setThreads(threads);
                Tensor got = RowQuantizer.unsignedInt4(q.packed());
                assertThat(got.scalar_type().value).isEqualTo(ScalarType.Int.value);
                assertThat(torch.equal(got, want)).as(threads + " threads").isTrue();
                if (QuantKernels.hasInt4Cpu()) {
                    assertThat(bytes(QuantKernels.int4PackedToCpuTiles(q.packed())))
                            .isEqualTo(bytes(QuantKernels.int4ToCpuTiles(WeightQuantizer.unpackInt4(q.packed()))));
                }
            }
            if (QuantKernels.hasInt4Cpu()) {
                // more rows than one conversion chunk, and a last chunk that is not full: the chunks' tiles are
                // the whole weight's
                QuantizedWeight tall = RowQuantizer.quantize(edgeWeight(2112, 64, 17), DType.BFLOAT16, Precision.INT4);
                assertThat(bytes(QuantKernels.int4PackedToCpuTiles(tall.packed())))
                        .isEqualTo(bytes(QuantKernels.int4ToCpuTiles(WeightQuantizer.unpackInt4(tall.packed()))));
            }
        } finally {
            NativeRuntime.setThreads(before);
        }
    }

    @Test
    void sixteenBitRoundingIsLibtorchsOnBoundaries() {
        try (PointerScope scope = new PointerScope()) {
            // float32 values around every 16-bit float's neighbours: the value, the midpoints and one ulp off
            // them, over all exponents (subnormals, overflow to infinity, NaN included)
            int n = 1 << 16;
            float[] values = new float[n * 5];
            Random random = new Random(3);
            for (int h = 0; h < n; h++) {
                float v = HalfFloats.halfToFloat((short) h);
                float next = HalfFloats.halfToFloat((short) (h + 1));
                float mid = (v + next) / 2f;
                values[5 * h] = v;
                values[5 * h + 1] = Float.isFinite(mid) ? mid : v;
                values[5 * h + 2] = Float.isFinite(mid) ? Math.nextUp(mid) : v;
                values[5 * h + 3] = Float.isFinite(mid) ? Math.nextDown(mid) : v;
                values[5 * h + 4] = Float.intBitsToFloat(random.nextInt());
            }
            Tensor t = torch.empty(values.length);
            t.data_ptr_float().put(values);
            for (ScalarType type : new ScalarType[] {ScalarType.Half, ScalarType.BFloat16}) {
                short[] want = new short[values.length];
                t.to(type).contiguous().view(ScalarType.Short).data_ptr_short().get(want);
                for (int i = 0; i < values.length; i++) {
                    short got = type == ScalarType.Half ? HalfFloats.toHalf(values[i])
                            : HalfFloats.toBFloat16(values[i]);
                    if (Float.isNaN(values[i])) {
                        float back = type == ScalarType.Half ? HalfFloats.halfToFloat(got)
                                : HalfFloats.bfloat16ToFloat(got);
                        assertThat(back).as("NaN stays NaN").isNaN();
                    } else {
                        assertThat(got).as("%s of %s (%08x)", type, values[i], Float.floatToRawIntBits(values[i]))
                                .isEqualTo(want[i]);
                    }
                }
            }
            // decoding every half bit pattern matches libtorch's
            Tensor all = torch.arange(new Scalar(0), new Scalar(n)).to(ScalarType.Int).to(ScalarType.Short)
                    .view(ScalarType.Half).to(ScalarType.Float).contiguous();
            float[] decoded = new float[n];
            all.data_ptr_float().get(decoded);
            for (int h = 0; h < n; h++) {
                float mine = HalfFloats.halfToFloat((short) h);
                if (Float.isNaN(decoded[h])) {
                    assertThat(mine).isNaN();
                } else {
                    assertThat(Float.floatToRawIntBits(mine)).as("half %04x", h)
                            .isEqualTo(Float.floatToRawIntBits(decoded[h]));
                }
            }
        }
    }
}
