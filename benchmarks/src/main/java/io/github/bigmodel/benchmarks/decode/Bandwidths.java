package io.github.bigmodel.benchmarks.decode;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.NativeRuntime;
import io.github.bigmodel.core.Tensors;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.LongBuffer;
import java.nio.MappedByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;

/**
 * The machine's limits that decode runs against: memory read bandwidth (libtorch reading a tensor larger than every
 * cache with the thread count decode uses, a plain Java read of the same memory, and the bf16 linear layer decode
 * spends its time in) and disk read bandwidth (a sequential {@code FileChannel} read, and the page-fault reads of a
 * memory-mapped file that offloaded weights go through). Each figure is the best of a few repetitions, in bytes per
 * second. Disk figures are cold only when the page cache was dropped first ({@link #dropPageCache()}).
 *
 * <pre>{@code
 * double mem = Bandwidths.torchRead(1L << 30, 2, 5);          // bytes/s
 * Bandwidths.dropPageCache();
 * double disk = Bandwidths.fileChannelRead(shards, 2L << 30);  // bytes/s
 * }</pre>
 */
// PointerScope blocks are used for what they release on close, not referenced by name.
@SuppressWarnings("try")
public final class Bandwidths {

    private static final long PAGE = 4096;

    private Bandwidths() {
    }

    /** libtorch summing a float32 tensor of {@code bytes} on {@code threads} threads: a pure read. */
    public static double torchRead(long bytes, int threads, int repeats) {
        NativeRuntime.init();
        int before = torch.get_num_threads();
        torch.set_num_threads(threads);
        try (PointerScope scope = new PointerScope()) {
            Tensor t = torch.ones(bytes / 4);
            double best = Double.MAX_VALUE;
            for (int r = 0; r <= repeats; r++) {
                long start = System.nanoTime();
                double sum = t.sum().item_double();
                long took = System.nanoTime() - start;
                if (sum <= 0) {
                    throw new IllegalStateException("sum of ones was " + sum);
                }
                if (r > 0) {
                    best = Math.min(best, took);
                }
            }
            return (bytes / 4 * 4L) / (best / 1e9);
        } finally {
            torch.set_num_threads(before);
        }
    }

    /** Java threads summing the longs of one native buffer of {@code bytes}, each its own slice. */
    public static double javaRead(long bytes, int threads, int repeats) {
        NativeRuntime.init();
        try (PointerScope scope = new PointerScope()) {
            Tensor t = torch.ones(new long[] {bytes / 8}, Tensors.options(DType.INT64, Device.CPU));
            BytePointer base = new BytePointer(t.data_ptr());
            long slice = (bytes / 8 / threads) * 8;
            List<ByteBuffer> slices = new ArrayList<>();
            for (int i = 0; i < threads; i++) {
                // Each slice is read in parts of at most 1 GiB: one ByteBuffer holds less than 2 GiB.
                for (long at = 0; at < slice; at += 1L << 30) {
                    BytePointer p = base.getPointer(i * slice + at);
                    p.capacity(Math.min(1L << 30, slice - at));
                    slices.add(p.asByteBuffer().order(ByteOrder.nativeOrder()));
                }
            }
            ExecutorService pool = Executors.newFixedThreadPool(threads);
            try {
                double best = Double.MAX_VALUE;
                for (int r = 0; r <= repeats; r++) {
                    long start = System.nanoTime();
                    List<Future<Long>> parts = new ArrayList<>();
                    int perThread = slices.size() / threads;
                    for (int i = 0; i < threads; i++) {
                        List<ByteBuffer> mine = slices.subList(i * perThread, (i + 1) * perThread);
                        parts.add(pool.submit(() -> sumLongs(mine)));
                    }
                    long total = 0;
                    for (Future<Long> f : parts) {
                        total += f.get();
                    }
                    long took = System.nanoTime() - start;
                    if (total != slice / 8 * threads) {
                        throw new IllegalStateException("read " + total + " ones, expected " + slice / 8 * threads);
                    }
                    if (r > 0) {
                        best = Math.min(best, took);
                    }
                }
                return slice * threads / (best / 1e9);
            } catch (Exception e) {
                throw new IllegalStateException("Java memory read failed", e);
            } finally {
                pool.shutdownNow();
            }
        }
    }

    private static long sumLongs(List<ByteBuffer> buffers) {
        long sum = 0;
        for (ByteBuffer b : buffers) {
            LongBuffer longs = b.duplicate().order(ByteOrder.nativeOrder()).asLongBuffer();
            int n = longs.remaining();
            for (int i = 0; i < n; i++) {
                sum += longs.get(i);
            }
        }
        return sum;
    }

    /**
     * The bytes per second of weight a bf16 linear layer of {@code out x in} reads when applied to one token: the
     * kernel decode spends its time in (lower than {@link #torchRead} when the CPU converts bf16 slowly).
     */
    public static double bf16Linear(long out, long in, int threads, int repeats) {
        NativeRuntime.init();
        int before = torch.get_num_threads();
        torch.set_num_threads(threads);
        try (PointerScope scope = new PointerScope()) {
            Tensor w = Tensors.empty(DType.BFLOAT16, Device.CPU, out, in).normal_();
            Tensor x = Tensors.empty(DType.BFLOAT16, Device.CPU, 1, in).fill_(new Scalar(0.5));
            double best = Double.MAX_VALUE;
            for (int r = 0; r <= repeats; r++) {
                try (PointerScope step = new PointerScope()) {
                    long start = System.nanoTime();
                    torch.linear(x, w).sum().item_double();
                    long took = System.nanoTime() - start;
                    if (r > 0) {
                        best = Math.min(best, took);
                    }
                }
            }
            return out * in * 2.0 / (best / 1e9);
        } finally {
            torch.set_num_threads(before);
        }
    }

    /** Reads up to {@code maxBytes} of {@code files} in order with {@code FileChannel.read} into a 16 MiB buffer. */
    public static double fileChannelRead(List<Path> files, long maxBytes) {
        ByteBuffer buffer = ByteBuffer.allocateDirect(16 << 20);
        long read = 0;
        long start = System.nanoTime();
        try {
            for (Path f : files) {
                try (FileChannel ch = FileChannel.open(f, StandardOpenOption.READ)) {
                    while (read < maxBytes) {
                        buffer.clear();
                        int n = ch.read(buffer);
                        if (n < 0) {
                            break;
                        }
                        read += n;
                    }
                }
                if (read >= maxBytes) {
                    break;
                }
            }
        } catch (IOException e) {
            throw new UncheckedIOException("Cannot read the checkpoint", e);
        }
        return read / ((System.nanoTime() - start) / 1e9);
    }

    /**
     * Touches one byte per 4 KiB page of up to {@code maxBytes} of {@code files}, memory-mapped, on one thread:
     * how the offload prefetcher brings disk weights in (page faults with the kernel's read-ahead).
     */
    public static double mappedRead(List<Path> files, long maxBytes) {
        long read = 0;
        long checksum = 0;
        long start = System.nanoTime();
        try {
            for (Path f : files) {
                long size = Files.size(f);
                try (FileChannel ch = FileChannel.open(f, StandardOpenOption.READ)) {
                    for (long at = 0; at < size && read < maxBytes; at += 1L << 30) {
                        long len = Math.min(Math.min(1L << 30, size - at), maxBytes - read);
                        MappedByteBuffer map = ch.map(FileChannel.MapMode.READ_ONLY, at, len);
                        for (int i = 0; i < len; i += PAGE) {
                            checksum += map.get(i);
                        }
                        unmap(map);
                        read += len;
                    }
                }
                if (read >= maxBytes) {
                    break;
                }
            }
        } catch (IOException e) {
            throw new UncheckedIOException("Cannot map the checkpoint", e);
        }
        double seconds = (System.nanoTime() - start) / 1e9;
        // The checksum keeps the JIT from dropping the reads.
        return checksum == Long.MIN_VALUE ? 0 : read / seconds;
    }

    /**
     * Reads up to {@code maxBytes} of {@code files} the way the offload prefetcher brings disk weights in: each file
     * mapped copy-on-write by libtorch ({@code from_file}), advised into 2 MiB folios as checkpoints are
     * ({@link NativeRuntime#adviseHugePages}), one byte per 4 KiB page summed by libtorch on {@code threads} threads.
     */
    public static double prefetcherRead(List<Path> files, long maxBytes, int threads) {
        int before = torch.get_num_threads();
        torch.set_num_threads(threads);
        long read = 0;
        long start = System.nanoTime();
        try {
            for (Path f : files) {
                if (read >= maxBytes) {
                    break;
                }
                long size = Files.size(f);
                long len = Math.min(size, maxBytes - read) / PAGE * PAGE;
                if (len == 0) {
                    continue;
                }
                try (PointerScope scope = new PointerScope()) {
                    Tensor mapped = torch.from_file(f.toString(), new org.bytedeco.pytorch.BoolOptional(false),
                            new org.bytedeco.pytorch.LongOptional(size),
                            new org.bytedeco.pytorch.TensorOptions(torch.ScalarType.Byte));
                    NativeRuntime.adviseHugePages(mapped);
                    mapped.narrow(0, 0, len).as_strided(new long[] {len / PAGE}, new long[] {PAGE}).sum()
                            .item_long();
                }
                read += len;
            }
        } catch (IOException e) {
            throw new UncheckedIOException("Cannot map the checkpoint", e);
        } finally {
            torch.set_num_threads(before);
        }
        return read / ((System.nanoTime() - start) / 1e9);
    }

    /**
     * Unmaps now: a mapping left for the garbage collector keeps its pages in this process, where dropping the page
     * cache cannot evict them, and the rows' child processes would then find the weights cached by this one.
     */
    private static void unmap(MappedByteBuffer map) {
        try {
            java.lang.reflect.Field f = sun.misc.Unsafe.class.getDeclaredField("theUnsafe");
            f.setAccessible(true);
            ((sun.misc.Unsafe) f.get(null)).invokeCleaner(map);
        } catch (ReflectiveOperationException e) {
            throw new IllegalStateException("Cannot unmap the disk measurement's mapping", e);
        }
    }

    /**
     * {@code sync; echo 3 > /proc/sys/vm/drop_caches}: needs root on Linux. Returns whether the cache was dropped.
     */
    public static boolean dropPageCache() {
        try {
            new ProcessBuilder("sync").inheritIO().start().waitFor();
            Files.writeString(Path.of("/proc/sys/vm/drop_caches"), "3\n");
            return true;
        } catch (IOException e) {
            return false;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return false;
        }
    }
}
