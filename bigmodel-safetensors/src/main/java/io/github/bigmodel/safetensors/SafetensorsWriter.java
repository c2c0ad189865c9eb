package io.github.bigmodel.safetensors;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonGenerator;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.NativeRuntime;
import io.github.bigmodel.core.Tensors;
import io.github.bigmodel.safetensors.CheckpointException.Reason;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Set;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.pytorch.Tensor;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Writes a safetensors file tensor by tensor, never holding more than the tensor (or chunk) being written.
 *
 * <p>Every entry (name, dtype, shape) and the metadata are declared up front, so the header is written first;
 * then each entry's bytes are written in the declared order, either as one {@link Tensor} or as any number of
 * {@link ByteBuffer} chunks that add up to the entry's size. The header is padded with spaces so the data section
 * starts on a 64-byte boundary, the alignment of libtorch's own CPU allocations: a tensor whose offset in the data is
 * a multiple of 64 (every tensor after entries of 64-byte multiples, as in ChatGLM's layers) can then be used in
 * place even by kernels that read with aligned vector loads.
 *
 * <p>Bytes go to a temporary file in the target's folder; {@link #close()} checks that every entry got exactly its
 * bytes, then renames the temporary file onto the target atomically. On any error (a wrong call, an I/O failure, a
 * missing entry at close) the temporary file is deleted and nothing appears at the target.
 *
 * <p>Not thread-safe: one writer is fed by one thread.
 *
 * <pre>{@code
 * List<SafetensorsWriter.Entry> entries = List.of(
 *         SafetensorsWriter.Entry.of("w", DType.FLOAT32, 4, 4),
 *         SafetensorsWriter.Entry.of("step", DType.INT64));
 * try (SafetensorsWriter w = SafetensorsWriter.create(Path.of("out.safetensors"), entries, Map.of("format", "pt"))) {
 *     w.write("w", weight);                 // a CPU tensor of dtype float32, shape [4, 4]
 *     w.write("step", stepBytes);           // or raw little-endian bytes, possibly in several chunks
 * }
 * }</pre>
 */
public final class SafetensorsWriter implements AutoCloseable {

    private static final Logger LOG = LoggerFactory.getLogger(SafetensorsWriter.class);
    /** Largest slice of a tensor handed to the channel at once (a ByteBuffer addresses at most 2 GiB). */
    private static final long MAX_SLICE = 1L << 30;

    /** One declared tensor: its name, dtype and shape. */
    public static final class Entry {
        private final String name;
        private final DType dtype;
        private final long[] shape;
        private final long byteLength;

        private Entry(String name, DType dtype, long[] shape) {
            this.name = Objects.requireNonNull(name, "name");
            this.dtype = Objects.requireNonNull(dtype, "dtype");
            this.shape = shape.clone();
            if (!dtype.hasScalarType()) {
                throw new IllegalArgumentException(name + ": dtype " + dtype + " cannot be stored in safetensors");
            }
            long numel = 1;
            for (long d : this.shape) {
                if (d < 0) {
                    throw new IllegalArgumentException(name + ": negative dimension in " + Arrays.toString(shape));
                }
                numel = Math.multiplyExact(numel, d);
            }
            this.byteLength = Math.multiplyExact(numel, (long) dtype.bits() / 8);
        }

        /** An entry; an empty shape is a scalar. */
        public static Entry of(String name, DType dtype, long... shape) {
            return new Entry(name, dtype, shape);
        }

        public String name() {
            return name;
        }

        public DType dtype() {
            return dtype;
        }

        public long[] shape() {
            return shape.clone();
        }

        /** {@code numel * element size}. */
        public long byteLength() {
            return byteLength;
        }

        @Override
        public String toString() {
            return name + " " + dtype.safetensorsName() + Arrays.toString(shape);
        }
    }

    private final Path target;
    private final Path temp;
    private final FileChannel channel;
    private final List<Entry> entries;
    private final Map<String, Integer> indexOf = new LinkedHashMap<>();
    /** Index of the entry being written; entries before it are complete. */
    private int current;
    /** Bytes of the current entry written so far. */
    private long writtenOfCurrent;
    private boolean failed;
    private boolean closed;

    private SafetensorsWriter(Path target, Path temp, FileChannel channel, List<Entry> entries) {
        this.target = target;
        this.temp = temp;
        this.channel = channel;
        this.entries = entries;
        for (int i = 0; i < entries.size(); i++) {
            indexOf.put(entries.get(i).name(), i);
        }
    }

    /**
     * Starts a file at {@code target} with these entries (in this order) and metadata; writes the header now.
     *
     * @throws IllegalArgumentException for duplicate or reserved names
     * @throws CheckpointException with {@link Reason#IO_ERROR} when the temporary file cannot be written
     */
    public static SafetensorsWriter create(Path target, List<Entry> entries, Map<String, String> metadata) {
        Set<String> names = new HashSet<>();
        for (Entry e : entries) {
            if (SafetensorsHeader.METADATA_KEY.equals(e.name())) {
                throw new IllegalArgumentException("'" + e.name() + "' is reserved for the metadata");
            }
            if (!names.add(e.name())) {
                throw new IllegalArgumentException("tensor '" + e.name() + "' is declared twice");
            }
        }
        byte[] header = header(entries, metadata);
        Path absolute = target.toAbsolutePath();
        Path dir = absolute.getParent();
        Path temp = null;
        try {
            temp = Files.createTempFile(dir, "." + absolute.getFileName() + ".", ".tmp");
            FileChannel channel = FileChannel.open(temp, StandardOpenOption.WRITE);
            try {
                ByteBuffer prefix = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(header.length);
                prefix.flip();
                writeFully(channel, prefix);
                writeFully(channel, ByteBuffer.wrap(header));
            } catch (IOException | RuntimeException e) {
                channel.close();
                throw e;
            }
            return new SafetensorsWriter(absolute, temp, channel, List.copyOf(entries));
        } catch (IOException e) {
            deleteQuietly(temp);
            throw new CheckpointException(Reason.IO_ERROR, target, null, "cannot start writing: " + e, e);
        }
    }

    /** The header JSON padded with spaces so that {@code 8 + length} is a multiple of {@link #DATA_ALIGNMENT}. */
    /** Where the data section starts: a multiple of this many bytes. */
    static final long DATA_ALIGNMENT = 64;

    private static byte[] header(List<Entry> entries, Map<String, String> metadata) {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        try (JsonGenerator g = new JsonFactory().createGenerator(out)) {
            g.writeStartObject();
            if (metadata != null && !metadata.isEmpty()) {
                g.writeObjectFieldStart(SafetensorsHeader.METADATA_KEY);
                for (Map.Entry<String, String> m : metadata.entrySet()) {
                    g.writeStringField(m.getKey(), m.getValue());
                }
                g.writeEndObject();
            }
            long offset = 0;
            for (Entry e : entries) {
                g.writeObjectFieldStart(e.name());
                g.writeStringField("dtype", e.dtype().safetensorsName());
                g.writeArrayFieldStart("shape");
                for (long d : e.shape) {
                    g.writeNumber(d);
                }
                g.writeEndArray();
                g.writeArrayFieldStart("data_offsets");
                g.writeNumber(offset);
                g.writeNumber(offset + e.byteLength());
                g.writeEndArray();
                g.writeEndObject();
                offset += e.byteLength();
            }
            g.writeEndObject();
        } catch (IOException e) {
            throw new IllegalStateException("cannot encode the header", e);
        }
        byte[] bytes = out.toByteArray();
        int padding = (int) ((DATA_ALIGNMENT - (8 + bytes.length) % DATA_ALIGNMENT) % DATA_ALIGNMENT);
        if (padding == 0) {
            return bytes;
        }
        byte[] padded = Arrays.copyOf(bytes, bytes.length + padding);
        Arrays.fill(padded, bytes.length, padded.length, (byte) ' ');
        return padded;
    }

    /**
     * Writes the whole of entry {@code name} from a CPU tensor of the declared dtype and shape (copied to a
     * contiguous layout first when it is not).
     *
     * @throws IllegalStateException when {@code name} is not the next entry to write
     * @throws IllegalArgumentException when the tensor does not match the declaration or is not on the CPU
     */
    public void write(String name, Tensor tensor) {
        Entry e = expect(name);
        try {
            if (writtenOfCurrent != 0) {
                throw new IllegalStateException(name + ": a whole tensor cannot follow chunks already written");
            }
            if (tensor.is_cuda() || tensor.is_meta() || Tensors.deviceOf(tensor) != io.github.bigmodel.core.Device.CPU) {
                throw new IllegalArgumentException(name + ": only CPU tensors can be written");
            }
            DType dtype = DType.of(tensor.scalar_type().intern());
            long[] shape = Tensors.shape(tensor);
            if (dtype != e.dtype() || !Arrays.equals(shape, e.shape)) {
                throw new IllegalArgumentException(name + ": declared " + e + " but got "
                        + dtype.safetensorsName() + Arrays.toString(shape));
            }
            NativeRuntime.init();
            if (e.byteLength() > 0) {
                if (tensor.is_contiguous()) {
                    writeNative(tensor, e.byteLength());
                } else {
                    try (Tensor contiguous = tensor.contiguous()) {
                        writeNative(contiguous, e.byteLength());
                    }
                }
            }
            writtenOfCurrent = e.byteLength();
            advance();
        } catch (RuntimeException ex) {
            fail();
            throw ex;
        }
    }

    private void writeNative(Tensor contiguous, long length) {
        BytePointer base = new BytePointer(contiguous.data_ptr());
        try {
            for (long at = 0; at < length; at += MAX_SLICE) {
                long n = Math.min(MAX_SLICE, length - at);
                BytePointer slice = base.getPointer(at);
                slice.capacity(n);
                writeFully(channel, slice.asByteBuffer());
            }
        } catch (IOException ex) {
            throw new CheckpointException(Reason.IO_ERROR, target, null, "write failed: " + ex, ex);
        }
    }

    /**
     * Appends the remaining bytes of {@code chunk} (raw little-endian values) to entry {@code name}; an entry may
     * be written in any number of chunks. The buffer's position is left unchanged.
     *
     * @throws IllegalStateException when {@code name} is not the entry being written
     * @throws IllegalArgumentException when the chunk would exceed the entry's byte count
     */
    public void write(String name, ByteBuffer chunk) {
        Entry e = expect(name);
        try {
            long n = chunk.remaining();
            if (writtenOfCurrent + n > e.byteLength()) {
                throw new IllegalArgumentException(name + ": " + (writtenOfCurrent + n) + " bytes written but "
                        + e + " holds " + e.byteLength());
            }
            writeFully(channel, chunk.duplicate());
            writtenOfCurrent += n;
            advance();
        } catch (IOException ex) {
            fail();
            throw new CheckpointException(Reason.IO_ERROR, target, name, "write failed: " + ex, ex);
        } catch (RuntimeException ex) {
            fail();
            throw ex;
        }
    }

    /** The declared entry {@code name}, if it is the one to write now. */
    private Entry expect(String name) {
        if (closed || failed) {
            throw new IllegalStateException("writer for " + target + " is " + (closed ? "closed" : "failed"));
        }
        Integer index = indexOf.get(name);
        if (index == null) {
            fail();
            throw new IllegalArgumentException("tensor '" + name + "' was not declared for " + target);
        }
        // Zero-byte entries need no call: the caller may step over them.
        int next = current;
        while (next < index && writtenOfCurrent == 0 && entries.get(next).byteLength() == 0) {
            next++;
        }
        if (index != next) {
            fail();
            String expected = current < entries.size() ? "'" + entries.get(current).name() + "'" : "nothing more";
            throw new IllegalStateException("tensor '" + name + "' written out of order: expected " + expected
                    + " (entries are written in declared order)");
        }
        current = next;
        return entries.get(index);
    }

    private void advance() {
        if (writtenOfCurrent == entries.get(current).byteLength()) {
            current++;
            writtenOfCurrent = 0;
        }
    }

    private void fail() {
        failed = true;
    }

    private static void writeFully(FileChannel channel, ByteBuffer buffer) throws IOException {
        while (buffer.hasRemaining()) {
            channel.write(buffer);
        }
    }

    /** The first declared entry still missing bytes, described, or null when all are complete. */
    private String firstIncomplete() {
        for (int i = current; i < entries.size(); i++) {
            Entry e = entries.get(i);
            long done = i == current ? writtenOfCurrent : 0;
            if (done != e.byteLength()) {
                return e + " (" + done + " of " + e.byteLength() + " bytes written)";
            }
        }
        return null;
    }

    /** Discards everything written; nothing appears at the target. Idempotent. */
    public void abort() {
        failed = true;
        close();
    }

    /**
     * Finishes the file: checks that every entry was written completely and renames the temporary file onto the
     * target. After a failure it only deletes the temporary file.
     *
     * @throws IllegalStateException naming the first incomplete entry (the temporary file is then deleted)
     */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        String incomplete = failed ? null : firstIncomplete();
        boolean commit = !failed && incomplete == null;
        try {
            if (commit) {
                channel.force(false);
            }
            channel.close();
            if (commit) {
                Files.move(temp, target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
                LOG.debug("Wrote {} ({} tensors)", target, entries.size());
                return;
            }
        } catch (IOException e) {
            deleteQuietly(temp);
            throw new CheckpointException(Reason.IO_ERROR, target, null, "cannot finish the file: " + e, e);
        }
        deleteQuietly(temp);
        if (incomplete != null) {
            throw new IllegalStateException(target + ": not written completely, first missing " + incomplete
                    + "; nothing was written to the target");
        }
    }

    private static void deleteQuietly(Path p) {
        if (p == null) {
            return;
        }
        try {
            Files.deleteIfExists(p);
        } catch (IOException e) {
            LOG.warn("Cannot delete temporary file {}: {}", p, e.toString());
        }
    }
}
