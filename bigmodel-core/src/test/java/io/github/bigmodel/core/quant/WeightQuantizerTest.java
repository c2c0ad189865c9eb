package io.github.bigmodel.core.quant;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.kernel.NativeKernels;
import io.github.bigmodel.core.testing.KernelAllowance;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;

/** Row-wise symmetric quantization, THUDM's int4 packing, and QuantizedLinear's kernels against dequantized math. */
// PointerScope blocks are used for what they release on close.
@SuppressWarnings("try")
class WeightQuantizerTest {

    private static float[] floats(Tensor t) {
        Tensor c = t.to(ScalarType.Float).contiguous();
        float[] out = new float[(int) c.numel()];
        c.data_ptr_float().get(out);
        return out;
    }

    private static byte[] bytes(Tensor t) {
        // Same bits viewed unsigned: libtorch only hands out byte pointers of uint8 tensors.
        Tensor c = t.contiguous().view(ScalarType.Byte);
        byte[] out = new byte[(int) c.numel()];
        c.data_ptr_byte().get(out);
        return out;
    }

    @Test
    void halfAndBfloat16CodesAreComputedAgainstTheStoredScale() {
        // THUDM divides by the scale it keeps (half), and its quotient is itself rounded to the weight's dtype
        // before rounding to a code: a code is within half a step of the stored scale plus half an ulp of the
        // quotient (2^-8 relative for bfloat16, 2^-11 for half). The exact codes are checked against an
        // independent emulation of THUDM's rule in bigmodel-cli's ThudmCodesTest.
        try (PointerScope scope = new PointerScope()) {
            torch.manual_seed(11);
            for (ScalarType type : new ScalarType[] {ScalarType.BFloat16, ScalarType.Half}) {
                Tensor w = torch.randn(64, 256).to(type);
                float[] values = floats(w);
                for (Precision p : new Precision[] {Precision.INT8, Precision.INT4}) {
                    QuantizedWeight q = WeightQuantizer.quantize(w, p);
                    assertThat(q.scale().scalar_type().value).isEqualTo(type.value);
                    float[] scale = floats(q.scale());
                    byte[] codes = bytes(WeightQuantizer.codes(q));
                    float quotientUlp = type == ScalarType.BFloat16 ? 0x1p-8f : 0x1p-11f;
                    for (int i = 0; i < values.length; i++) {
                        float s = scale[i / 256];
                        float quotient = Math.abs(values[i] / s);
                        assertThat(Math.abs(values[i] - codes[i] * s)).as("%s %s element %d", type, p, i)
                                .isLessThanOrEqualTo(s * (0.5f + quotient * quotientUlp) * (1 + 1e-5f));
                    }
                }
            }
        }
    }

    @Test
    void codesAreRoundedQuotientsOfTheRowAbsmaxScale() {
        try (PointerScope scope = new PointerScope()) {
            torch.manual_seed(7);
            Tensor w = torch.randn(5, 12);
            float[] values = floats(w);
            for (Precision p : new Precision[] {Precision.INT8, Precision.INT4}) {
                QuantizedWeight q = WeightQuantizer.quantize(w, p);
                float[] scale = floats(q.scale());
                byte[] codes = bytes(WeightQuantizer.codes(q));
                for (int r = 0; r < 5; r++) {
                    float absmax = 0;
                    for (int c = 0; c < 12; c++) {
                        absmax = Math.max(absmax, Math.abs(values[r * 12 + c]));
                    }
                    assertThat(scale[r]).isCloseTo(absmax / p.maxQuantized(), org.assertj.core.data.Offset.offset(1e-6f));
                    for (int c = 0; c < 12; c++) {
                        assertThat((int) codes[r * 12 + c]).as("row %d col %d", r, c)
                                .isEqualTo(Math.round(values[r * 12 + c] / scale[r]));
                    }
                }
                float[] back = floats(WeightQuantizer.dequantize(q, ScalarType.Float));
                for (int i = 0; i < back.length; i++) {
                    assertThat(Math.abs(back[i] - values[i])).isLessThanOrEqualTo(scale[i / 12] / 2 + 1e-6f);
                }
            }
        }
    }

    @Test
    void int4PacksTheFirstOfEachPairInTheHighNibble() {
        try (PointerScope scope = new PointerScope()) {
            Tensor values = torch.randint(-8, 8, new long[] {3, 8}).to(ScalarType.Char);
            byte[] v = bytes(values);
            byte[] packed = bytes(WeightQuantizer.packInt4(values));
            assertThat(packed).hasSize(12);
            for (int i = 0; i < packed.length; i++) {
                assertThat(packed[i] >> 4).isEqualTo((int) v[2 * i]);
                assertThat(((packed[i] & 0x0F) ^ 8) - 8).isEqualTo((int) v[2 * i + 1]);
            }
            assertThat(bytes(WeightQuantizer.unpackInt4(WeightQuantizer.packInt4(values)))).containsExactly(v);
        }
    }

    @Test
    void badInputsAreNamed() {
        try (PointerScope scope = new PointerScope()) {
            assertThatThrownBy(() -> WeightQuantizer.quantize(torch.randn(4, 5), Precision.INT4))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("even");
            assertThatThrownBy(() -> WeightQuantizer.quantize(torch.randn(4), Precision.INT8))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("2-d");
            assertThatThrownBy(() -> WeightQuantizer.quantize(torch.randn(4, 4), Precision.BF16))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("int8 or int4");
            assertThatThrownBy(() -> new QuantizedWeight(torch.zeros(4, 3).to(ScalarType.Char), torch.ones(4),
                    Precision.INT4, 8)).isInstanceOf(IllegalArgumentException.class).hasMessageContaining("[4, 3]");
            assertThat(Precision.parse("bf16")).isEqualTo(Precision.BF16);
            assertThat(Precision.parse("INT4")).isEqualTo(Precision.INT4);
            assertThatThrownBy(() -> Precision.parse("int3")).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("int3");
        }
    }

    @Test
    void quantizedLinearMatchesTheDequantizedWeightAndGivesItsLayoutBack() {
        try (PointerScope scope = new PointerScope()) {
            torch.manual_seed(11);
            long in = 256;
            long out = 96;
            Tensor w = torch.randn(out, in);
            Tensor bias = torch.randn(out);
            Tensor x = torch.randn(2, 3, in);
            for (Precision p : new Precision[] {Precision.INT8, Precision.INT4}) {
                for (DType act : new DType[] {DType.FLOAT32, DType.BFLOAT16}) {
                    QuantizedLinear fc = new QuantizedLinear(in, out, true, act);
                    fc.planPrecision(p, act);
                    assertThat(fc.weight().dtype()).isEqualTo(p.dtype());
                    assertThat(fc.weight().device()).isEqualTo(Device.META);
                    QuantizedWeight q = WeightQuantizer.quantize(w.to(act.scalarType()), p);
                    byte[] packed = bytes(q.packed());
                    Tensor dense = WeightQuantizer.dequantize(q, act.scalarType());
                    fc.setQuantized(q);
                    fc.bias().set(bias.to(act.scalarType()));
                    Tensor xa = x.to(act.scalarType());
                    float[] got = floats(fc.forward(xa));
                    float[] want = floats(torch.linear(xa.to(ScalarType.Float), dense.to(ScalarType.Float),
                            new org.bytedeco.pytorch.TensorOptional(bias.to(act.scalarType()).to(ScalarType.Float))));
                    double worst = 0;
                    double largest = 0;
                    for (int i = 0; i < got.length; i++) {
                        worst = Math.max(worst, Math.abs(got[i] - want[i]));
                        largest = Math.max(largest, Math.abs(want[i]));
                    }
                    // bfloat16 keeps 8 significant bits: its outputs round at about 0.4% of their size. float32:
                    // float sums, and with the native kernels x within half an int16 step (1/65534 of its largest)
                    double xStep = NativeKernels.available()
                            ? KernelAllowance.ACTIVATION * xa.abs().max().item_double()
                                    * dense.to(ScalarType.Double).abs().sum(new long[] {1}).max().item_double()
                            : 0;
                    double tol = act == DType.FLOAT32 ? 1e-4 + xStep : 0.01 * largest;
                    assertThat(worst).as("%s %s", p, act).isLessThan(tol);
                    assertThat(bytes(fc.quantizedWeight().packed())).as("%s %s layout", p, act).containsExactly(packed);
                    fc.toMeta();
                }
            }
        }
    }

    @Test
    void aPlannedLayerCountsPackedRowsAndHalfPrecisionScales() {
        QuantizedLinear fc = new QuantizedLinear(4096, 1024, true, DType.FLOAT16);
        assertThat(fc.byteSize()).isEqualTo(1024L * 4096 * 2 + 1024L * 2);
        fc.planPrecision(Precision.INT4);
        // Packed rows (half a byte per weight), one half-precision scale per row, the float16 bias.
        assertThat(fc.byteSize()).isEqualTo(1024L * (2048 + 2) + 1024L * 2);
        fc.planPrecision(Precision.INT8);
        assertThat(fc.byteSize()).isEqualTo(1024L * (4096 + 2) + 1024L * 2);
        // Planned back to floating point on meta: weight_scale leaves the state dict.
        fc.planPrecision(Precision.FP16);
        assertThat(fc.weightScale()).isNull();
        assertThat(fc.stateDict()).doesNotContainKey(QuantizedLinear.SCALE_NAME);
        assertThat(fc.byteSize()).isEqualTo(1024L * 4096 * 2 + 1024L * 2);
    }
}
