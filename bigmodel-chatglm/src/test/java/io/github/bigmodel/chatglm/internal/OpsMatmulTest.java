package io.github.bigmodel.chatglm.internal;

import static org.assertj.core.api.Assertions.assertThat;

import io.github.bigmodel.core.kernel.NativeKernels;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** The attention's batched matmul: float16 on the CPU by bigmodel's kernel (or float32), others as libtorch does. */
// PointerScope blocks are used for what they release on close.
@SuppressWarnings("try")
class OpsMatmulTest {

    @ParameterizedTest(name = "native kernels {0}")
    @ValueSource(booleans = {true, false})
    void float16OnTheCpuIsTheExactProductRoundedOnce(boolean nativeKernels) {
        boolean before = NativeKernels.available();
        NativeKernels.setEnabled(nativeKernels);
        try (PointerScope scope = new PointerScope()) {
            torch.manual_seed(3);
            // a prompt chunk's scores and weighted values, as the attention lays them out: [batch, groups, rows, dim]
            // against a permuted key cache, then [.., rows, keys] against [.., keys, dim]
            Tensor q = torch.randn(1, 2, 48, 128).to(ScalarType.Half);
            Tensor cache = torch.randn(37, 1, 2, 128).to(ScalarType.Half);
            Tensor keys = cache.permute(1, 2, 3, 0);
            Tensor values = cache.permute(1, 2, 0, 3);
            Tensor probs = torch.rand(1, 2, 48, 37).to(ScalarType.Half);
            check(Ops.matmul(q, keys), q, keys, new long[] {1, 2, 48, 37});
            check(Ops.matmul(probs, values), probs, values, new long[] {1, 2, 48, 128});
        } finally {
            NativeKernels.setEnabled(before);
        }
    }

    private static void check(Tensor product, Tensor a, Tensor b, long[] shape) {
        assertThat(product.scalar_type().value).isEqualTo(ScalarType.Half.value);
        assertThat(product.sizes().vec().get()).containsExactly(shape);
        Tensor exact = a.to(ScalarType.Double).matmul(b.to(ScalarType.Double));
        // float32 sums (k terms) and one rounding to float16 (2^-11 relative, or half the smallest subnormal step)
        long k = a.size(-1);
        Tensor bound = exact.abs().mul(new Scalar(Math.pow(2, -11)))
                .add(a.abs().to(ScalarType.Double).matmul(b.abs().to(ScalarType.Double)).mul(new Scalar(k * 0x1p-24)))
                .add(new Scalar(Math.pow(2, -25)));
        Tensor error = product.to(ScalarType.Double).sub(exact).abs();
        assertThat(error.sub(bound).max().item_double()).isLessThanOrEqualTo(0);
        assertThat(exact.abs().max().item_double()).isGreaterThan(1);
    }

    @Test
    void otherTypesAreLibtorchsOwnProduct() {
        try (PointerScope scope = new PointerScope()) {
            torch.manual_seed(4);
            for (ScalarType type : new ScalarType[] {ScalarType.BFloat16, ScalarType.Float}) {
                Tensor a = torch.randn(2, 5, 64).to(type);
                Tensor b = torch.randn(2, 64, 7).to(type);
                assertThat(torch.equal(Ops.matmul(a, b), a.matmul(b))).as("%s", type).isTrue();
            }
        }
    }
}
