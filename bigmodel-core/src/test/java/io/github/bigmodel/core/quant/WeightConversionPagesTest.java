package io.github.bigmodel.core.quant;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.kernel.NativeKernels;
import io.github.bigmodel.core.testing.ProcMaps;
import java.io.IOException;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;

/**
 * A weight that loading must convert (bf16 stored, fp16 wanted) is made in memory advised into 2 MiB pages, as a copy
 * is: libtorch's own conversion gave it 4 KiB pages (the 6B in fp16 held 0 of 11.8 GB in huge pages, loaded in 26-28 s
 * instead of 7 and decoded 5-10% slower). A weight that needs nothing stays the stored memory.
 */
@SuppressWarnings("try")
class WeightConversionPagesTest {

    @Test
    void aConvertedWeightIsAdvisedIntoHugePagesASharedOneStaysInPlace() throws IOException {
        assumeTrue(NativeKernels.supported(), "bigmodel's native library is not loaded on this machine");
        try (PointerScope scope = new PointerScope()) {
            Tensor stored = torch.randn(2048, 2048).to(ScalarType.BFloat16); // 8 MiB, standing in for a mapped file
            try (WeightConversion.Held converted = WeightConversion.convert(stored, null,
                    WeightConversion.Target.tensor(DType.FLOAT16, Device.CPU).sharingStorage());
                 WeightConversion.Held shared = WeightConversion.convert(stored, null,
                    WeightConversion.Target.tensor(DType.BFLOAT16, Device.CPU).sharingStorage())) {
                Tensor fp16 = converted.tensor();
                assertThat(fp16.scalar_type().value).isEqualTo(ScalarType.Half.value);
                assertThat(torch.equal(fp16, stored.to(ScalarType.Half))).as("values converted").isTrue();
                assertThat(ProcMaps.flagsOfMappingAt(fp16.data_ptr().address() + fp16.nbytes() / 2))
                        .as("VmFlags of the converted weight's memory").contains(" hg");
                assertThat(shared.tensor().data_ptr().address()).as("nothing to convert: the stored memory")
                        .isEqualTo(stored.data_ptr().address());
            }
        }
    }
}
