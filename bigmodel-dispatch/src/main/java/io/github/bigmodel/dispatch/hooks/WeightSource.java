package io.github.bigmodel.dispatch.hooks;

import java.util.function.Supplier;
import org.bytedeco.pytorch.Tensor;

/**
 * Where the values of an offloaded parameter come from when a hook brings them in for a forward pass: a tensor kept
 * in CPU memory, or a tensor read from disk (a zero-copy view of a memory-mapped file).
 *
 * <pre>{@code
 * WeightSource cpu = WeightSource.of(cpuTensor);                       // CPU offload
 * WeightSource disk = WeightSource.lazy(() -> checkpoint.load(name), bytes);  // disk offload
 * try (Tensor t = disk.read()) { ... }
 * }</pre>
 */
public interface WeightSource {

    /** The values as a CPU tensor that the caller owns and must close (it may alias mapped or shared memory). */
    public Tensor read();

    /** Bytes of the values, for prefetch accounting. */
    public long byteLength();

    /** Whether {@link #read()} reads from disk (page faults) rather than from memory. */
    public boolean onDisk();

    /** A source holding {@code tensor} in memory; each read returns an alias of it. */
    public static WeightSource of(Tensor tensor) {
        long bytes = tensor.nbytes();
        return new WeightSource() {
            @Override
            public Tensor read() {
                return tensor.alias();
            }

            @Override
            public long byteLength() {
                return bytes;
            }

            @Override
            public boolean onDisk() {
                return false;
            }
        };
    }

    /** A source that reads from disk on each call, for example {@code () -> checkpoint.load(name)}. */
    public static WeightSource lazy(Supplier<Tensor> reader, long byteLength) {
        return new WeightSource() {
            @Override
            public Tensor read() {
                return reader.get();
            }

            @Override
            public long byteLength() {
                return byteLength;
            }

            @Override
            public boolean onDisk() {
                return true;
            }
        };
    }
}
