package io.github.bigmodel.core.kernel;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.github.bigmodel.core.NativeRuntime;
import io.github.bigmodel.core.kernel.NativeKernels.Format;
import io.github.bigmodel.core.quant.WeightQuantizer;
import io.github.bigmodel.core.testing.KernelAllowance;
import java.nio.file.Files;
import java.nio.file.Path;
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
 * The native kernels against a float64 product of the same stored values: every format, one row (the decode
 * kernels) and several (the prompt kernels), sizes that leave tails at every blocking (rows not a multiple of 4 or
 * 8, columns not a multiple of 16, 32, int4's 128-value block or the 512-column chunk), several thread counts, a row's result the same bits
 * alone or among others, conversions of half-precision activations, and bad inputs refused.
 * On Linux x86-64 with AVX-512 (this project's machines) the kernels must have been built and loaded.
 */
// PointerScope blocks are used for what they release on close.
@SuppressWarnings("try")
class NativeKernelsTest {

    @BeforeAll
    static void init() {
        NativeRuntime.applyThreads();
    }

    private static boolean avx512() {
        try {
            return Files.readString(Path.of("/proc/cpuinfo")).contains(" avx512bw");
        } catch (java.io.IOException e) {
            return false;
        }
    }

    @Test
    void builtAndLoadedOnAvx512Linux() {
        boolean linuxX86 = System.getProperty("os.name").toLowerCase().contains("linux")
                && System.getProperty("os.arch").equals("amd64");
        assumeTrue(linuxX86 && avx512(), "not an AVX-512 Linux x86-64 machine");
        assertThat(NativeKernels.supported()).as("libbigmodel_kernels.so built by the module and loaded").isTrue();
    }

    /** The weight as stored for {@code format}, its float values and its scales (null for half precision). */
    private record Stored(Tensor weight, Tensor values, Tensor scale) {
    }

    private static Stored stored(Format format, long n, long k) {
        Tensor w = torch.randn(n, k);
        return switch (format) {
            case BF16 -> {
                Tensor b = w.to(ScalarType.BFloat16);
                yield new Stored(b, b.to(ScalarType.Double), null);
            }
            case FP16 -> {
                Tensor h = w.to(ScalarType.Half);
                yield new Stored(h, h.to(ScalarType.Double), null);
            }
            case INT8 -> {
                Tensor codes = torch.randint(-127, 128, new long[] {n, k}).to(ScalarType.Char);
                Tensor scale = torch.rand(n).mul(new Scalar(0.01)).add(new Scalar(1e-3));
                yield new Stored(codes, codes.to(ScalarType.Double).mul(scale.to(ScalarType.Double).unsqueeze(1)),
                        scale);
            }
            case INT4 -> {
                Tensor codes = torch.randint(-8, 8, new long[] {n, k}).to(ScalarType.Char);
                Tensor packed = WeightQuantizer.packInt4(codes);
                Tensor scale = torch.rand(n).mul(new Scalar(0.1)).add(new Scalar(1e-3));
                yield new Stored(packed, codes.to(ScalarType.Double).mul(scale.to(ScalarType.Double).unsqueeze(1)),
                        scale);
            }
        };
    }

    /** Each value of x [m, k] replaced by the largest |x| of its activation block. */
    private static Tensor blockMax(Tensor x) {
        long k = x.size(1);
        Tensor out = torch.empty_like(x);
        for (long j = 0; j < k; j += NativeKernels.ACTIVATION_BLOCK) {
            long n = Math.min(NativeKernels.ACTIVATION_BLOCK, k - j);
            Tensor max = x.narrow(1, j, n).abs().amax(new long[] {1}, true);
            out.narrow(1, j, n).copy_(max.expand(new long[] {x.size(0), n}));
        }
        return out;
    }

    @ParameterizedTest(name = "{0} m={1} n={2} k={3} threads={4}")
    @CsvSource({
        "BF16, 1, 37, 1001, 2", "BF16, 1, 4096, 4096, 1", "BF16, 3, 37, 1001, 2", "BF16, 17, 67, 1100, 2",
        "FP16, 1, 37, 1001, 2", "FP16, 1, 3, 13, 1", "FP16, 5, 37, 1001, 2", "FP16, 17, 64, 2048, 3",
        "INT8, 1, 37, 1001, 2", "INT8, 1, 1, 15, 1", "INT8, 4, 37, 1001, 2", "INT8, 17, 67, 1100, 2",
        "INT4, 1, 37, 1002, 2", "INT4, 1, 5, 30, 1", "INT4, 2, 37, 1002, 2", "INT4, 17, 67, 1090, 3",
        "INT4, 1, 9, 1152, 2", "INT4, 3, 9, 1152, 1",
        // several of the decode kernel's 128-row runs, the last one's rows not a multiple of 4 (nor of 8)
        "BF16, 1, 263, 1001, 2", "FP16, 1, 263, 1001, 2", "INT8, 1, 263, 1001, 2", "INT4, 1, 263, 1002, 2",
        // float16 reads 32 values a step: a chunk's last 16-wide vector whole (1010 = 512 + 15 * 32 + 18), then a part
        "FP16, 1, 263, 1010, 2", "FP16, 1, 9, 48, 1",
    })
    void matchesAFloat64Product(Format format, long m, long n, long k, int threads) {
        assumeTrue(NativeKernels.available(), "native kernels not supported here");
        int before = torch.get_num_threads();
        torch.set_num_threads(threads);
        try (PointerScope scope = new PointerScope()) {
            torch.manual_seed(m * 1000 + n + k);
            Stored s = stored(format, n, k);
            // bfloat16-representable activations: what a bf16 model's layers receive (the BF16 kernel may round x)
            Tensor x = torch.randn(m, k).to(ScalarType.BFloat16).to(ScalarType.Float);
            Tensor y = NativeKernels.mm(format, x, s.weight(), s.scale() == null ? null
                    : s.scale().to(ScalarType.Float).contiguous());
            Tensor x64 = x.to(ScalarType.Double);
            Tensor expected = x64.matmul(s.values().t());
            // float32 accumulation in 16 or 32 lanes, then across lanes: error below (k/16 + 64) * 2^-24 * sum |w x|
            // (and scaling rounds once more); one missed or doubled term would exceed it
            Tensor bound = x64.abs().matmul(s.values().abs().t()).mul(new Scalar((k / 16.0 + 64) * 0x1p-24));
            if (format.quantized()) {
                // x rounded to int16 per block: each value within half a step (+ float32 rounding of x / step)
                bound = bound.add(blockMax(x64).matmul(s.values().abs().t()).mul(new Scalar(KernelAllowance.ACTIVATION)));
            }
            Tensor error = y.to(ScalarType.Double).sub(expected).abs();
            assertThat(y.size(0)).isEqualTo(m);
            assertThat(y.size(1)).isEqualTo(n);
            assertThat(error.sub(bound).max().item_double()).as("largest error over its bound").isLessThanOrEqualTo(0);
            assertThat(expected.abs().max().item_double()).isGreaterThan(0);
        } finally {
            torch.set_num_threads(before);
        }
    }

    @ParameterizedTest(name = "{0} k={1}")
    @CsvSource({"FP16, 1001", "FP16, 2048", "FP16, 1010", "FP16, 48", "INT8, 1001", "INT8, 1536", "INT4, 1090", "INT4, 4096", "INT4, 30", "INT4, 1152", "INT4, 130"})
    void aRowsResultDoesNotDependOnTheRowsBesideIt(Format format, long k) {
        assumeTrue(NativeKernels.available(), "native kernels not supported here");
        try (PointerScope scope = new PointerScope()) {
            torch.manual_seed(k);
            Stored s = stored(format, 21, k);
            Tensor scale = s.scale() == null ? null : s.scale().to(ScalarType.Float).contiguous();
            Tensor x = torch.randn(7, k);
            Tensor all = NativeKernels.mm(format, x, s.weight(), scale);
            for (long r = 0; r < 7; r++) {
                Tensor one = NativeKernels.mm(format, x.narrow(0, r, 1).contiguous(), s.weight(), scale);
                // a prompt in one piece, in chunks or token by token: the same bits (PromptChunkingTest relies on it)
                assertThat(torch.equal(one, all.narrow(0, r, 1))).as("row %d alone vs among 7", r).isTrue();
            }
            Tensor two = NativeKernels.mm(format, x.narrow(0, 3, 2).contiguous(), s.weight(), scale);
            assertThat(torch.equal(two, all.narrow(0, 3, 2))).as("rows 3-4 as a pair").isTrue();
        }
    }

    @ParameterizedTest(name = "{0} k={1}")
    @CsvSource({"BF16, 1001", "FP16, 1001", "FP16, 1010", "INT8, 1001", "INT4, 1002"})
    void aWeightRowsResultDoesNotDependOnTheWeightRowsBesideIt(Format format, long k) {
        // the decode kernel computes four rows at a time (float16 eight), taken a quarter (an eighth) of a run apart:
        // which rows share a step changes with the matrix's height and where it starts, a row's result must not
        assumeTrue(NativeKernels.available(), "native kernels not supported here");
        try (PointerScope scope = new PointerScope()) {
            torch.manual_seed(k + 3);
            Stored s = stored(format, 263, k);
            Tensor scale = s.scale() == null ? null : s.scale().to(ScalarType.Float).contiguous();
            Tensor x = torch.randn(1, k).to(ScalarType.BFloat16).to(ScalarType.Float);
            Tensor all = NativeKernels.mm(format, x, s.weight(), scale);
            for (long[] window : new long[][] {{5, 250}, {130, 133}, {1, 3}, {262, 1}}) {
                long from = window[0], rows = window[1];
                Tensor part = NativeKernels.mm(format, x, s.weight().narrow(0, from, rows).contiguous(),
                        scale == null ? null : scale.narrow(0, from, rows).contiguous());
                assertThat(torch.equal(part, all.narrow(1, from, rows)))
                        .as("rows %d..%d alone vs among 263", from, from + rows - 1).isTrue();
            }
        }
    }

    @ParameterizedTest(name = "{0} k={1}")
    @CsvSource({"BF16, 1056", "BF16, 1040", "BF16, 4096", "FP16, 1056", "FP16, 1001"})
    void sameBitsWhereverTheWeightStartsInItsCacheLine(Format format, long k) {
        // a checkpoint's tensors start wherever its header ends (8-byte padding): the kernel may load whole lines and
        // realign them, but a weight's result must not depend on where it lies
        assumeTrue(NativeKernels.available(), "native kernels not supported here");
        try (PointerScope scope = new PointerScope()) {
            torch.manual_seed(k + 17);
            long n = 37;
            Stored s = stored(format, n, k);
            Tensor x = torch.randn(1, k).to(ScalarType.BFloat16).to(ScalarType.Float);
            Tensor atStart = NativeKernels.mm(format, x, s.weight(), null);
            for (long offset : new long[] {1, 4, 16, 31}) {
                Tensor room = torch.zeros(n * k + 64).to(s.weight().scalar_type());
                Tensor shifted = room.narrow(0, offset, n * k).view(n, k);
                shifted.copy_(s.weight());
                assertThat(shifted.data_ptr().address() % 64).as("libtorch allocates on 64 bytes")
                        .isEqualTo(2 * offset);
                Tensor y = NativeKernels.mm(format, x, shifted, null);
                assertThat(torch.equal(y, atStart)).as("weight %d bytes further on", 2 * offset).isTrue();
            }
        }
    }

    @ParameterizedTest(name = "{0}")
    @CsvSource({"INT8", "INT4"})
    void activationOutliersCostNoMoreThanTheirBlock(Format format) {
        assumeTrue(NativeKernels.available(), "native kernels not supported here");
        try (PointerScope scope = new PointerScope()) {
            torch.manual_seed(11);
            long k = 4096;
            Stored s = stored(format, 64, k);
            // a language model's activations: mostly small, a few channels 100x larger
            Tensor x = torch.randn(1, k);
            x.narrow(1, 7, 1).mul_(new Scalar(100));
            x.narrow(1, 3001, 1).mul_(new Scalar(-150));
            Tensor y = NativeKernels.mm(format, x, s.weight(), s.scale().to(ScalarType.Float).contiguous());
            Tensor expected = x.to(ScalarType.Double).matmul(s.values().t());
            double relative = y.to(ScalarType.Double).sub(expected).norm().item_double() / expected.norm().item_double();
            // what rounding x to bfloat16 alone (a bf16 model's activations) would cost on the same product
            Tensor viaBf16 = x.to(ScalarType.BFloat16).to(ScalarType.Double).matmul(s.values().t());
            double bf16 = viaBf16.sub(expected).norm().item_double() / expected.norm().item_double();
            // the outlier blocks' steps are 1/32767 of 100-150, yet the whole error stays well under bf16's
            assertThat(relative).isLessThan(bf16 / 4).isGreaterThan(0);
        }
    }

    @ParameterizedTest(name = "{0} m={1}")
    @CsvSource({"INT8, 1", "INT8, 3", "INT4, 1", "INT4, 3"})
    void aNonFiniteActivationGivesNaNNotAFiniteGuess(Format format, long m) {
        assumeTrue(NativeKernels.available(), "native kernels not supported here");
        try (PointerScope scope = new PointerScope()) {
            torch.manual_seed(5);
            Stored s = stored(format, 9, 300);
            Tensor scale = s.scale().to(ScalarType.Float).contiguous();
            Tensor x = torch.randn(m, 300);
            x.select(0, m - 1).narrow(0, 200, 1).fill_(new Scalar(Double.POSITIVE_INFINITY));
            if (m > 1) {
                x.select(0, 0).narrow(0, 5, 1).fill_(new Scalar(Double.NaN));
            }
            Tensor y = NativeKernels.mm(format, x, s.weight(), scale);
            assertThat(y.select(0, m - 1).isnan().all().item_bool()).as("row with +inf").isTrue();
            if (m > 1) {
                assertThat(y.select(0, 0).isnan().all().item_bool()).as("row with NaN").isTrue();
                assertThat(y.select(0, 1).isfinite().all().item_bool()).as("a finite row beside them").isTrue();
            }
        }
    }

    @Test
    void sameResultWhateverTheThreadCount() {
        assumeTrue(NativeKernels.available(), "native kernels not supported here");
        int before = torch.get_num_threads();
        try (PointerScope scope = new PointerScope()) {
            torch.manual_seed(7);
            Tensor w = torch.randn(301, 777).to(ScalarType.Half);
            Tensor x = torch.randn(1, 777);
            torch.set_num_threads(1);
            Tensor one = NativeKernels.mm(Format.FP16, x, w, null);
            torch.set_num_threads(2);
            Tensor two = NativeKernels.mm(Format.FP16, x, w, null);
            assertThat(torch.equal(one, two)).as("each row is summed by one thread in one order").isTrue();
        } finally {
            torch.set_num_threads(before);
        }
    }

    @ParameterizedTest(name = "{0} with {1} activations, m={2}")
    @CsvSource({"BF16, BFloat16, 1", "BF16, BFloat16, 5", "FP16, Half, 1", "FP16, Half, 9", "INT8, BFloat16, 1",
        "INT8, Half, 3", "INT4, BFloat16, 1", "INT4, Half, 6"})
    void halfActivationsGiveTheFloat32ResultRoundedOnce(Format format, String dtype, long m) {
        assumeTrue(NativeKernels.available(), "native kernels not supported here");
        try (PointerScope scope = new PointerScope()) {
            torch.manual_seed(11 + m);
            ScalarType type = ScalarType.valueOf(dtype);
            Stored s = stored(format, 45, 530);
            Tensor scale = s.scale() == null ? null : s.scale().to(ScalarType.Float).contiguous();
            Tensor x = torch.randn(m, 530).to(type);
            Tensor y = NativeKernels.mm(format, x, s.weight(), scale);
            Tensor y32 = NativeKernels.mm(format, x.to(ScalarType.Float), s.weight(), scale);
            assertThat(y.scalar_type().value).isEqualTo(type.value);
            assertThat(torch.equal(y, y32.to(type))).as("converted in the kernel as libtorch converts").isTrue();
        }
    }

    @Test
    void noRowsGiveAnEmptyResult() {
        assumeTrue(NativeKernels.available(), "native kernels not supported here");
        try (PointerScope scope = new PointerScope()) {
            Tensor w = torch.randn(8, 64).to(ScalarType.Half);
            Tensor y = NativeKernels.mm(Format.FP16, torch.randn(0, 64).to(ScalarType.Half), w, null);
            assertThat(y.size(0)).isZero();
            assertThat(y.size(1)).isEqualTo(8);
        }
    }

    @Test
    void refusesMismatchedInputs() {
        assumeTrue(NativeKernels.available(), "native kernels not supported here");
        try (PointerScope scope = new PointerScope()) {
            Tensor x = torch.randn(1, 64);
            Tensor half = torch.randn(8, 64).to(ScalarType.Half);
            assertThatThrownBy(() -> NativeKernels.mm(Format.BF16, x, half, null))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("BF16 weight");
            assertThatThrownBy(() -> NativeKernels.mm(Format.FP16, torch.randn(1, 63), half, null))
                    .isInstanceOf(IllegalArgumentException.class);
            assertThatThrownBy(() -> NativeKernels.mm(Format.FP16, x.to(ScalarType.Long), half, null))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("x must be");
            Tensor codes = torch.zeros(8, 64).to(ScalarType.Char);
            assertThatThrownBy(() -> NativeKernels.mm(Format.INT8, x, codes, null))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("scales");
            assertThatThrownBy(() -> NativeKernels.mm(Format.INT8, x, codes, torch.ones(7)))
                    .isInstanceOf(IllegalArgumentException.class);
            assertThatThrownBy(() -> NativeKernels.mm(Format.INT4, x, codes, torch.ones(8)))
                    .as("int4 of 64 columns is 32 bytes a row").isInstanceOf(IllegalArgumentException.class);
            assertThatThrownBy(() -> NativeKernels.mm(Format.FP16, x, half.t(), null))
                    .isInstanceOf(IllegalArgumentException.class);
        }
    }
}
