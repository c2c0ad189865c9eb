package io.github.bigmodel.core.quant;

import static org.assertj.core.api.Assertions.assertThat;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;

/**
 * Stored int8 codes shared with a checkpoint are used in place only where libtorch's int8 kernel can read them: a
 * view 8 bytes off a 16-byte boundary crashed the JVM in {@code int8pack_mm} on a converted 6B folder.
 */
@SuppressWarnings("try")
class WeightConversionAlignmentTest {

    private static final long OUT = 8;
    private static final long IN = 64;

    @Test
    void misalignedStoredCodesAreCopiedAlignedOnesShared() {
        try (PointerScope scope = new PointerScope()) {
            // One byte buffer standing in for a mapped file: codes at offset 8 (misaligned) and at offset 64.
            Tensor file = torch.randint(-127, 128, new long[] {1024}).to(ScalarType.Char);
            Tensor scale = torch.rand(OUT).add(new Scalar(0.5)).to(ScalarType.BFloat16);
            for (long offset : new long[] {8, 64}) {
                Tensor codes = file.narrow(0, offset, OUT * IN).view(OUT, IN);
                WeightConversion.Target target = WeightConversion.Target
                        .linearWeight(Precision.INT8, DType.BFLOAT16, OUT, IN, Device.CPU).sharingStorage();
                try (WeightConversion.Held held = WeightConversion.convert(codes, scale, target)) {
                    Tensor packed = held.quantized().packed();
                    assertThat(WeightConversion.kernelAligned(packed)).as("offset %d", offset).isTrue();
                    boolean shared = packed.data_ptr().address() == codes.data_ptr().address();
                    assertThat(shared).as("shared at offset %d", offset).isEqualTo(offset % 64 == 0);
                    assertThat(torch.equal(packed, codes)).isTrue();
                    // The kernel runs on the result: what crashed before.
                    Tensor x = torch.randn(1, IN).to(ScalarType.BFloat16);
                    Tensor y = QuantKernels.int8Mm(x, packed, held.quantized().scale());
                    Tensor expected = x.to(ScalarType.Float).matmul(codes.to(ScalarType.Float)
                            .mul(scale.to(ScalarType.Float).unsqueeze(1)).t());
                    assertThat(y.to(ScalarType.Float).sub(expected).abs().max().item_float())
                            .isLessThan(0.05f * expected.abs().max().item_float() + 0.05f);
                }
            }
        }
    }
}
