package io.github.bigmodel.core.quant;

import static org.assertj.core.api.Assertions.assertThat;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * A quantized layer of a float16 model on the CPU runs libtorch's weight-only kernel in bfloat16 (the dtype it
 * vectorizes) and hands back float16: checked against the float32 product of the same dequantized weight, for one
 * row and a prompt-sized input, with one kernel table (the bf16 one) for both bf16 and fp16 activations.
 */
// PointerScope blocks are used for what they release on close.
@SuppressWarnings("try")
class QuantizedLinearHalfActivationsTest {

    @ParameterizedTest
    @EnumSource(value = Precision.class, names = {"INT8", "INT4"})
    void float16ActivationsComputeInBfloat16WithinItsRounding(Precision p) {
        try (PointerScope scope = new PointerScope()) {
            torch.manual_seed(9);
            long in = 512;
            long out = 96;
            QuantizedLinear fc = new QuantizedLinear(in, out, false, DType.FLOAT16);
            fc.planPrecision(p);
            fc.setQuantized(WeightQuantizer.quantize(torch.randn(out, in), p));
            boolean kernel = p == Precision.INT8 ? QuantKernels.hasInt8Cpu() : fc.usesCpuTiles(Device.CPU);
            Tensor dense;
            try (QuantizedWeight q = fc.quantizedWeight()) {
                dense = WeightQuantizer.dequantize(q, ScalarType.Float);
            }
            for (long rows : new long[] {1, 17}) {
                Tensor x = torch.randn(rows, 1, in).to(ScalarType.Half);
                Tensor y = fc.forward(x);
                assertThat(y.scalar_type().value).isEqualTo(ScalarType.Half.value);
                assertThat(y.sizes().vec().get()).containsExactly(rows, 1, out);
                Tensor ref = torch.linear(x.to(ScalarType.Float), dense);
                double scale = ref.abs().max().item_double();
                double err = y.to(ScalarType.Float).sub(ref).abs().max().item_double();
                // bf16 rounding of the activations (2^-9 each, summed over 512 terms of random sign) and of the
                // kernel's output, then fp16's: a few parts in a thousand of the output's scale.
                assertThat(err).as("%s, %d rows", p, rows).isLessThan(1e-2 * scale);
            }
            if (kernel) {
                fc.forward(torch.randn(1, in).to(ScalarType.BFloat16));
                assertThat(fc.kernelTableCount()).as("one bf16 table serves fp16 and bf16 activations").isEqualTo(1);
            }
        }
    }
}
