package io.github.bigmodel.core.kernel;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.ShortVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorShape;
import jdk.incubator.vector.VectorSpecies;

/**
 * The inner loops of {@link HalfGemv} on the JDK's Vector API ({@code jdk.incubator.vector}). Only
 * {@link HalfGemv} touches this class, and only after it found the module in the boot layer: loading it without
 * the module would fail.
 *
 * <p>Each 16-bit weight is widened to float32 in registers (bfloat16: the bits moved to the top half; float16: the
 * exponent and mantissa moved into float32's places and the result rescaled by 2^112, which also turns float16
 * subnormals into the right float32 values) and multiplied into float32 accumulators: four rows at a time share
 * each load of {@code x}.
 */
final class VectorGemv {

    private static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;
    /** Shorts with as many lanes as {@link #F}: half its bit size. */
    private static final VectorSpecies<Short> S =
            VectorSpecies.of(short.class, VectorShape.forBitSize(F.vectorBitSize() / 2));
    private static final VectorSpecies<Integer> I = F.withLanes(int.class);
    private static final int L = F.length();
    /** float16 exponent bias 15 against float32's 127: the widened bits are 2^-112 times the value. */
    private static final float HALF_RESCALE = 0x1p112f;
    /** Keeps the sign (bit 31) and float16's exponent and mantissa (bits 13-27) of a sign-extended, shifted short. */
    private static final int HALF_BITS = 0x8FFFFFFF;

    private VectorGemv() {
    }

    /** Lanes per vector of float32: 16 with AVX-512, 8 with AVX2. */
    static int lanes() {
        return L;
    }

    /**
     * {@code y[r] = sum_k w[r, k] * x[k]} for rows {@code [r0, r1)} of {@code w}, whose row {@code r} starts at byte
     * {@code (r - rowBase) * k * 2} of {@code w} (little-endian 16-bit values).
     */
    static void rows(ByteBuffer w, int rowBase, int k, float[] x, float[] y, int r0, int r1, boolean bf16) {
        int body = k - k % L;
        int r = r0;
        for (; r + 3 < r1; r += 4) {
            long b0 = (long) (r - rowBase) * k * 2;
            FloatVector a0 = FloatVector.zero(F);
            FloatVector a1 = a0;
            FloatVector a2 = a0;
            FloatVector a3 = a0;
            int o0 = (int) b0;
            int o1 = (int) (b0 + 2L * k);
            int o2 = (int) (b0 + 4L * k);
            int o3 = (int) (b0 + 6L * k);
            for (int c = 0; c < body; c += L) {
                FloatVector xv = FloatVector.fromArray(F, x, c);
                int off = 2 * c;
                a0 = widen(w, o0 + off, bf16).fma(xv, a0);
                a1 = widen(w, o1 + off, bf16).fma(xv, a1);
                a2 = widen(w, o2 + off, bf16).fma(xv, a2);
                a3 = widen(w, o3 + off, bf16).fma(xv, a3);
            }
            float s0 = a0.reduceLanes(VectorOperators.ADD);
            float s1 = a1.reduceLanes(VectorOperators.ADD);
            float s2 = a2.reduceLanes(VectorOperators.ADD);
            float s3 = a3.reduceLanes(VectorOperators.ADD);
            for (int c = body; c < k; c++) {
                s0 += scalar(w, o0 + 2 * c, bf16) * x[c];
                s1 += scalar(w, o1 + 2 * c, bf16) * x[c];
                s2 += scalar(w, o2 + 2 * c, bf16) * x[c];
                s3 += scalar(w, o3 + 2 * c, bf16) * x[c];
            }
            y[r] = s0;
            y[r + 1] = s1;
            y[r + 2] = s2;
            y[r + 3] = s3;
        }
        for (; r < r1; r++) {
            int o = (int) ((long) (r - rowBase) * k * 2);
            FloatVector a = FloatVector.zero(F);
            for (int c = 0; c < body; c += L) {
                a = widen(w, o + 2 * c, bf16).fma(FloatVector.fromArray(F, x, c), a);
            }
            float s = a.reduceLanes(VectorOperators.ADD);
            for (int c = body; c < k; c++) {
                s += scalar(w, o + 2 * c, bf16) * x[c];
            }
            y[r] = s;
        }
    }

    private static FloatVector widen(ByteBuffer w, int offset, boolean bf16) {
        ShortVector s = ShortVector.fromByteBuffer(S, w, offset, ByteOrder.LITTLE_ENDIAN);
        IntVector i = (IntVector) s.convertShape(VectorOperators.S2I, I, 0);
        if (bf16) {
            return i.lanewise(VectorOperators.LSHL, 16).reinterpretAsFloats();
        }
        return i.lanewise(VectorOperators.LSHL, 13).lanewise(VectorOperators.AND, HALF_BITS).reinterpretAsFloats()
                .mul(HALF_RESCALE);
    }

    private static float scalar(ByteBuffer w, int offset, boolean bf16) {
        int h = w.getShort(offset);
        if (bf16) {
            return Float.intBitsToFloat(h << 16);
        }
        return Float.intBitsToFloat((h << 13) & HALF_BITS) * HALF_RESCALE;
    }
}
