package io.github.bigmodel.chatglm.internal;

import static org.assertj.core.api.Assertions.assertThat;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;

/** The attention's matmul: float16 on the CPU through float32, everything else as libtorch does it. */
// PointerScope blocks are used for what they release on close.
@SuppressWarnings("try")
class OpsMatmulTest {

    @Test
    void float16OnTheCpuIsTheFloat32ProductRoundedOnce() {
        try (PointerScope scope = new PointerScope()) {
            torch.manual_seed(3);
            // the shapes of a prompt chunk's scores: [batch, groups, heads per group * rows, head dim] x [.., dim, keys]
            Tensor q = torch.randn(1, 2, 48, 128).to(ScalarType.Half);
            Tensor k = torch.randn(1, 2, 128, 37).to(ScalarType.Half);
            Tensor product = Ops.matmul(q, k);
            assertThat(product.scalar_type().value).isEqualTo(ScalarType.Half.value);
            Tensor wide = q.to(ScalarType.Float).matmul(k.to(ScalarType.Float));
            assertThat(torch.equal(product, wide.to(ScalarType.Half))).isTrue();
            // libtorch's own float16 product sums in float32 too: the two differ by the order of the sums only,
            // within one float16 rounding of each value (2^-11 relative) plus float32 sums (128 terms)
            Tensor own = q.matmul(k).to(ScalarType.Float);
            Tensor bound = wide.abs().mul(new Scalar(Math.pow(2, -10)))
                    .add(new Scalar(1e-3));
            assertThat(own.sub(product.to(ScalarType.Float)).abs().sub(bound).max().item_double()).isLessThanOrEqualTo(0);
        }
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
