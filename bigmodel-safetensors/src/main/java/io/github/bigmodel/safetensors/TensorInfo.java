package io.github.bigmodel.safetensors;

import io.github.bigmodel.core.DType;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Objects;

/**
 * What a checkpoint says about one tensor, known without reading its data: name, dtype, shape, the file that
 * holds it, and where its bytes are in that file.
 *
 * <pre>{@code
 * TensorInfo t = checkpoint.info("transformer.output_layer.weight");
 * t.dtype();       // BFLOAT16
 * t.byteLength();  // numel * 2
 * }</pre>
 */
public final class TensorInfo {

    private final String name;
    private final DType dtype;
    private final long[] shape;
    private final Path file;
    private final long fileOffset;
    private final long byteLength;

    /**
     * @param fileOffset absolute offset of the first byte in {@code file}
     * @param byteLength number of bytes, {@code numel * element size}
     */
    public TensorInfo(String name, DType dtype, long[] shape, Path file, long fileOffset, long byteLength) {
        this.name = Objects.requireNonNull(name, "name");
        this.dtype = Objects.requireNonNull(dtype, "dtype");
        this.shape = shape.clone();
        this.file = file;
        this.fileOffset = fileOffset;
        this.byteLength = byteLength;
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

    public long numel() {
        long n = 1;
        for (long d : shape) {
            n = Math.multiplyExact(n, d);
        }
        return n;
    }

    /** The file holding the bytes (a shard of a sharded checkpoint). */
    public Path file() {
        return file;
    }

    /** Absolute offset of the tensor's first byte in {@link #file()}. */
    public long fileOffset() {
        return fileOffset;
    }

    public long byteLength() {
        return byteLength;
    }

    @Override
    public boolean equals(Object o) {
        if (!(o instanceof TensorInfo)) {
            return false;
        }
        TensorInfo t = (TensorInfo) o;
        return name.equals(t.name) && dtype == t.dtype && Arrays.equals(shape, t.shape)
                && Objects.equals(file, t.file) && fileOffset == t.fileOffset && byteLength == t.byteLength;
    }

    @Override
    public int hashCode() {
        return Objects.hash(name, dtype, Arrays.hashCode(shape), file, fileOffset, byteLength);
    }

    @Override
    public String toString() {
        return name + " " + dtype.safetensorsName() + Arrays.toString(shape)
                + (file == null ? "" : " in " + file.getFileName());
    }
}
