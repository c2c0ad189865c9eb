package io.github.bigmodel.cli;

import static org.assertj.core.api.Assertions.assertThat;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.testing.ReferenceTree;
import io.github.bigmodel.safetensors.Checkpoint;
import io.github.bigmodel.safetensors.TensorInfo;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code bigmodel convert --precision int8|int4} of a half-precision model writes THUDM's codes and scales bit for
 * bit. THUDM's {@code QuantizedLinear} (chatglm3-6b quantization.py) computes, on tensors of the weight's dtype,
 * {@code weight_scale = weight.abs().max(dim=-1).values / (2**(bits-1)-1)} and
 * {@code torch.round(weight / weight_scale[:, None]).to(torch.int8)}, then packs int4 two per byte. This test
 * redoes that in plain Java, independently of the production code: each division in float32, its quotient rounded
 * to the weight's dtype (float16 or bfloat16, round to nearest even, as libtorch does for half tensors), then
 * {@code Math.rint} (half to even, {@code torch.round}); int4 unpacked from the bytes with the first weight in the
 * high nibble. The one deliberate difference: a quotient that rounds to max+1 (only possible for bfloat16 int8,
 * 127.5 -> 128) is out of int8's range for THUDM's cast, and is written as max (see docs/quantization.md).
 */
class ThudmCodesTest {

    @TestFactory
    Stream<DynamicTest> convertWritesThudmCodesAndScales(@TempDir Path tmp) {
        List<DynamicTest> tests = new ArrayList<>();
        for (String model : new String[] {"chatglm3-6b-tiny-fp16", "chatglm3-6b-tiny-bf16"}) {
            for (int bits : new int[] {8, 4}) {
                String name = model + " int" + bits;
                tests.add(DynamicTest.dynamicTest(name, () -> check(ReferenceTree.models().resolve(model), bits,
                        tmp.resolve(name.replace(' ', '-')))));
            }
        }
        return tests.stream();
    }

    private static void check(Path source, int bits, Path out) {
        CliTest.Run r = CliTest.run("convert", source.toString(), out.toString(), "--precision", "int" + bits);
        assertThat(r.code()).as(r.err()).isZero();
        int max = (1 << (bits - 1)) - 1;
        int layers = 0;
        long codes = 0;
        long saturated = 0;
        try (PointerScope scope = new PointerScope();
             Checkpoint original = Checkpoint.open(source);
             Checkpoint written = Checkpoint.open(out)) {
            for (TensorInfo t : written.tensors()) {
                String name = t.name();
                if (!name.endsWith(".weight_scale")) {
                    continue;
                }
                String weightName = name.substring(0, name.length() - "_scale".length());
                DType type = original.info(weightName).dtype();
                assertThat(type).as(weightName).isIn(DType.FLOAT16, DType.BFLOAT16);
                long[] shape = original.info(weightName).shape();
                int rows = (int) shape[0];
                int cols = (int) shape[1];
                float[] w = floats(original.load(weightName));
                float[] scales = floats(written.load(name));
                assertThat(written.info(name).dtype()).as(name).isEqualTo(type);
                byte[] stored = bytes(written.load(weightName));
                assertThat(stored).hasSize(rows * cols * bits / 8);
                for (int row = 0; row < rows; row++) {
                    float absMax = 0;
                    for (int c = 0; c < cols; c++) {
                        absMax = Math.max(absMax, Math.abs(w[row * cols + c]));
                    }
                    float scale = roundTo(absMax / (float) max, type);
                    assertThat(Float.floatToIntBits(scales[row])).as("%s row %d scale", name, row)
                            .isEqualTo(Float.floatToIntBits(scale));
                    for (int c = 0; c < cols; c++) {
                        int thudm = (int) Math.rint(roundTo(w[row * cols + c] / scale, type));
                        int code = code(stored, row * cols + c, bits);
                        if (thudm == max + 1) {
                            saturated++;
                            assertThat(code).as("%s [%d, %d] saturated", weightName, row, c).isEqualTo(max);
                        } else {
                            assertThat(code).as("%s [%d, %d]", weightName, row, c).isEqualTo(thudm);
                        }
                        codes++;
                    }
                }
                layers++;
            }
        }
        // Every block linear was quantized: four per layer, the layer count read from the model's config.
        assertThat(layers).isEqualTo(4 * numLayers(source));
        assertThat(codes).isPositive();
        // Saturation needs a quotient in bfloat16's [64, 128) grid (step 0.5) at 127.5: never for float16 or int4.
        if (bits == 4 || source.getFileName().toString().endsWith("fp16")) {
            assertThat(saturated).isZero();
        }
    }

    private static int numLayers(Path model) {
        try {
            return new com.fasterxml.jackson.databind.ObjectMapper().readTree(model.resolve("config.json").toFile())
                    .get("num_layers").asInt();
        } catch (java.io.IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }

    /** The signed code of element {@code i}: a byte for int8, a nibble (first of a pair high) for int4. */
    private static int code(byte[] stored, int i, int bits) {
        if (bits == 8) {
            return stored[i];
        }
        int b = stored[i / 2];
        return i % 2 == 0 ? b >> 4 : (byte) (b << 4) >> 4;
    }

    /**
     * {@code x} rounded to the nearest value of {@code type} (ties to even), as a float: the float's binary
     * exponent gives the spacing of the narrower type's grid there, and rint on the scaled value rounds to it.
     */
    static float roundTo(float x, DType type) {
        if (x == 0 || Float.isNaN(x) || Float.isInfinite(x)) {
            return x;
        }
        int mantissaBits = type == DType.FLOAT16 ? 10 : 7;
        int minExponent = type == DType.FLOAT16 ? -14 : -126;
        int e = Math.max(Math.getExponent(x), minExponent);
        double step = Math.scalb(1.0, e - mantissaBits);
        return (float) (Math.rint(x / step) * step);
    }

    /** The values of a float tensor, widened exactly to float32 by libtorch and read little-endian. */
    private static float[] floats(Tensor t) {
        java.nio.FloatBuffer fb = java.nio.ByteBuffer.wrap(bytes(t.to(ScalarType.Float)))
                .order(java.nio.ByteOrder.LITTLE_ENDIAN).asFloatBuffer();
        float[] out = new float[fb.remaining()];
        fb.get(out);
        return out;
    }

    /** The raw bytes of a tensor, in memory order. */
    private static byte[] bytes(Tensor t) {
        Tensor raw = t.contiguous().view(ScalarType.Byte).reshape(-1);
        byte[] out = new byte[(int) raw.numel()];
        raw.data_ptr_byte().get(out);
        return out;
    }
}
