package io.github.bigmodel.dispatch;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.github.bigmodel.core.DType;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * accelerate's disk-offload folder format: one raw little-endian {@code <name>.dat} file per tensor (no header)
 * and an {@code index.json} of {@code {name: {"dtype": ..., "shape": [...]}}} written with two-space indentation and
 * merged into the index already there. bfloat16 is stored as its 16-bit pattern under {@code "bfloat16"}, a
 * 0-d tensor as one element with {@code "shape": []}, bool as one byte per element.
 *
 * <pre>{@code
 * OffloadFolder folder = new OffloadFolder(Path.of("offload"));
 * folder.write("layer.bias", DType.FLOAT32, new long[] {2}, littleEndianBytes);
 * folder.saveIndex();                 // offload/index.json, merged with any existing one
 * }</pre>
 */
public final class OffloadFolder {

    private static final ObjectMapper JSON = new ObjectMapper();

    private final Path dir;
    private final Map<String, Entry> index = new LinkedHashMap<>();

    /** One index entry: numpy's dtype name and the logical shape. */
    public record Entry(String dtype, long[] shape) {
        public Entry {
            shape = shape.clone();
        }

        @Override
        public long[] shape() {
            return shape.clone();
        }
    }

    /** A folder (created when missing) to offload into. */
    public OffloadFolder(Path dir) {
        this.dir = dir;
    }

    public Path directory() {
        return dir;
    }

    /**
     * Writes one tensor's raw little-endian bytes as {@code <name>.dat} and records it for the index.
     *
     * @throws IllegalArgumentException when the name is unusable as a file name, the dtype has no byte layout
     *     (int4) or the byte count does not match dtype x shape
     */
    public void write(String name, DType dtype, long[] shape, byte[] littleEndianBytes) {
        if (name == null || name.isEmpty() || name.contains("/") || name.contains("\\") || name.equals(".")
                || name.equals("..")) {
            throw new IllegalArgumentException("Invalid offload tensor name '" + name + "'");
        }
        if (dtype == DType.INT4) {
            throw new IllegalArgumentException("Tensor '" + name + "': int4 has no numpy layout; offload packed"
                    + " int4 weights as uint8");
        }
        long numel = 1;
        for (long d : shape) {
            if (d < 0) {
                throw new IllegalArgumentException("Tensor '" + name + "': negative dimension in "
                        + Arrays.toString(shape));
            }
            numel = Math.multiplyExact(numel, d);
        }
        long expected = numel * (dtype.bits() / 8);
        if (littleEndianBytes.length != expected) {
            throw new IllegalArgumentException("Tensor '" + name + "' (" + dtype.torchName() + Arrays.toString(shape)
                    + ") needs " + expected + " bytes, got " + littleEndianBytes.length);
        }
        try {
            Files.createDirectories(dir);
            Files.write(dir.resolve(name + ".dat"), littleEndianBytes);
        } catch (IOException e) {
            throw new UncheckedIOException("Cannot write offloaded tensor " + name + " to " + dir, e);
        }
        index.put(name, new Entry(dtype.torchName(), shape));
    }

    /** The entries written through this object, in order. */
    public Map<String, Entry> entries() {
        return java.util.Collections.unmodifiableMap(index);
    }

    /**
     * Writes {@code index.json}: the existing index (if any) updated with this object's entries (existing names keep
     * their place, new ones are appended), formatted as Python's {@code json.dump(index, f, indent=2)}.
     *
     * @return the text written
     */
    public String saveIndex() {
        if (index.isEmpty()) {
            return "";
        }
        Path file = dir.resolve("index.json");
        Map<String, Entry> merged = new LinkedHashMap<>();
        try {
            if (Files.isRegularFile(file)) {
                JsonNode root = JSON.readTree(Files.readString(file, StandardCharsets.UTF_8));
                if (root == null || !root.isObject()) {
                    throw new IllegalArgumentException("Existing offload index " + file + " is not a JSON object");
                }
                Iterator<Map.Entry<String, JsonNode>> it = root.fields();
                while (it.hasNext()) {
                    Map.Entry<String, JsonNode> e = it.next();
                    List<Long> dims = new ArrayList<>();
                    e.getValue().path("shape").forEach(d -> dims.add(d.asLong()));
                    merged.put(e.getKey(), new Entry(e.getValue().path("dtype").asText(),
                            dims.stream().mapToLong(Long::longValue).toArray()));
                }
            }
            merged.putAll(index);
            String text = format(merged);
            Files.createDirectories(dir);
            Files.writeString(file, text, StandardCharsets.UTF_8);
            return text;
        } catch (IOException e) {
            throw new UncheckedIOException("Cannot write offload index " + file, e);
        }
    }

    /** Python's {@code json.dumps(index, indent=2)} for an offload index. */
    static String format(Map<String, Entry> index) {
        if (index.isEmpty()) {
            return "{}";
        }
        StringBuilder sb = new StringBuilder("{\n");
        int i = 0;
        for (Map.Entry<String, Entry> e : index.entrySet()) {
            sb.append("  ").append(quote(e.getKey())).append(": {\n");
            sb.append("    \"dtype\": ").append(quote(e.getValue().dtype())).append(",\n");
            sb.append("    \"shape\": ");
            long[] shape = e.getValue().shape();
            if (shape.length == 0) {
                sb.append("[]");
            } else {
                sb.append("[\n");
                for (int d = 0; d < shape.length; d++) {
                    sb.append("      ").append(shape[d]).append(d + 1 < shape.length ? ",\n" : "\n");
                }
                sb.append("    ]");
            }
            sb.append("\n  }").append(++i < index.size() ? ",\n" : "\n");
        }
        return sb.append("}").toString();
    }

    /** A JSON string as Python writes it with ensure_ascii: non-ASCII as \\uXXXX. */
    private static String quote(String s) {
        StringBuilder sb = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            switch (c) {
                case '"': sb.append("\\\""); break;
                case '\\': sb.append("\\\\"); break;
                case '\n': sb.append("\\n"); break;
                case '\r': sb.append("\\r"); break;
                case '\t': sb.append("\\t"); break;
                case '\b': sb.append("\\b"); break;
                case '\f': sb.append("\\f"); break;
                default:
                    if (c < 0x20 || c > 0x7f) {
                        sb.append(String.format("\\u%04x", (int) c));
                    } else {
                        sb.append(c);
                    }
            }
        }
        return sb.append('"').toString();
    }
}
