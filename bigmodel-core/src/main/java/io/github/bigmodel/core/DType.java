package io.github.bigmodel.core;

import java.util.Locale;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * Element types of weights and activations, with their sizes and their names in safetensors, in PyTorch and in
 * libtorch.
 *
 * <p>{@link #INT4} is a storage format, not a libtorch type: two weights per byte, 0.5 byte each. It has no
 * libtorch scalar type of its own ({@link #scalarType()} throws); packed int4 tensors are held as uint8.
 *
 * <pre>{@code
 * DType t = DType.parse("bf16");            // BFLOAT16
 * long bytes = t.bytesFor(4096L * 4096);    // 33554432
 * DType s = DType.fromSafetensors("F16");   // FLOAT16
 * }</pre>
 */
public enum DType {
    FLOAT64("F64", "float64", 64, true),
    FLOAT32("F32", "float32", 32, true),
    FLOAT16("F16", "float16", 16, true),
    BFLOAT16("BF16", "bfloat16", 16, true),
    FLOAT8_E4M3("F8_E4M3", "float8_e4m3fn", 8, true),
    FLOAT8_E5M2("F8_E5M2", "float8_e5m2", 8, true),
    INT64("I64", "int64", 64, false),
    INT32("I32", "int32", 32, false),
    INT16("I16", "int16", 16, false),
    INT8("I8", "int8", 8, false),
    UINT64("U64", "uint64", 64, false),
    UINT32("U32", "uint32", 32, false),
    UINT16("U16", "uint16", 16, false),
    UINT8("U8", "uint8", 8, false),
    BOOL("BOOL", "bool", 8, false),
    /** Packed 4-bit integers (0.5 byte per element); a quantized storage format. */
    INT4("I4", "int4", 4, false);

    private final String safetensorsName;
    private final String torchName;
    private final int bits;
    private final boolean floatingPoint;

    DType(String safetensorsName, String torchName, int bits, boolean floatingPoint) {
        this.safetensorsName = safetensorsName;
        this.torchName = torchName;
        this.bits = bits;
        this.floatingPoint = floatingPoint;
    }

    /** The dtype string of the safetensors header ({@code "F32"}, {@code "BF16"}, ...). */
    public String safetensorsName() {
        return safetensorsName;
    }

    /** PyTorch's name without the {@code torch.} prefix ({@code "float16"}). */
    public String torchName() {
        return torchName;
    }

    /** Storage bits per element (bool is stored as one byte). */
    public int bits() {
        return bits;
    }

    /** Bytes per element as a double: 0.5 for int4. */
    public double bytesPerElement() {
        return bits / 8.0;
    }

    /**
     * Bytes needed to store {@code numel} elements (int4 rounds up to whole bytes).
     *
     * @throws IllegalArgumentException for a negative count
     * @throws ArithmeticException when the byte count does not fit in a long
     */
    public long bytesFor(long numel) {
        if (numel < 0) {
            throw new IllegalArgumentException("Element count must be >= 0, got " + numel);
        }
        // Exact: a wrapped product would be a negative or tiny size, planned and allocated silently.
        return Math.addExact(Math.multiplyExact(numel, (long) bits), 7L) / 8;
    }

    public boolean isFloatingPoint() {
        return floatingPoint;
    }

    /** Whether libtorch has a scalar type for this dtype (all but {@link #INT4}). */
    public boolean hasScalarType() {
        return this != INT4;
    }

    /** The libtorch scalar type. */
    public ScalarType scalarType() {
        switch (this) {
            case FLOAT64: return ScalarType.Double;
            case FLOAT32: return ScalarType.Float;
            case FLOAT16: return ScalarType.Half;
            case BFLOAT16: return ScalarType.BFloat16;
            case FLOAT8_E4M3: return ScalarType.Float8_e4m3fn;
            case FLOAT8_E5M2: return ScalarType.Float8_e5m2;
            case INT64: return ScalarType.Long;
            case INT32: return ScalarType.Int;
            case INT16: return ScalarType.Short;
            case INT8: return ScalarType.Char;
            case UINT64: return ScalarType.UInt64;
            case UINT32: return ScalarType.UInt32;
            case UINT16: return ScalarType.UInt16;
            case UINT8: return ScalarType.Byte;
            case BOOL: return ScalarType.Bool;
            default:
                throw new UnsupportedOperationException(
                        "int4 has no libtorch scalar type: packed int4 weights are held as uint8");
        }
    }

    /**
     * The dtype of a libtorch scalar type. Compares by value: JavaCPP can hand back enum instances that are not
     * the canonical constants.
     */
    public static DType of(ScalarType type) {
        for (DType d : values()) {
            if (d.hasScalarType() && d.scalarType().value == type.value) {
                return d;
            }
        }
        throw new IllegalArgumentException("libtorch scalar type " + type + " has no bigmodel dtype");
    }

    /**
     * The dtype named by a safetensors header string.
     *
     * @throws IllegalArgumentException naming the string when it is not a safetensors dtype
     */
    public static DType fromSafetensors(String name) {
        for (DType d : values()) {
            if (d != INT4 && d.safetensorsName.equals(name)) {
                return d;
            }
        }
        throw new IllegalArgumentException("Unknown safetensors dtype '" + name + "'");
    }

    /**
     * Parses a user-facing name: PyTorch's ({@code float16}, {@code torch.bfloat16}), short ones ({@code fp16},
     * {@code bf16}, {@code fp32}, {@code half}, {@code float}, {@code int4}) or safetensors' ({@code F16}).
     *
     * @throws IllegalArgumentException naming the text when it is no dtype
     */
    public static DType parse(String text) {
        if (text == null) {
            throw new IllegalArgumentException("dtype must not be null");
        }
        String s = text.trim();
        if (s.startsWith("torch.")) {
            s = s.substring("torch.".length());
        }
        for (DType d : values()) {
            if (d.torchName.equals(s) || d.safetensorsName.equals(s)) {
                return d;
            }
        }
        switch (s.toLowerCase(Locale.ROOT)) {
            case "fp64": case "double": return FLOAT64;
            case "fp32": case "float": return FLOAT32;
            case "fp16": case "half": return FLOAT16;
            case "bf16": return BFLOAT16;
            case "long": return INT64;
            case "int": return INT32;
            case "short": return INT16;
            case "fp8": return FLOAT8_E4M3;
            default:
                throw new IllegalArgumentException("Unknown dtype '" + text
                        + "': expected float32, float16, bfloat16, int8, int4 (or fp32, fp16, bf16, ...)");
        }
    }
}
