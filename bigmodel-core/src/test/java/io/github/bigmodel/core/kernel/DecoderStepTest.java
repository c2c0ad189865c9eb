package io.github.bigmodel.core.kernel;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.github.bigmodel.core.NativeRuntime;
import io.github.bigmodel.core.kernel.DecoderStep.Projection;
import io.github.bigmodel.core.kernel.NativeKernels.Format;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * The fused decoder block against the same block run op by op with the native operations it is made of (what
 * ChatGLM2/3's modeling runs without it): output and the cache row it writes equal bit for bit, for every
 * activation dtype and weight format pair the modeling can hand it, with and without biases, grouped and ungrouped
 * heads, residuals from the norms, one and several threads, positions from the first to deep in the cache.
 */
// PointerScope blocks are used for what they release on close.
@SuppressWarnings("try")
class DecoderStepTest {

    @BeforeAll
    static void init() {
        NativeRuntime.applyThreads();
    }

    private static void requireNative() {
        assumeTrue(DecoderStep.available(), "native kernels not available on this machine");
    }

    private static ScalarType type(String name) {
        return switch (name) {
            case "f32" -> ScalarType.Float;
            case "bf16" -> ScalarType.BFloat16;
            default -> ScalarType.Half;
        };
    }

    /** A random weight [n, k] in {@code format}, with float32 scales for int8/int4 and a bias when asked. */
    private static Projection projection(Format format, long n, long k, boolean bias, ScalarType activations) {
        Tensor w;
        Tensor scale = null;
        switch (format) {
            case BF16 -> w = torch.randn(n, k).mul(new Scalar(0.05)).to(ScalarType.BFloat16);
            case FP16 -> w = torch.randn(n, k).mul(new Scalar(0.05)).to(ScalarType.Half);
            case INT8 -> w = torch.randint(-127, 128, new long[] {n, k}).to(ScalarType.Char);
            default -> w = torch.randint(-128, 128, new long[] {n, k / 2}).to(ScalarType.Char);
        }
        if (format.quantized()) {
            scale = torch.rand(n).mul(new Scalar(format == Format.INT8 ? 4e-4 : 6e-3)).add(new Scalar(1e-4));
        }
        Tensor b = bias ? torch.randn(n).mul(new Scalar(0.1)).to(activations) : null;
        return new Projection(format, w.contiguous(), scale, b);
    }

    /** The projection as the op-by-op form runs it: the native matmul, then the bias added by libtorch. */
    private static Tensor linear(Projection p, Tensor x) {
        return NativeKernels.linear(p.format(), x, p.weight(), p.scale(), p.bias());
    }

    private static Tensor opByOp(Tensor x, Tensor norm1, Projection qkv, Tensor cos, Tensor sin, Tensor keys,
            Tensor values, long pos, Projection dense, Tensor norm2, Projection up, Projection down,
            DecoderStep.Shape s) {
        long heads = s.heads();
        long groups = s.groups();
        long dim = s.headDim();
        Tensor n1 = NativeOps.rmsNorm(x, norm1, s.eps());
        Tensor all = linear(qkv, n1.view(1, -1)).contiguous();
        NativeOps.rotaryInPlace(all, heads + groups, dim, cos, sin);
        long qWidth = heads * dim;
        long kvWidth = groups * dim;
        keys.narrow(0, pos, 1).copy_(all.narrow(1, qWidth, kvWidth).view(1, 1, groups, dim));
        values.narrow(0, pos, 1).copy_(all.narrow(1, qWidth + kvWidth, kvWidth).view(1, 1, groups, dim));
        Tensor ctx = NativeOps.attendOne(all.narrow(1, 0, qWidth), keys.narrow(0, 0, pos + 1),
                values.narrow(0, 0, pos + 1), heads, groups, null, s.preScale(), s.postScale());
        Tensor h = (s.residualFromNorm() ? n1 : x).add(linear(dense, ctx).view(x.sizes().vec().get()));
        Tensor n2 = NativeOps.rmsNorm(h, norm2, s.eps());
        Tensor gated = NativeOps.swiglu(linear(up, n2.view(1, -1)));
        return (s.residualFromNorm() ? n2 : h).add(linear(down, gated).view(x.sizes().vec().get()));
    }

    @ParameterizedTest
    @CsvSource({
        // activations, weights, hidden, heads, groups, headDim, ffn, position, bias, residualFromNorm, threads
        "bf16, BF16, 256, 8, 2, 32, 320, 0, true, false, 2",
        "bf16, BF16, 256, 8, 2, 32, 320, 37, true, false, 1",
        "bf16, INT8, 256, 8, 2, 32, 320, 37, true, true, 2",
        "bf16, INT4, 256, 8, 2, 32, 320, 300, false, false, 2",
        "f16, FP16, 192, 6, 6, 32, 200, 5, true, false, 2",
        "f16, INT8, 192, 6, 6, 32, 200, 5, false, true, 3",
        "f16, INT4, 192, 6, 6, 32, 200, 64, true, false, 2",
        "f32, INT8, 160, 4, 1, 40, 96, 9, true, false, 2",
        "f32, INT4, 160, 4, 1, 40, 96, 130, true, true, 1"})
    void equalsTheOpByOpFormBitForBit(String activations, Format format, long hidden, long heads, long groups,
            long headDim, long ffn, long position, boolean bias, boolean residualFromNorm, int threads) {
        requireNative();
        int before = torch.get_num_threads();
        torch.set_num_threads(threads);
        try (PointerScope scope = new PointerScope()) {
            torch.manual_seed(position * 31 + hidden);
            ScalarType t = type(activations);
            Tensor x = torch.randn(1, 1, hidden).to(t);
            Tensor norm1 = torch.rand(hidden).add(new Scalar(0.5)).to(t);
            Tensor norm2 = torch.rand(hidden).add(new Scalar(0.5)).to(t);
            Projection qkv = projection(format, (heads + 2 * groups) * headDim, hidden, bias, t);
            Projection dense = projection(format, hidden, heads * headDim, bias, t);
            Projection up = projection(format, 2 * ffn, hidden, bias, t);
            Projection down = projection(format, hidden, ffn, bias, t);
            long half = headDim / 4;
            Tensor angles = torch.rand(1, 1, 1, half).mul(new Scalar(6.0));
            Tensor cos = torch.cos(angles).to(t);
            Tensor sin = torch.sin(angles).to(t);
            Tensor keys = torch.randn(position + 3, 1, groups, headDim).to(t);
            Tensor values = torch.randn(position + 3, 1, groups, headDim).to(t);
            Tensor keys2 = keys.clone();
            Tensor values2 = values.clone();
            double coeff = 3.0;
            DecoderStep.Shape shape = new DecoderStep.Shape(heads, groups, headDim, 1e-5,
                    1.0 / (Math.sqrt(headDim) * coeff), coeff, residualFromNorm);

            Tensor want = opByOp(x, norm1, qkv, cos, sin, keys, values, position, dense, norm2, up, down, shape);
            long calls = DecoderStep.calls();
            Tensor got = DecoderStep.run(x, norm1, qkv, cos, sin, keys2, values2, position, dense, norm2, up, down,
                    shape);

            assertThat(DecoderStep.calls()).isEqualTo(calls + 1);
            assertThat(got.sizes().vec().get()).containsExactly(1, 1, hidden);
            assertThat(got.scalar_type().value).isEqualTo(t.value);
            assertThat(torch.equal(got, want)).as("block output bit for bit").isTrue();
            assertThat(torch.equal(keys2, keys)).as("key cache, the new row included, bit for bit").isTrue();
            assertThat(torch.equal(values2, values)).as("value cache bit for bit").isTrue();
            // not vacuous: the block changed its input and wrote a row that was random before
            assertThat(torch.equal(got, x)).isFalse();
        } finally {
            torch.set_num_threads(before);
        }
    }

    @Test
    void badInputsAreRefusedBeforeTheNativeCall() {
        requireNative();
        try (PointerScope scope = new PointerScope()) {
            ScalarType t = ScalarType.BFloat16;
            Tensor x = torch.randn(1, 1, 64).to(t);
            Tensor norm = torch.ones(64).to(t);
            Projection qkv = projection(Format.BF16, 8 * 16, 64, false, t);
            Projection dense = projection(Format.BF16, 64, 4 * 16, false, t);
            Projection up = projection(Format.BF16, 64, 64, false, t);
            Projection down = projection(Format.BF16, 64, 32, false, t);
            Tensor cs = torch.ones(1, 4).to(t);
            Tensor cache = torch.zeros(4, 1, 2, 16).to(t);
            DecoderStep.Shape shape = new DecoderStep.Shape(4, 2, 16, 1e-5, 0.25, 1.0, false);
            long calls = DecoderStep.calls();

            assertThatThrownBy(() -> DecoderStep.run(x, norm, qkv, cs, cs, cache, cache.clone(), 4, dense, norm, up,
                    down, shape)).isInstanceOf(IllegalArgumentException.class).hasMessageContaining("position 4");
            assertThatThrownBy(() -> DecoderStep.run(x, norm, dense, cs, cs, cache, cache.clone(), 1, dense, norm, up,
                    down, shape)).isInstanceOf(IllegalArgumentException.class).hasMessageContaining("qkv");
            assertThatThrownBy(() -> DecoderStep.run(x, norm, qkv, cs, cs, cache.to(ScalarType.Float),
                    cache.to(ScalarType.Float), 1, dense, norm, up, down, shape))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("x's dtype");
            assertThatThrownBy(() -> DecoderStep.run(torch.randn(1, 2, 64).to(t), norm, qkv, cs, cs, cache,
                    cache.clone(), 1, dense, norm, up, down, shape)).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("one position");
            assertThatThrownBy(() -> DecoderStep.run(x, norm, qkv, torch.ones(1, 9).to(t), torch.ones(1, 9).to(t),
                    cache, cache.clone(), 1, dense, norm, up, down, shape))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("rotary");
            Projection unscaled = new Projection(Format.INT8, torch.zeros(64, 32).to(ScalarType.Char), null, null);
            assertThatThrownBy(() -> DecoderStep.run(x, norm, qkv, cs, cs, cache, cache.clone(), 1, dense, norm, up,
                    unscaled, shape)).isInstanceOf(IllegalArgumentException.class).hasMessageContaining("scales");
            assertThat(DecoderStep.calls()).isEqualTo(calls);
        }
    }
}
