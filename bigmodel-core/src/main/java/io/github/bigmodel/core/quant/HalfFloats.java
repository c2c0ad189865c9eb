package io.github.bigmodel.core.quant;

/**
 * Conversions between float32 and the two 16-bit float formats, rounding to nearest even as libtorch's
 * {@code .to(float16)} / {@code .to(bfloat16)} on the CPU do, for code that reads and writes weight bytes without
 * libtorch ({@link RowQuantizer}). Java 17 has no {@code Float.floatToFloat16}, hence these.
 *
 * <pre>{@code
 * short h = HalfFloats.toHalf(1.0f);              // 0x3C00
 * float back = HalfFloats.halfToFloat(h);          // 1.0f
 * short b = HalfFloats.toBFloat16(1.0f);          // 0x3F80
 * }</pre>
 */
final class HalfFloats {

    /** The float value of every half-precision bit pattern, indexed by the unsigned 16 bits. */
    private static final float[] HALF_VALUES = new float[1 << 16];

    static {
        for (int h = 0; h < HALF_VALUES.length; h++) {
            HALF_VALUES[h] = decodeHalf(h);
        }
    }

    private HalfFloats() {
    }

    /** The value of half-precision bits {@code h} (the low 16 bits are read). */
    static float halfToFloat(short h) {
        return HALF_VALUES[h & 0xffff];
    }

    /** The value of bfloat16 bits {@code b}: the top half of a float32. */
    static float bfloat16ToFloat(short b) {
        return Float.intBitsToFloat((b & 0xffff) << 16);
    }

    private static float decodeHalf(int h) {
        int sign = (h & 0x8000) << 16;
        int exp = (h >>> 10) & 0x1f;
        int mant = h & 0x3ff;
        if (exp == 0x1f) {
            return Float.intBitsToFloat(sign | 0x7f800000 | (mant << 13));
        }
        if (exp != 0) {
            return Float.intBitsToFloat(sign | ((exp + 112) << 23) | (mant << 13));
        }
        // zero or subnormal: mant * 2^-24, exact in float32
        float v = mant * 0x1.0p-24f;
        return sign != 0 ? -v : v;
    }

    /** {@code f} rounded to the nearest half-precision value, ties to even; overflow gives infinity, NaN stays NaN. */
    static short toHalf(float f) {
        int x = Float.floatToRawIntBits(f);
        int sign = (x >>> 16) & 0x8000;
        int a = x & 0x7fffffff;
        if (a > 0x7f800000) {
            return (short) (sign | 0x7e00);
        }
        if (a >= 0x47800000) { // 65536 and up (infinity included): past the largest finite half even before rounding
            return (short) (sign | 0x7c00);
        }
        int e = (a >>> 23) - 127;
        if (e >= -14) {
            int m = a & 0x7fffff;
            int h = ((e + 15) << 10) | (m >>> 13);
            int rest = m & 0x1fff;
            if (rest > 0x1000 || (rest == 0x1000 && (h & 1) != 0)) {
                h++; // a carry into the exponent is right, also up to infinity (0x7c00) from 65520 on
            }
            return (short) (sign | h);
        }
        if (e < -25) {
            return (short) sign; // under half the smallest subnormal (2^-25): zero
        }
        // A subnormal half counts units of 2^-24; the float is (2^23 + m) * 2^(e - 23).
        int full = (a & 0x7fffff) | 0x800000;
        int shift = -e - 1;
        int h = full >>> shift;
        int rest = full & ((1 << shift) - 1);
        int halfway = 1 << (shift - 1);
        if (rest > halfway || (rest == halfway && (h & 1) != 0)) {
            h++;
        }
        return (short) (sign | h);
    }

    /** {@code f} rounded to the nearest bfloat16 value, ties to even; NaN becomes the quiet NaN {@code 0x7fc0}. */
    static short toBFloat16(float f) {
        int x = Float.floatToRawIntBits(f);
        if ((x & 0x7fffffff) > 0x7f800000) {
            return (short) ((x >>> 16) & 0x8000 | 0x7fc0);
        }
        return (short) ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16);
    }
}
