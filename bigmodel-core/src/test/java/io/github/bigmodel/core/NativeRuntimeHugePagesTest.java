package io.github.bigmodel.core;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.github.bigmodel.core.kernel.NativeKernels;
import io.github.bigmodel.core.testing.ProcMaps;
import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import org.bytedeco.pytorch.BoolOptional;
import org.bytedeco.pytorch.LongOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@link NativeRuntime#adviseHugePages}: on a file mapped the way checkpoints are (libtorch's {@code from_file},
 * copy-on-write), the advice reaches the kernel: the mapping's 2 MiB-aligned middle carries {@code hg} in
 * {@code /proc/self/smaps}, and the bytes read through it are unchanged. And {@link NativeKernels#populate}: one
 * call maps every page of such a mapping (its resident size goes from nothing to all of it) without a fault each.
 */
class NativeRuntimeHugePagesTest {

    @Test
    void adviceReachesTheKernelForAMappedFile(@TempDir Path dir) throws IOException {
        assumeTrue(NativeKernels.supported(), "bigmodel's native library is not loaded on this machine");
        Path file = dir.resolve("weights.bin");
        long size = 8L << 20;
        try (RandomAccessFile f = new RandomAccessFile(file.toFile(), "rw")) {
            f.setLength(size);
            f.seek(size / 2);
            f.write(42);
        }
        try (Tensor mapped = torch.from_file(file.toString(), new BoolOptional(false), new LongOptional(size),
                new TensorOptions(ScalarType.Byte))) {
            assertThat(NativeRuntime.adviseHugePages(mapped)).isTrue();
            long start = mapped.data_ptr().address();
            assertThat(ProcMaps.flagsOfMappingAt(start + size / 2)).as("VmFlags of the mapping's middle").contains("hg");
            assertThat(mapped.get(size / 2).item_int()).isEqualTo(42);
            assertThat(mapped.get(0).item_int()).isZero();
        }
    }

    @Test
    void weightTensorsAreAdvisedBeforeAnythingTouchesThem() throws IOException {
        assumeTrue(NativeKernels.supported(), "bigmodel's native library is not loaded on this machine");
        try (Tensor codes = Tensors.emptyWeight(DType.INT8, Device.CPU, 4096, 2048);
             Tensor plain = Tensors.empty(DType.INT8, Device.CPU, 4096, 2048)) {
            long middle = codes.data_ptr().address() + codes.nbytes() / 2;
            assertThat(ProcMaps.flagsOfMappingAt(middle)).as("VmFlags of the weight's memory").contains(" hg");
            assertThat(ProcMaps.flagsOfMappingAt(plain.data_ptr().address() + plain.nbytes() / 2))
                    .as("VmFlags of a plain tensor's memory").doesNotContain(" hg");
        }
    }

    @Test
    void aTensorTooSmallForOneHugePageIsLeftAlone() {
        assumeTrue(NativeKernels.supported(), "bigmodel's native library is not loaded on this machine");
        try (Tensor small = torch.zeros(1024)) {
            // nothing 2 MiB-aligned inside: no call, no error
            assertThat(NativeRuntime.adviseHugePages(small)).isTrue();
        }
    }

    @Test
    void populateMapsEveryPageOfAMappedFileInOneCall(@TempDir Path dir) throws IOException {
        assumeTrue(NativeKernels.supported(), "bigmodel's native library is not loaded on this machine");
        Path file = dir.resolve("weights.bin");
        long size = 4L << 20;
        byte[] bytes = new byte[(int) size];
        bytes[12345] = 7;
        Files.write(file, bytes);
        try (Tensor mapped = torch.from_file(file.toString(), new BoolOptional(false), new LongOptional(size),
                new TensorOptions(ScalarType.Byte))) {
            long start = mapped.data_ptr().address();
            assertThat(ProcMaps.residentKibOfMappingAt(start)).as("nothing touched yet").isZero();
            boolean populated = NativeKernels.populate(start, size);
            assumeTrue(populated, "this kernel has no MADV_POPULATE_READ (Linux 5.14)");
            assertThat(ProcMaps.residentKibOfMappingAt(start) * 1024L).as("every page mapped").isEqualTo(size);
            assertThat(mapped.get(12345).item_int()).isEqualTo(7);
        }
    }
}
