package io.github.bigmodel.core.kernel;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.github.bigmodel.core.NativeRuntime;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.ScalarTypeOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * The native layer operations against the libtorch operation-by-operation forms they replace (the forms ChatGLM2/3's
 * modeling runs without them): rotary bit for bit, RMSNorm, SwiGLU and one-position attention within a rounding of
 * the dtype (a float32 sum or {@code exp} may round differently), in float32, bfloat16 and float16, with widths that
 * leave vector tails, batches, grouped and ungrouped heads, masks, one and several threads, and bad inputs refused.
 */
// PointerScope blocks are used for what they release on close.
@SuppressWarnings("try")
class NativeOpsTest {

    @BeforeAll
    static void init() {
        NativeRuntime.applyThreads();
    }

    private static void requireNative() {
        assumeTrue(NativeOps.available(), "native kernels not available on this machine");
    }

    private static ScalarType type(String name) {
        return switch (name) {
            case "f32" -> ScalarType.Float;
            case "bf16" -> ScalarType.BFloat16;
            default -> ScalarType.Half;
        };
    }

    /** One unit in the last place at 1.0 for the dtype. */
    private static double ulp(String name) {
        return switch (name) {
            case "f32" -> 0x1p-23;
            case "bf16" -> 0x1p-7;
            default -> 0x1p-10;
        };
    }

    private static double maxAbs(Tensor t) {
        return t.to(ScalarType.Double).abs().max().item_double();
    }

    private static double maxDiff(Tensor a, Tensor b) {
        return maxAbs(a.to(ScalarType.Double).sub(b.to(ScalarType.Double)));
    }

    /** Every element within {@code ulps} units in the last place of its reference value (plus a tiny floor). */
    private static void assertWithinUlps(Tensor got, Tensor want, String dtype, double ulps) {
        Tensor g = got.to(ScalarType.Double);
        Tensor w = want.to(ScalarType.Double);
        Tensor bound = w.abs().mul(new Scalar(ulps * ulp(dtype))).add(new Scalar(1e-30));
        double worst = g.sub(w).abs().div(bound).max().item_double();
        assertThat(worst).as("worst error in units of %s ulps", ulps).isLessThanOrEqualTo(1.0);
    }

    @ParameterizedTest
    @CsvSource({"f32,1,4096", "bf16,1,4096", "f16,1,4096", "bf16,3,37", "f16,5,8", "f32,64,4096", "bf16,64,4096"})
    void rmsNormMatchesTheOperationByOperationForm(String dtype, int rows, int width) {
        requireNative();
        try (PointerScope scope = new PointerScope()) {
            ScalarType t = type(dtype);
            Tensor x = torch.randn(rows, width).mul(new Scalar(3.0)).to(t);
            Tensor w = torch.rand(width).add(new Scalar(0.5)).to(t);
            Tensor xf = x.to(ScalarType.Float);
            Tensor variance = xf.mul(xf).mean(new long[] {-1}, true, new ScalarTypeOptional());
            Tensor want = w.mul(x.mul(variance.add(new Scalar(1e-5)).rsqrt())).to(t);
            Tensor got = NativeOps.rmsNorm(x, w, 1e-5);
            assertThat(got.scalar_type().value).isEqualTo(t.value);
            assertThat(got.sizes().vec().get()).containsExactly(rows, width);
            // the float32 sum of squares is taken in another order: its last bits differ, which for half dtypes
            // is at most one rounding of the result apart, for float32 a few units of its last place
            assertWithinUlps(got, want, dtype, dtype.equals("f32") ? 16.0 : 1.0);
        }
    }

    @ParameterizedTest
    @CsvSource({"f32,1,1,34,128", "bf16,1,1,34,128", "f16,1,1,34,128", "bf16,7,2,6,8", "f16,3,2,5,24",
        "f32,4,3,3,16"})
    void rotaryInPlaceIsTheLibtorchFormBitForBit(String dtype, int len, int batch, int heads, int dim) {
        requireNative();
        try (PointerScope scope = new PointerScope()) {
            ScalarType t = type(dtype);
            long extra = 2L * dim; // values after the rotated heads (a fused projection's values) stay as they are
            long width = (long) heads * dim + extra;
            Tensor x = torch.randn(len, batch, width).to(t);
            long half = dim / 4;
            Tensor angles = torch.rand(len, batch, 1, half).mul(new Scalar(20.0));
            Tensor cos = torch.cos(angles).to(t);
            Tensor sin = torch.sin(angles).to(t);
            Tensor heads4 = x.narrow(2, 0, (long) heads * dim).reshape(len, batch, heads, dim);
            Tensor want = NativeOps.rotaryOps(heads4, cos, sin).reshape(len, batch, (long) heads * dim);
            Tensor tail = x.narrow(2, (long) heads * dim, extra).clone();
            NativeOps.rotaryInPlace(x, heads, dim, cos.contiguous(), sin.contiguous());
            assertThat(torch.equal(x.narrow(2, 0, (long) heads * dim), want)).as("rotated heads").isTrue();
            assertThat(torch.equal(x.narrow(2, (long) heads * dim, extra), tail)).as("values after them").isTrue();
        }
    }

    @ParameterizedTest
    @CsvSource({"f32,1,13696", "bf16,1,13696", "f16,1,13696", "bf16,3,37", "f16,2,5", "bf16,9,4096"})
    void swigluMatchesSiluTimesGate(String dtype, int rows, int ffn) {
        requireNative();
        try (PointerScope scope = new PointerScope()) {
            ScalarType t = type(dtype);
            Tensor up = torch.randn(rows, 2L * ffn).mul(new Scalar(4.0)).to(t);
            Tensor want = torch.silu(up.narrow(-1, 0, ffn)).mul(up.narrow(-1, ffn, ffn));
            Tensor got = NativeOps.swiglu(up);
            assertThat(got.sizes().vec().get()).containsExactly(rows, ffn);
            // silu's exp differs from libtorch's in its last float32 bits: one rounding of silu, one of the product
            assertWithinUlps(got, want, dtype, dtype.equals("f32") ? 16.0 : 2.0);
        }
    }

    @Test
    void swigluOfLargeAndInfiniteInputsFollowsSilu() {
        requireNative();
        try (PointerScope scope = new PointerScope()) {
            Tensor up = torch.tensor(new float[] {-200f, 200f, Float.NEGATIVE_INFINITY, 0f, 1f, 1f, 1f, 1f})
                    .view(1, 8);
            float[] got = new float[4];
            NativeOps.swiglu(up).contiguous().data_ptr_float().get(got);
            assertThat(got[0]).isEqualTo(-0.0f);
            assertThat(got[1]).isEqualTo(200f);
            assertThat(Float.isNaN(got[2]) || got[2] == 0f).as("silu(-inf) as libtorch: nan or 0").isTrue();
            assertThat(got[3]).isEqualTo(0f);
        }
    }

    /** ChatGLM2/3's attention of L=1 query rows against cached keys, as separate libtorch operations. */
    private static Tensor attendReference(Tensor q, Tensor k, Tensor v, int heads, int groups, Tensor mask, double pre,
            double post) {
        long batch = k.size(1);
        long keyLen = k.size(0);
        long dim = k.size(3);
        long perGroup = heads / groups;
        Tensor qg = q.view(batch, heads, dim).view(batch, groups, perGroup, dim);
        Tensor scores = qg.matmul(k.permute(1, 2, 3, 0)).view(batch, heads, 1, keyLen);
        scores.mul_(new Scalar(pre));
        scores = scores.to(ScalarType.Float);
        scores.mul_(new Scalar(post));
        if (mask != null) {
            scores.masked_fill_(mask.view(batch, 1, 1, keyLen), new Scalar(Double.NEGATIVE_INFINITY));
        }
        Tensor probs = scores.softmax(-1, new ScalarTypeOptional()).to(v.scalar_type());
        return probs.view(batch, groups, perGroup, keyLen).matmul(v.permute(1, 2, 0, 3)).reshape(batch,
                (long) heads * dim);
    }

    @ParameterizedTest
    @CsvSource({"f32,1,1,32,2,128,1,false", "bf16,1,40,32,2,128,1,false", "f16,1,40,32,2,128,1,true",
        "bf16,2,17,6,6,24,1,true", "f32,3,9,8,1,8,2,true", "bf16,1,300,32,2,16,1,false",
        "f16,2,300,32,2,16,3,true", "f32,1,1000,4,2,40,1,false"})
    void attendOneMatchesTheOperationByOperationForm(String dtype, int batch, int keys, int heads, int groups,
            int dim, int threads, boolean masked) {
        requireNative();
        int before = torch.get_num_threads();
        torch.set_num_threads(threads);
        try (PointerScope scope = new PointerScope()) {
            ScalarType t = type(dtype);
            // q as rows of a fused projection: [batch, heads*dim + extra], read through a narrowed view
            long qWidth = (long) heads * dim;
            Tensor fused = torch.randn(batch, qWidth + 2L * groups * dim).to(t);
            Tensor q = fused.narrow(1, 0, qWidth);
            // keys and values: the filled prefix of larger cache buffers
            Tensor kBuf = torch.randn(keys + 5L, batch, groups, dim).to(t);
            Tensor vBuf = torch.randn(keys + 5L, batch, groups, dim).to(t);
            Tensor k = kBuf.narrow(0, 0, keys);
            Tensor v = vBuf.narrow(0, 0, keys);
            Tensor mask = null;
            if (masked) {
                mask = torch.rand(batch, keys).lt(new Scalar(0.3));
                mask.narrow(1, keys - 1, 1).fill_(new Scalar(0)); // at least one key visible
            }
            double coeff = 3.0;
            double pre = 1.0 / (Math.sqrt(dim) * coeff);
            Tensor want = attendReference(q, k, v, heads, groups, mask, pre, coeff);
            Tensor got = NativeOps.attendOne(q, k, v, heads, groups, mask, pre, coeff);
            assertThat(got.sizes().vec().get()).containsExactly(batch, qWidth);
            assertThat(got.scalar_type().value).isEqualTo(t.value);
            // scores, probabilities and outputs are each rounded to the dtype on both sides, from float32 sums in
            // different orders: a few roundings of the dtype at the values' scale
            double scale = maxAbs(v);
            assertThat(maxDiff(got, want)).isLessThanOrEqualTo(4 * ulp(dtype) * scale + 1e-6);
        } finally {
            torch.set_num_threads(before);
        }
    }

    @Test
    void attendOneWithAllKeysMaskedGivesNanAsSoftmaxDoes() {
        requireNative();
        try (PointerScope scope = new PointerScope()) {
            Tensor q = torch.randn(1, 16);
            Tensor k = torch.randn(3, 1, 1, 16);
            Tensor mask = torch.ones(new long[] {1, 3}, new org.bytedeco.pytorch.TensorOptions(ScalarType.Bool));
            Tensor got = NativeOps.attendOne(q, k, k, 1, 1, mask, 0.25, 1.0);
            assertThat(got.isnan().all().item_bool()).isTrue();
        }
    }

    @Test
    void badInputsAreRefused() {
        requireNative();
        try (PointerScope scope = new PointerScope()) {
            Tensor q = torch.randn(1, 64);
            Tensor k = torch.randn(4, 1, 2, 16);
            assertThatThrownBy(() -> NativeOps.attendOne(q, k.to(ScalarType.BFloat16), k.to(ScalarType.BFloat16), 4, 2,
                    null, 1, 1)).isInstanceOf(IllegalArgumentException.class).hasMessageContaining("one dtype");
            assertThatThrownBy(() -> NativeOps.attendOne(q, k, k, 3, 2, null, 1, 1))
                    .isInstanceOf(IllegalArgumentException.class);
            assertThatThrownBy(() -> NativeOps.attendOne(q, k, k, 4, 2, torch.zeros(1, 3).to(ScalarType.Bool), 1, 1))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("mask");
            assertThatThrownBy(() -> NativeOps.attendOne(q, k.narrow(0, 0, 0), k.narrow(0, 0, 0), 4, 2, null, 1, 1))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("at least one key");
            assertThatThrownBy(() -> NativeOps.attendOne(torch.randn(1, 32), k, k, 4, 2, null, 1, 1))
                    .isInstanceOf(IllegalArgumentException.class);
            Tensor x = torch.randn(2, 8, 4).transpose(1, 2);
            assertThatThrownBy(() -> NativeOps.rotaryInPlace(x, 1, 4, torch.randn(2, 8, 1), torch.randn(2, 8, 1)))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("contiguous");
            assertThatThrownBy(() -> NativeOps.rotaryInPlace(torch.randn(2, 8), 3, 4, torch.randn(2, 1),
                    torch.randn(2, 1))).isInstanceOf(IllegalArgumentException.class);
            assertThatThrownBy(() -> NativeOps.rmsNorm(torch.randn(2, 8), torch.randn(7), 1e-5))
                    .isInstanceOf(IllegalArgumentException.class);
            assertThatThrownBy(() -> NativeOps.rmsNorm(torch.randn(2, 8).to(ScalarType.Double), torch.randn(8), 1e-5))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("float32, bfloat16 or float16");
            assertThatThrownBy(() -> NativeOps.swiglu(torch.randn(2, 7))).isInstanceOf(IllegalArgumentException.class);
        }
    }
}
