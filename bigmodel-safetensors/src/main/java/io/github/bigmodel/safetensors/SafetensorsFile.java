package io.github.bigmodel.safetensors;

import io.github.bigmodel.core.NativeRuntime;
import io.github.bigmodel.safetensors.CheckpointException.Reason;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.MappedByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.locks.ReentrantReadWriteLock;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.BoolOptional;
import org.bytedeco.pytorch.LongOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A safetensors file opened lazily: {@link #open(Path)} reads and validates only the header; the first
 * {@link #load(String)} maps the whole file once, copy-on-write, and every tensor is a zero-copy view of that
 * mapping.
 *
 * <p>Lifetime: the mapping belongs to libtorch's storage and lives as long as any view of it. {@link #close()}
 * drops this object's reference only, so tensors loaded earlier stay valid after close. The mapping is private
 * (copy-on-write): writing into a loaded tensor copies the touched pages and never changes the file. A tensor
 * whose offset is not a multiple of its element size cannot be viewed in place and is copied instead. The file
 * must not be truncated by another process while mapped.
 *
 * <p>Thread-safe: any number of threads may call {@link #load(String)} and {@link #bytes(String)} at once.
 *
 * <pre>{@code
 * try (SafetensorsFile f = SafetensorsFile.open(Path.of("model.safetensors"))) {
 *     Tensor w = f.load("transformer.output_layer.weight");  // view of the mapped file
 *     ByteBuffer raw = f.bytes("transformer.output_layer.weight");  // read-only, no libtorch
 * }
 * }</pre>
 */
public final class SafetensorsFile implements TensorFile {

    private static final Logger LOG = LoggerFactory.getLogger(SafetensorsFile.class);

    private final Path path;
    private final long fileSize;
    private final SafetensorsHeader header;
    private final Map<String, TensorInfo> byName;
    /** Guards {@link #mapped} against close() while a load uses it. */
    private final ReentrantReadWriteLock lock = new ReentrantReadWriteLock();
    private Tensor mapped;
    private boolean closed;

    private SafetensorsFile(Path path, long fileSize, SafetensorsHeader header) {
        this.path = path;
        this.fileSize = fileSize;
        this.header = header;
        Map<String, TensorInfo> map = new LinkedHashMap<>();
        for (TensorInfo t : header.tensors()) {
            map.put(t.name(), t);
        }
        this.byName = map;
    }

    /**
     * Opens {@code path}, reading and validating its header only.
     *
     * @throws CheckpointException when the header is damaged or the file cannot be read
     */
    public static SafetensorsFile open(Path path) {
        SafetensorsHeader header = SafetensorsHeader.read(path);
        // Validation proved the data section ends exactly at the end of the file, so this is the file's size.
        long size = header.dataStart() + dataBytes(header);
        LOG.debug("Opened {}: {} tensors", path, header.tensors().size());
        return new SafetensorsFile(path, size, header);
    }

    private static long dataBytes(SafetensorsHeader header) {
        long total = 0;
        for (TensorInfo t : header.tensors()) {
            total += t.byteLength();
        }
        return total;
    }

    @Override
    public Path path() {
        return path;
    }

    @Override
    public List<TensorInfo> tensors() {
        return header.tensors();
    }

    @Override
    public TensorInfo info(String name) {
        TensorInfo t = byName.get(name);
        if (t == null) {
            throw new CheckpointException(Reason.MISSING_TENSOR, path, name, "no such tensor in the file");
        }
        return t;
    }

    @Override
    public boolean contains(String name) {
        return byName.containsKey(name);
    }

    /** The header's {@code __metadata__} strings. */
    public Map<String, String> metadata() {
        return header.metadata();
    }

    /** The validated header. */
    public SafetensorsHeader header() {
        return header;
    }

    @Override
    public Tensor load(String name) {
        TensorInfo t = info(name);
        ScalarType type = t.dtype().scalarType();
        long elementBytes = t.dtype().bits() / 8;
        lock.readLock().lock();
        try {
            Tensor file = mapping();
            try (Tensor bytes = file.narrow(0, t.fileOffset(), t.byteLength())) {
                if (t.fileOffset() % elementBytes == 0) {
                    try (Tensor typed = bytes.view(type)) {
                        return typed.view(t.shape());
                    }
                }
                LOG.debug("{} in {} is not aligned to its {}-byte elements: copying it", name, path, elementBytes);
                try (Tensor copy = bytes.clone(); Tensor typed = copy.view(type)) {
                    return typed.view(t.shape());
                }
            }
        } catch (RuntimeException e) {
            if (e instanceof CheckpointException) {
                throw e;
            }
            throw new CheckpointException(Reason.IO_ERROR, path, name, "cannot view the tensor: " + e.getMessage(), e);
        } finally {
            lock.readLock().unlock();
        }
    }

    /** The whole-file byte tensor, mapped on first use. Called with the read lock held. */
    @SuppressWarnings("try")
    private Tensor mapping() {
        synchronized (this) {
            if (closed) {
                throw new IllegalStateException(path + " is closed");
            }
            if (mapped == null) {
                NativeRuntime.init();
                // Created in a scope of its own and retained: a caller's PointerScope around load() must not
                // free the mapping that later loads share.
                try (PointerScope scope = new PointerScope()) {
                    // shared=false: MAP_PRIVATE, so writes into views copy pages instead of reaching the file.
                    Tensor t = torch.from_file(path.toString(), new BoolOptional(false), new LongOptional(fileSize),
                            new TensorOptions(ScalarType.Byte));
                    t.retainReference();
                    mapped = t;
                }
                // Pages not yet cached come in as 2 MiB folios: decode steps stream the weights through half the
                // TLB misses (docs/benchmarks.md, "Kernels").
                NativeRuntime.adviseHugePages(mapped);
                LOG.debug("Mapped {} ({} bytes) copy-on-write", path, fileSize);
            }
            return mapped;
        }
    }

    /**
     * The raw little-endian bytes of {@code name} as a read-only buffer mapped from the file, for code that wants
     * bytes without libtorch. The buffer stays valid after {@link #close()}.
     *
     * @throws IllegalArgumentException when the tensor is larger than a {@link ByteBuffer} can address (2 GiB)
     */
    public ByteBuffer bytes(String name) {
        TensorInfo t = info(name);
        if (t.byteLength() > Integer.MAX_VALUE) {
            throw new IllegalArgumentException(name + " has " + t.byteLength()
                    + " bytes, more than one ByteBuffer can hold; use load(name) instead");
        }
        try (FileChannel channel = FileChannel.open(path, StandardOpenOption.READ)) {
            MappedByteBuffer buffer = channel.map(FileChannel.MapMode.READ_ONLY, t.fileOffset(), t.byteLength());
            return buffer.order(ByteOrder.LITTLE_ENDIAN);
        } catch (IOException e) {
            throw new CheckpointException(Reason.IO_ERROR, path, name, "cannot map the tensor's bytes: " + e, e);
        }
    }

    /** Drops this file's reference to the mapping; loaded tensors keep it alive. Idempotent. */
    @Override
    public void close() {
        lock.writeLock().lock();
        try {
            synchronized (this) {
                closed = true;
                if (mapped != null) {
                    mapped.close();
                    mapped = null;
                }
            }
        } finally {
            lock.writeLock().unlock();
        }
    }

    @Override
    public String toString() {
        return "SafetensorsFile[" + path + ", " + header.tensors().size() + " tensors]";
    }
}
