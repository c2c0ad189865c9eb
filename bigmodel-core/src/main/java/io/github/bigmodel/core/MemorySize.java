package io.github.bigmodel.core;

import java.util.Locale;
import java.util.regex.Pattern;

/**
 * Memory sizes written the way accelerate's {@code max_memory} takes them.
 *
 * <p>{@code GiB}/{@code MiB}/{@code KiB} are powers of two, {@code GB}/{@code MB}/{@code KB} powers of ten, in any
 * letter case; the number may be fractional or in exponent form ({@code "1.5 GiB"}, {@code "1e3MB"}) and the
 * product is truncated to whole bytes. One rule is kept from accelerate for parity: when the last character is a
 * lowercase {@code b} the decimal units count <em>bits</em> ({@code "10Gb"} and {@code "10gb"} are 1.25 GB). A
 * plain byte count is a number, not a string: {@link #ofBytes(long)}, or a JSON integer.
 *
 * <pre>{@code
 * long a = MemorySize.parse("10GiB");    // 10737418240
 * long b = MemorySize.parse("10GB");     // 10000000000
 * long c = MemorySize.parseBudget(1000); // 1000
 * MemorySize.parse("10 potatoes");       // IllegalArgumentException naming "10 potatoes"
 * }</pre>
 */
public final class MemorySize {

    // Python's float() grammar for finite decimals: digits may be grouped with single underscores.
    private static final String DIGITS = "\\d(?:_?\\d)*";
    private static final Pattern NUMBER = Pattern.compile(
            "[+-]?(?:" + DIGITS + "(?:\\.(?:" + DIGITS + ")?)?|\\." + DIGITS + ")(?:[eE][+-]?" + DIGITS + ")?");

    private MemorySize() {
    }

    /** A byte count, checked to be non-negative. */
    public static long ofBytes(long bytes) {
        if (bytes < 0) {
            throw new IllegalArgumentException("A memory size cannot be negative: " + bytes);
        }
        return bytes;
    }

    /** A budget given as a JSON-like value: an integral number of bytes or a unit string. */
    public static long parseBudget(Object value) {
        if (value instanceof Integer || value instanceof Long || value instanceof Short) {
            return ofBytes(((Number) value).longValue());
        }
        if (value instanceof String) {
            return parse((String) value);
        }
        throw new IllegalArgumentException(invalid(String.valueOf(value)));
    }

    /**
     * Parses a size string with a unit.
     *
     * @throws IllegalArgumentException naming the string when it has no valid number and unit or is negative
     */
    public static long parse(String size) {
        if (size == null) {
            throw new IllegalArgumentException("A memory size must not be null");
        }
        String upper = size.toUpperCase(Locale.ROOT);
        long multiplier;
        int unitLength;
        boolean binary = upper.endsWith("GIB") || upper.endsWith("MIB") || upper.endsWith("KIB");
        if (binary) {
            unitLength = 3;
            multiplier = unitMultiplier(upper.charAt(upper.length() - 3), true);
        } else if (upper.endsWith("GB") || upper.endsWith("MB") || upper.endsWith("KB")) {
            unitLength = 2;
            multiplier = unitMultiplier(upper.charAt(upper.length() - 2), false);
        } else {
            throw new IllegalArgumentException(invalid(size));
        }
        String number = size.substring(0, size.length() - unitLength).strip();
        if (!NUMBER.matcher(number).matches()) {
            throw new IllegalArgumentException(invalid(size));
        }
        double value = Double.parseDouble(number.replace("_", ""));
        double product = value * multiplier;
        if (Double.isNaN(product) || Double.isInfinite(product) || product >= 0x1p63) {
            throw new IllegalArgumentException(invalid(size));
        }
        long bytes = (long) product; // truncation toward zero, as Python's int()
        if (!binary && size.endsWith("b")) {
            bytes = Math.floorDiv(bytes, 8L);
        }
        if (bytes < 0) {
            throw new IllegalArgumentException(invalid(size));
        }
        return bytes;
    }

    private static long unitMultiplier(char unit, boolean binary) {
        switch (unit) {
            case 'G': return binary ? 1L << 30 : 1_000_000_000L;
            case 'M': return binary ? 1L << 20 : 1_000_000L;
            default: return binary ? 1L << 10 : 1_000L;
        }
    }

    private static String invalid(String size) {
        return "`size` " + size + " is not in a valid format. Use an integer for bytes, or a string with an unit"
                + " (like '5.0GB').";
    }

    /** A human-readable size in binary units, e.g. {@code "1.50 GiB"}. */
    public static String format(double bytes) {
        String[] units = {"B", "KiB", "MiB", "GiB", "TiB"};
        int u = 0;
        double v = bytes;
        while (Math.abs(v) >= 1024 && u < units.length - 1) {
            v /= 1024;
            u++;
        }
        return u == 0 ? String.format(Locale.ROOT, "%.0f B", v) : String.format(Locale.ROOT, "%.2f %s", v, units[u]);
    }
}
