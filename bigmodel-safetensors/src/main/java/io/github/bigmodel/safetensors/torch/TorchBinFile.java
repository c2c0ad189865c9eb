package io.github.bigmodel.safetensors.torch;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.NativeRuntime;
import io.github.bigmodel.safetensors.CheckpointException;
import io.github.bigmodel.safetensors.CheckpointException.Reason;
import io.github.bigmodel.safetensors.TensorFile;
import io.github.bigmodel.safetensors.TensorInfo;
import io.github.bigmodel.safetensors.torch.PickleReader.StorageRef;
import io.github.bigmodel.safetensors.torch.PickleReader.TensorRef;
import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.channels.Channels;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.zip.DataFormatException;
import java.util.zip.Inflater;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.BoolOptional;
import org.bytedeco.pytorch.LongOptional;
import org.bytedeco.pytorch.MemoryFormatOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A checkpoint written by {@code torch.save} in its zip format (the {@code pytorch_model*.bin} shards of Hugging Face
 * repositories), read without running any of its pickled code.
 *
 * <p>Opening parses the zip directory and the {@code data.pkl} pickle with a restricted reader that only knows
 * tensors, storages and plain containers, then checks every tensor against its storage entry. Loading a tensor maps
 * the zip file once (copy-on-write) and returns a zero-copy strided view of the storage's bytes; entries that are
 * compressed or not aligned to their element size are copied instead.
 *
 * <pre>{@code
 * try (TorchBinFile f = TorchBinFile.open(Path.of("pytorch_model-00001-of-00008.bin"))) {
 *     for (TensorInfo t : f.tensors()) System.out.println(t);
 *     Tensor w = f.load("transformer.layers.0.attention.dense.weight");   // valid after close()
 * }
 * }</pre>
 */
public final class TorchBinFile implements TensorFile {

    static final Logger LOG = LoggerFactory.getLogger(TorchBinFile.class);

    /** Largest {@code data.pkl} accepted: a checkpoint's pickle describes tensors, about 300 bytes each. */
    public static final long MAX_PICKLE_BYTES = 64L << 20;
    /** Deepest nesting of dicts whose tensors are flattened into dotted names. */
    public static final int MAX_NESTING = 64;

    /** What the pickle says about one tensor, with the zip entry of its storage. */
    private record Stored(TensorInfo info, TensorRef ref, ZipDirectory.Entry storage) {
    }

    private final Path path;
    private final long fileSize;
    private final String archive;
    private final Map<String, Stored> byName;
    private final List<TensorInfo> infos;
    private Tensor mapped;
    private boolean closed;

    private TorchBinFile(Path path, long fileSize, String archive, Map<String, Stored> byName) {
        this.path = path;
        this.fileSize = fileSize;
        this.archive = archive;
        this.byName = byName;
        List<TensorInfo> list = new ArrayList<>(byName.size());
        for (Stored s : byName.values()) {
            list.add(s.info());
        }
        this.infos = Collections.unmodifiableList(list);
    }

    /**
     * Opens a {@code torch.save} zip checkpoint: reads its directory and pickle, no tensor data.
     *
     * @throws CheckpointException UNKNOWN_FORMAT for a file that is no torch zip, TRUNCATED for one cut short,
     *         UNSUPPORTED_CONTENT for pickled objects other than tensors and containers (naming the refused global),
     *         MISSING_TENSOR when a storage entry is absent, OFFSET_OUT_OF_RANGE when a tensor reaches past its
     *         storage, SIZE_MISMATCH when a storage entry has another size than the pickle says, IO_ERROR when the
     *         file cannot be read
     */
    public static TorchBinFile open(Path path) {
        NativeRuntime.init();
        try (FileChannel ch = FileChannel.open(path, StandardOpenOption.READ)) {
            long size = ch.size();
            ZipDirectory zip = ZipDirectory.read(ch, path);
            if (zip.entries().isEmpty()) {
                throw new CheckpointException(Reason.UNKNOWN_FORMAT, path, null, "zip archive has no entries");
            }
            String first = zip.entries().get(0).name();
            int slash = first.indexOf('/');
            if (slash <= 0) {
                throw new CheckpointException(Reason.UNKNOWN_FORMAT, path, null,
                        "first zip entry '" + first + "' is not inside an archive folder (not a torch.save file)");
            }
            String archive = first.substring(0, slash);
            ZipDirectory.Entry byteorder = zip.entry(archive + "/byteorder");
            if (byteorder != null) {
                String order = new String(readEntry(ch, byteorder, 64, path), StandardCharsets.US_ASCII).trim();
                if (!order.equals("little")) {
                    throw new CheckpointException(Reason.UNSUPPORTED_CONTENT, path, null,
                            "byteorder is '" + order + "'; only little-endian checkpoints are read");
                }
            }
            ZipDirectory.Entry pkl = zip.entry(archive + "/data.pkl");
            if (pkl == null) {
                throw new CheckpointException(Reason.UNKNOWN_FORMAT, path, null,
                        "zip archive has no " + archive + "/data.pkl (not a torch.save file)");
            }
            byte[] pickle = readEntry(ch, pkl, MAX_PICKLE_BYTES, path);
            Object root = new PickleReader(pickle, path).read();
            if (!(root instanceof Map)) {
                throw new CheckpointException(Reason.UNSUPPORTED_CONTENT, path, null, "the pickle holds a "
                        + PickleReader.describe(root) + ", not a dict of tensors");
            }
            Map<String, TensorRef> refs = new LinkedHashMap<>();
            long[] budget = {Math.max(1024, pickle.length)};
            flatten((Map<?, ?>) root, "", 0, refs, budget, path);
            Map<String, Stored> byName = new LinkedHashMap<>();
            for (Map.Entry<String, TensorRef> e : refs.entrySet()) {
                byName.put(e.getKey(), check(e.getKey(), e.getValue(), zip, archive, path));
            }
            LOG.debug("{}: {} tensors in archive '{}'", path, byName.size(), archive);
            return new TorchBinFile(path, size, archive, Collections.unmodifiableMap(byName));
        } catch (NoSuchFileException e) {
            throw new CheckpointException(Reason.IO_ERROR, path, null, "file does not exist", e);
        } catch (IOException e) {
            throw new CheckpointException(Reason.IO_ERROR, path, null, "cannot read: " + e.getMessage(), e);
        }
    }

    /** Collects tensors of nested dicts under dotted names; other values are skipped. */
    private static void flatten(Map<?, ?> dict, String prefix, int depth, Map<String, TensorRef> out, long[] budget,
            Path path) {
        if (depth > MAX_NESTING) {
            throw new CheckpointException(Reason.UNSUPPORTED_CONTENT, path, null,
                    "dicts nested deeper than " + MAX_NESTING + " (under '" + prefix + "')");
        }
        for (Map.Entry<?, ?> e : dict.entrySet()) {
            // Shared sub-dicts could otherwise multiply the work exponentially.
            if (--budget[0] < 0) {
                throw new CheckpointException(Reason.UNSUPPORTED_CONTENT, path, null,
                        "the pickle's dicts expand to more entries than its size allows");
            }
            Object k = e.getKey();
            if (!(k instanceof String) && !(k instanceof Long)) {
                LOG.debug("{}: skipping entry with a {} key under '{}'", path, PickleReader.describe(k), prefix);
                continue;
            }
            String name = prefix.isEmpty() ? k.toString() : prefix + "." + k;
            Object v = e.getValue();
            if (v instanceof TensorRef) {
                if (out.putIfAbsent(name, (TensorRef) v) != null) {
                    throw new CheckpointException(Reason.DUPLICATE_NAME, path, name, "tensor name appears twice");
                }
            } else if (v instanceof Map) {
                flatten((Map<?, ?>) v, name, depth + 1, out, budget, path);
            } else {
                LOG.debug("{}: skipping '{}', a {} and not a tensor", path, name, PickleReader.describe(v));
            }
        }
    }

    /** Checks a tensor against its storage entry before any native view can exist. */
    private static Stored check(String name, TensorRef t, ZipDirectory zip, String archive, Path path) {
        StorageRef s = t.storage();
        DType dtype = s.dtype();
        long elementSize = dtype.bits() / 8;
        ZipDirectory.Entry entry = zip.entry(archive + "/data/" + s.key());
        if (entry == null) {
            throw new CheckpointException(Reason.MISSING_TENSOR, path, name,
                    "storage entry " + archive + "/data/" + s.key() + " is not in the zip");
        }
        if (entry.method() != ZipDirectory.STORED && entry.method() != ZipDirectory.DEFLATED) {
            throw new CheckpointException(Reason.UNSUPPORTED_CONTENT, path, name,
                    "storage entry uses zip compression method " + entry.method());
        }
        long storageBytes;
        long numel;
        long lastIndex;
        try {
            storageBytes = Math.multiplyExact(s.numel(), elementSize);
            numel = 1;
            lastIndex = t.storageOffset();
            for (int i = 0; i < t.size().length; i++) {
                numel = Math.multiplyExact(numel, t.size()[i]);
                if (t.size()[i] > 0) {
                    lastIndex = Math.addExact(lastIndex, Math.multiplyExact(t.size()[i] - 1, t.stride()[i]));
                }
            }
        } catch (ArithmeticException e) {
            throw new CheckpointException(Reason.OFFSET_OUT_OF_RANGE, path, name,
                    "size, stride and offset overflow 64 bits");
        }
        if (entry.uncompressedSize() != storageBytes) {
            throw new CheckpointException(Reason.SIZE_MISMATCH, path, name, "storage " + s.key() + " holds "
                    + entry.uncompressedSize() + " bytes but the pickle says " + s.numel() + " x " + elementSize);
        }
        boolean inBounds = numel == 0 ? t.storageOffset() <= s.numel() : lastIndex < s.numel();
        if (!inBounds) {
            throw new CheckpointException(Reason.OFFSET_OUT_OF_RANGE, path, name, "offset " + t.storageOffset()
                    + ", size " + java.util.Arrays.toString(t.size()) + " and stride "
                    + java.util.Arrays.toString(t.stride()) + " reach element " + lastIndex + " of a storage of "
                    + s.numel());
        }
        long fileOffset = entry.dataOffset();
        if (entry.method() == ZipDirectory.STORED && isContiguous(t.size(), t.stride())) {
            fileOffset += t.storageOffset() * elementSize;
        }
        TensorInfo info = new TensorInfo(name, dtype, t.size(), path, fileOffset, numel * elementSize);
        return new Stored(info, t, entry);
    }

    private static boolean isContiguous(long[] size, long[] stride) {
        long expected = 1;
        for (int i = size.length - 1; i >= 0; i--) {
            if (size[i] != 1 && stride[i] != expected) {
                return false;
            }
            expected *= size[i];
        }
        return true;
    }

    @Override
    public Path path() {
        return path;
    }

    /** The folder name inside the zip ({@code archive/data.pkl}). */
    public String archiveName() {
        return archive;
    }

    @Override
    public List<TensorInfo> tensors() {
        return infos;
    }

    @Override
    public TensorInfo info(String name) {
        return stored(name).info();
    }

    @Override
    public boolean contains(String name) {
        return byName.containsKey(name);
    }

    private Stored stored(String name) {
        Stored s = byName.get(name);
        if (s == null) {
            throw new CheckpointException(Reason.MISSING_TENSOR, path, name, "no such tensor in this file");
        }
        return s;
    }

    /**
     * {@inheritDoc}
     *
     * <p>Stored (uncompressed) entries aligned to their element size, which is what {@code torch.save} writes, give
     * a view of the copy-on-write mapping of the whole file; other entries are read into a fresh tensor.
     *
     * @throws IllegalStateException after {@link #close()}
     */
    @Override
    @SuppressWarnings("try") // the scope frees temporaries; the result is retained past it
    public Tensor load(String name) {
        Stored s = stored(name);
        DType dtype = s.info().dtype();
        long elementSize = dtype.bits() / 8;
        ZipDirectory.Entry entry = s.storage();
        boolean zeroCopy = entry.method() == ZipDirectory.STORED && entry.dataOffset() % elementSize == 0;
        try (PointerScope scope = new PointerScope()) {
            Tensor result;
            if (zeroCopy) {
                synchronized (this) {
                    Tensor bytes = mapping().narrow(0, entry.dataOffset(), entry.uncompressedSize());
                    result = shape(bytes.view(dtype.scalarType()), s.ref());
                }
            } else {
                requireOpen();
                Tensor bytes = readCopy(entry, name);
                result = shape(bytes.view(dtype.scalarType()), s.ref());
            }
            result.retainReference();
            return result;
        }
    }

    /** The strided view the pickle describes, on a 1-D tensor of the storage's elements (bounds checked at open). */
    private static Tensor shape(Tensor storage, TensorRef t) {
        long numel = 1;
        for (long d : t.size()) {
            numel *= d;
        }
        if (numel == 0 || isContiguous(t.size(), t.stride())) {
            return storage.narrow(0, t.storageOffset(), numel).view(t.size());
        }
        // as_strided takes an offset into the whole storage, which for a mapped file starts at byte 0 of the file.
        return storage.as_strided(t.size(), t.stride(), new LongOptional(storage.storage_offset() + t.storageOffset()));
    }

    private void requireOpen() {
        synchronized (this) {
            if (closed) {
                throw new IllegalStateException(path + " is closed");
            }
        }
    }

    /** The whole file as a copy-on-write byte tensor, mapped on first use. Callers hold the lock. */
    @SuppressWarnings("try")
    private Tensor mapping() {
        if (closed) {
            throw new IllegalStateException(path + " is closed");
        }
        if (mapped == null) {
            try (PointerScope scope = new PointerScope()) {
                Tensor t = torch.from_file(path.toString(), new BoolOptional(false), new LongOptional(fileSize),
                        new TensorOptions(ScalarType.Byte));
                t.retainReference();
                mapped = t;
            }
            LOG.debug("{}: mapped {} bytes copy-on-write", path, fileSize);
        }
        return mapped;
    }

    /** Reads a storage entry into a fresh byte tensor, inflating it when compressed, with its size checked. */
    private Tensor readCopy(ZipDirectory.Entry entry, String name) {
        long n = entry.uncompressedSize();
        Tensor out = torch.empty(new long[] {n}, new TensorOptions(ScalarType.Byte), new MemoryFormatOptional());
        BytePointer base = new BytePointer(out.data_ptr());
        try (FileChannel ch = FileChannel.open(path, StandardOpenOption.READ)) {
            if (ch.size() != fileSize) {
                throw new CheckpointException(Reason.IO_ERROR, path, name, "file changed size since it was opened");
            }
            if (entry.method() == ZipDirectory.STORED) {
                long done = 0;
                while (done < n) {
                    int len = (int) Math.min(n - done, 1 << 30);
                    ByteBuffer dst = base.position(done).limit(done + len).asByteBuffer();
                    while (dst.hasRemaining()) {
                        if (ch.read(dst, entry.dataOffset() + done + dst.position()) < 0) {
                            throw new CheckpointException(Reason.TRUNCATED, path, name, "file ends inside the storage");
                        }
                    }
                    done += len;
                }
            } else {
                inflate(ch, entry, base, name);
            }
        } catch (IOException e) {
            throw new CheckpointException(Reason.IO_ERROR, path, name, "cannot read storage: " + e.getMessage(), e);
        }
        return out;
    }

    private void inflate(FileChannel ch, ZipDirectory.Entry entry, BytePointer base, String name) throws IOException {
        long n = entry.uncompressedSize();
        InputStream in = Channels.newInputStream(ch.position(entry.dataOffset()));
        Inflater inflater = new Inflater(true);
        try {
            byte[] input = new byte[64 << 10];
            long remainingInput = entry.compressedSize();
            long done = 0;
            byte[] chunk = new byte[256 << 10];
            while (true) {
                if (inflater.needsInput() && remainingInput > 0) {
                    int r = in.read(input, 0, (int) Math.min(input.length, remainingInput));
                    if (r < 0) {
                        throw new CheckpointException(Reason.TRUNCATED, path, name, "file ends inside compressed data");
                    }
                    remainingInput -= r;
                    inflater.setInput(input, 0, r);
                }
                int got = inflater.inflate(chunk);
                if (got > 0) {
                    if (got > n - done) {
                        throw new CheckpointException(Reason.SIZE_MISMATCH, path, name,
                                "compressed storage inflates to more than " + n + " bytes");
                    }
                    base.position(done).put(chunk, 0, got);
                    done += got;
                } else if (inflater.finished() || (inflater.needsInput() && remainingInput == 0)
                        || inflater.needsDictionary()) {
                    break;
                }
            }
            if (done != n || !inflater.finished()) {
                throw new CheckpointException(Reason.SIZE_MISMATCH, path, name, "compressed storage inflates to "
                        + done + " bytes, expected " + n);
            }
        } catch (DataFormatException e) {
            throw new CheckpointException(Reason.IO_ERROR, path, name, "damaged compressed data: " + e.getMessage(), e);
        } finally {
            inflater.end();
        }
    }

    /** The bytes of a small entry (byteorder, data.pkl), inflated when compressed, at most {@code max}. */
    private static byte[] readEntry(FileChannel ch, ZipDirectory.Entry entry, long max, Path path) throws IOException {
        long n = entry.uncompressedSize();
        if (n > max) {
            throw new CheckpointException(Reason.HEADER_TOO_LARGE, path, null,
                    entry.name() + " of " + n + " bytes exceeds " + max);
        }
        if (entry.method() == ZipDirectory.STORED) {
            ByteBuffer b = ZipDirectory.readLe(ch, entry.dataOffset(), (int) n, path);
            return b.array();
        }
        if (entry.method() != ZipDirectory.DEFLATED) {
            throw new CheckpointException(Reason.UNSUPPORTED_CONTENT, path, null,
                    entry.name() + " uses zip compression method " + entry.method());
        }
        if (entry.compressedSize() > Integer.MAX_VALUE - 8) {
            throw new CheckpointException(Reason.HEADER_TOO_LARGE, path, null, entry.name() + " is too large");
        }
        byte[] compressed = ZipDirectory.readLe(ch, entry.dataOffset(), (int) entry.compressedSize(), path).array();
        Inflater inflater = new Inflater(true);
        try {
            inflater.setInput(compressed);
            byte[] out = new byte[(int) n];
            int done = 0;
            while (done < n && !inflater.finished()) {
                int got = inflater.inflate(out, done, (int) n - done);
                if (got == 0 && (inflater.needsInput() || inflater.needsDictionary())) {
                    break;
                }
                done += got;
            }
            byte[] probe = new byte[1];
            if (done != n || (!inflater.finished() && inflater.inflate(probe) > 0)) {
                throw new CheckpointException(Reason.SIZE_MISMATCH, path, null,
                        entry.name() + " does not inflate to its stated " + n + " bytes");
            }
            return out;
        } catch (DataFormatException e) {
            throw new CheckpointException(Reason.IO_ERROR, path, null,
                    entry.name() + " has damaged compressed data: " + e.getMessage(), e);
        } finally {
            inflater.end();
        }
    }

    /** Drops this file's mapping; tensors already loaded keep it alive. */
    @Override
    public synchronized void close() {
        if (closed) {
            return;
        }
        closed = true;
        if (mapped != null) {
            mapped.close();
            mapped = null;
        }
    }

    @Override
    public String toString() {
        return "TorchBinFile(" + path + ", " + infos.size() + " tensors)";
    }
}
