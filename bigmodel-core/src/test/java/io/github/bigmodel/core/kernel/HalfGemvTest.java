package io.github.bigmodel.core.kernel;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Linear;
import io.github.bigmodel.core.NativeRuntime;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.LongOptional;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptional;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The half-precision decode kernel against a float32 reference: random weights of odd and real sizes, exact
 * widening of every 16-bit value (one-hot inputs pick one column), thread-count independence, and the choice
 * {@link Linear} makes (one row here, prompts and other dtypes to libtorch). The build runs tests with
 * {@code --add-modules jdk.incubator.vector}, so the kernel must be available here.
 */
// PointerScope blocks are used for what they release on close.
@SuppressWarnings("try")
class HalfGemvTest {

    @BeforeAll
    static void init() {
        NativeRuntime.applyThreads();
    }

    @BeforeEach
    void enable() {
        HalfGemv.setEnabled(true);
    }

    @AfterEach
    void restore() {
        // Back to this JVM's default (off unless -Dbigmodel.kernels.vector=true), for the tests that follow.
        HalfGemv.setEnabled(Boolean.getBoolean(HalfGemv.PROPERTY));
    }

    private static ScalarType type(String name) {
        return name.equals("bf16") ? ScalarType.BFloat16 : ScalarType.Half;
    }

    /** Relative rounding step of the output dtype: the result is rounded once from float32. */
    private static double eps(String name) {
        return name.equals("bf16") ? 0x1p-8 : 0x1p-10;
    }

    @Test
    void kernelIsAvailableUnderTheBuildsJvmFlags() {
        assertThat(ModuleLayer.boot().findModule("jdk.incubator.vector")).isPresent();
        assertThat(HalfGemv.available()).isTrue();
        assertThat(HalfGemv.enabled()).isTrue();
    }

    @ParameterizedTest
    @ValueSource(strings = {"bf16", "fp16"})
    void matchesFloat32ReferenceOnOddAndRealShapes(String dtype) {
        long[][] shapes = {{1, 1}, {3, 5}, {7, 17}, {37, 1001}, {130, 4096}, {4608, 4096}, {9, 13696}};
        try (PointerScope scope = new PointerScope()) {
            torch.manual_seed(11);
            for (long[] s : shapes) {
                Tensor w = torch.randn(s).mul(new Scalar(0.05)).to(type(dtype));
                Tensor b = torch.randn(s[0]).to(type(dtype));
                for (Tensor x : new Tensor[] {torch.randn(1, s[1]), torch.randn(1, 1, s[1])}) {
                    Tensor xt = x.to(type(dtype));
                    assertThat(HalfGemv.applies(xt, w)).isTrue();
                    Tensor got = HalfGemv.linear(xt, w, b);
                    assertThat(got.scalar_type().value).isEqualTo(type(dtype).value);
                    assertThat(got.sizes().vec().get()).containsExactly(withLast(x, s[0]));
                    Tensor ref = torch.linear(xt.to(ScalarType.Float), w.to(ScalarType.Float),
                            new TensorOptional(b.to(ScalarType.Float)));
                    assertClose(got, ref, eps(dtype), dtype + " " + s[0] + "x" + s[1]);
                }
            }
        }
    }

    private static long[] withLast(Tensor x, long last) {
        long[] shape = x.sizes().vec().get();
        shape[shape.length - 1] = last;
        return shape;
    }

    /** |got - ref| <= eps |ref| + 1e-5 max|ref| elementwise: one rounding to the output dtype plus sum order. */
    private static void assertClose(Tensor got, Tensor ref, double eps, String what) {
        Tensor g = got.to(ScalarType.Float);
        double scale = ref.abs().max().item_double();
        Tensor excess = g.sub(ref).abs().sub(ref.abs().mul(new Scalar(eps)).add(new Scalar(1e-5 * scale)));
        assertThat(excess.max().item_double()).as(what).isLessThanOrEqualTo(0.0);
    }

    @ParameterizedTest
    @ValueSource(strings = {"bf16", "fp16"})
    void widensEveryValueExactly(String dtype) {
        // Zeros, signs, subnormals of float16, values near each format's limits: a one-hot x returns column j as is.
        double[] values = dtype.equals("fp16")
                ? new double[] {0.0, -0.0, 1.0, -2.5, 6.0e-8, -5.96e-8, 3.0e-5, 6.1e-5, 65504.0, -65504.0, 0.1, -1e-3}
                : new double[] {0.0, -0.0, 1.0, -2.5, 1e-30, -3e-38, 1e30, -3e38, 6.0e-8, 65504.0, 0.1, -1e-3};
        int n = values.length;
        int k = 19;
        try (PointerScope scope = new PointerScope()) {
            float[] data = new float[n * k];
            for (int r = 0; r < n; r++) {
                for (int c = 0; c < k; c++) {
                    data[r * k + c] = (float) values[(r + c) % n];
                }
            }
            Tensor w32 = torch.empty(n, k);
            new FloatPointer(w32.data_ptr()).put(data);
            Tensor w = w32.to(type(dtype));
            for (int j = 0; j < k; j++) {
                Tensor x = torch.zeros(1, k);
                new FloatPointer(x.data_ptr()).put(j, 1.0f);
                Tensor got = HalfGemv.linear(x.to(type(dtype)), w, null).to(ScalarType.Float);
                Tensor column = w.select(1, j).to(ScalarType.Float).reshape(1, n);
                assertThat(torch.equal(got, column)).as("column %d", j).isTrue();
            }
        }
    }

    @Test
    void resultDoesNotDependOnTheThreadCount() {
        int before = torch.get_num_threads();
        try (PointerScope scope = new PointerScope()) {
            torch.manual_seed(3);
            Tensor w = torch.randn(1027, 515).to(ScalarType.BFloat16);
            Tensor x = torch.randn(1, 515).to(ScalarType.BFloat16);
            torch.set_num_threads(1);
            Tensor one = HalfGemv.linear(x, w, null);
            torch.set_num_threads(3);
            Tensor three = HalfGemv.linear(x, w, null);
            assertThat(torch.equal(one, three)).isTrue();
        } finally {
            torch.set_num_threads(before);
        }
    }

    @Test
    void linearChoosesTheKernelForOneRowAndLibtorchOtherwise() {
        try (PointerScope scope = new PointerScope()) {
            torch.manual_seed(5);
            Linear fc = new Linear(300, 77, true, DType.BFLOAT16);
            fc.weight().set(torch.randn(77, 300).mul(new Scalar(0.1)).to(ScalarType.BFloat16));
            fc.bias().set(torch.randn(77).to(ScalarType.BFloat16));
            Tensor w32 = fc.weight().data().to(ScalarType.Float);
            Tensor b32 = fc.bias().data().to(ScalarType.Float);

            // One row, non-contiguous (every other element of a longer row): the kernel.
            Tensor wide = torch.randn(1, 1, 600).to(ScalarType.BFloat16);
            Tensor x = wide.slice(2, new LongOptional(0), new LongOptional(600), 2);
            assertThat(x.is_contiguous()).isFalse();
            assertThat(HalfGemv.applies(x, fc.weight().data())).isTrue();
            Tensor y = fc.forward(x);
            Tensor ref = torch.linear(x.to(ScalarType.Float), w32, new TensorOptional(b32));
            assertClose(y, ref, 0x1p-8, "one row");
            HalfGemv.setEnabled(false);
            Tensor plain = fc.forward(x);
            HalfGemv.setEnabled(true);
            // libtorch rounds the product to bf16 and then adds the bias in bf16: the first rounding is relative to
            // the product, not to the result, so its error is bounded by the output's scale only.
            double scale = ref.abs().max().item_double();
            assertThat(plain.to(ScalarType.Float).sub(ref).abs().max().item_double())
                    .as("libtorch, kernel off").isLessThanOrEqualTo(0x1p-7 * scale);

            // Prompt-sized inputs go to libtorch's GEMM: bit-identical to torch.linear.
            for (int rows : new int[] {2, 16}) {
                Tensor xs = torch.randn(rows, 1, 300).to(ScalarType.BFloat16);
                assertThat(HalfGemv.applies(xs, fc.weight().data())).isFalse();
                Tensor direct = torch.linear(xs, fc.weight().data(), new TensorOptional(fc.bias().data()));
                assertThat(torch.equal(fc.forward(xs), direct)).isTrue();
            }
        }
    }

    @Test
    void otherDtypesAndLayoutsAreNotTaken() {
        try (PointerScope scope = new PointerScope()) {
            Tensor w = torch.randn(8, 16);
            Tensor x = torch.randn(1, 16);
            assertThat(HalfGemv.applies(x, w)).as("float32").isFalse();
            Tensor wb = w.to(ScalarType.BFloat16);
            assertThat(HalfGemv.applies(x, wb)).as("float32 input, bf16 weight").isFalse();
            assertThat(HalfGemv.applies(x.to(ScalarType.Half), wb)).as("mixed half types").isFalse();
            Tensor transposed = torch.randn(16, 8).to(ScalarType.BFloat16).t();
            assertThat(HalfGemv.applies(x.to(ScalarType.BFloat16), transposed)).as("non-contiguous weight").isFalse();
            assertThat(HalfGemv.applies(torch.randn(1, 15).to(ScalarType.BFloat16), wb)).as("wrong width").isFalse();
            assertThatThrownBy(() -> HalfGemv.linear(torch.randn(2, 16).to(ScalarType.BFloat16), wb, null))
                    .isInstanceOf(IllegalArgumentException.class);
            // A float32 layer keeps libtorch's result bit for bit.
            Linear fc = new Linear(16, 8, false, DType.FLOAT32);
            fc.weight().set(w.clone());
            assertThat(torch.equal(fc.forward(x), torch.linear(x, w))).isTrue();
        }
    }
}
