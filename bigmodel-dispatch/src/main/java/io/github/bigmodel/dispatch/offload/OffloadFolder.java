package io.github.bigmodel.dispatch.offload;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.github.bigmodel.core.DType;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import io.github.bigmodel.core.Tensors;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.pytorch.Tensor;

/**
 * accelerate's disk-offload folder format: one raw little-endian {@code <name>.dat} file per tensor (no header)
 * and an {@code index.json} of {@code {name: {"dtype": ..., "shape": [...]}}} written with two-space indentation and
 * merged into the index already there. bfloat16 is stored as its 16-bit pattern under {@code "bfloat16"}, a
 * 0-d tensor as one element with {@code "shape": []}, bool as one byte per element.
 *
 * <pre>{@code
 * OffloadFolder folder = new OffloadFolder(Path.of("offload"));
 * folder.write("layer.bias", DType.FLOAT32, new long[] {2}, littleEndianBytes);
 * folder.writeTensor("layer.weight", cpuTensor);   // streamed from native memory, temp file + atomic rename
 * folder.saveIndex();                 // offload/index.json, merged with any existing one
 * }</pre>
 *
 * <p>Files are written to a temporary name in the folder ({@code .<name>.<random>.tmp}) and renamed into place, so
 * a crash never leaves a truncated {@code .dat} or {@code index.json} under its final name.
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
        checkName(name);
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
        writeAtomically(dir.resolve(name + ".dat"), ByteBuffer.wrap(littleEndianBytes), null);
        index.put(name, new Entry(dtype.torchName(), shape));
    }

    /**
     * Streams a CPU tensor's values to {@code <name>.dat} (made contiguous first when needed; never copied into the
     * Java heap), synced to disk before the rename, and records it for the index.
     *
     * @return the number of bytes written
     * @throws IllegalArgumentException for an unusable name, a tensor not on the CPU, or int4
     * @throws UncheckedIOException when the folder cannot be written (read-only, full disk), naming the file
     */
    public long writeTensor(String name, Tensor cpuTensor) {
        checkName(name);
        if (!Tensors.deviceOf(cpuTensor).isCpu()) {
            throw new IllegalArgumentException("Tensor '" + name + "' must be on the CPU to be offloaded, it is on "
                    + Tensors.deviceOf(cpuTensor));
        }
        DType dtype = DType.of(cpuTensor.scalar_type());
        long[] shape = Tensors.shape(cpuTensor);
        long bytes = cpuTensor.nbytes();
        if (bytes == 0) {
            writeAtomically(dir.resolve(name + ".dat"), ByteBuffer.allocate(0), null);
        } else if (cpuTensor.is_contiguous()) {
            writeAtomically(dir.resolve(name + ".dat"), null, new BytePointer(cpuTensor.data_ptr()).capacity(bytes));
        } else {
            try (Tensor contiguous = cpuTensor.contiguous()) {
                writeAtomically(dir.resolve(name + ".dat"), null,
                        new BytePointer(contiguous.data_ptr()).capacity(bytes));
            }
        }
        index.put(name, new Entry(dtype.torchName(), shape));
        return bytes;
    }

    /** Records an index entry for a {@code .dat} file already in the folder (written by an earlier run). */
    public void record(String name, DType dtype, long[] shape) {
        checkName(name);
        index.put(name, new Entry(dtype.torchName(), shape));
    }

    private static void checkName(String name) {
        if (name == null || name.isEmpty() || name.contains("/") || name.contains("\\") || name.equals(".")
                || name.equals("..")) {
            throw new IllegalArgumentException("Invalid offload tensor name '" + name + "'");
        }
    }

    /** Largest slice handed to the channel at once (a ByteBuffer addresses at most 2 GiB). */
    private static final long MAX_SLICE = 1L << 30;

    /**
     * Writes {@code heap} or {@code nativeBytes} to a temporary file next to {@code target}, forces it to disk and
     * renames it onto {@code target}; on any failure the temporary file is removed.
     */
    public static void writeAtomically(Path target, ByteBuffer heap, BytePointer nativeBytes) {
        Path folder = target.toAbsolutePath().getParent();
        Path temp = null;
        try {
            Files.createDirectories(folder);
            temp = Files.createTempFile(folder, "." + target.getFileName() + ".", ".tmp");
            try (FileChannel ch = FileChannel.open(temp, StandardOpenOption.WRITE)) {
                if (heap != null) {
                    writeFully(ch, heap.duplicate());
                } else {
                    long length = nativeBytes.capacity();
                    for (long at = 0; at < length; at += MAX_SLICE) {
                        long n = Math.min(MAX_SLICE, length - at);
                        BytePointer slice = nativeBytes.getPointer(at);
                        slice.capacity(n);
                        writeFully(ch, slice.asByteBuffer());
                    }
                }
                // Durable before it becomes visible: a fingerprint must never vouch for bytes still in the cache.
                ch.force(false);
            }
            try {
                Files.move(temp, target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
            } catch (AtomicMoveNotSupportedException e) {
                Files.move(temp, target, StandardCopyOption.REPLACE_EXISTING);
            }
            temp = null;
        } catch (IOException e) {
            if (isDiskFull(e)) {
                long bytes = heap != null ? heap.remaining() : nativeBytes.capacity();
                throw new OffloadSpaceException(folder, bytes, usableBytes(folder), e);
            }
            throw new UncheckedIOException("Cannot write " + target + " (" + describe(e)
                    + "): the offload folder must be writable and have room for the offloaded weights", e);
        } finally {
            if (temp != null) {
                try {
                    Files.deleteIfExists(temp);
                } catch (IOException ignored) {
                    // The folder is failing already; the leftover temp file is never read as data.
                }
            }
        }
    }

    /** ENOSPC as the JDK reports it (also through an exception's cause). */
    static boolean isDiskFull(Throwable e) {
        for (Throwable t = e; t != null; t = t.getCause()) {
            String m = t.getMessage();
            if (m != null && (m.contains("No space left") || m.contains("Disk quota exceeded"))) {
                return true;
            }
        }
        return false;
    }

    /** Usable bytes of the file store holding {@code dir}, or -1 when they cannot be read. */
    static long usableBytes(Path dir) {
        try {
            return Files.getFileStore(dir).getUsableSpace();
        } catch (IOException | RuntimeException e) {
            return -1;
        }
    }

    private static String describe(IOException e) {
        String m = e.getMessage();
        if (e instanceof java.nio.file.AccessDeniedException
                || (m != null && m.contains("Read-only file system"))) {
            return "read-only: " + m;
        }
        if (m != null && m.contains("No space left")) {
            return "disk full: " + m;
        }
        return e.toString();
    }

    private static void writeFully(FileChannel ch, ByteBuffer b) throws IOException {
        while (b.hasRemaining()) {
            ch.write(b);
        }
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
            writeAtomically(file, ByteBuffer.wrap(text.getBytes(StandardCharsets.UTF_8)), null);
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
