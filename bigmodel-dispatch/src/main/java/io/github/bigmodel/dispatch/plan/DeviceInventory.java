package io.github.bigmodel.dispatch.plan;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.bytedeco.pytorch.SizeTPair;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch_cuda;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * What the machine offers when no budget is given: the free memory of each visible GPU and the available RAM.
 * {@link #system()} asks libtorch and {@code /proc/meminfo}; {@link #simulated(List, long)} lets tests and
 * planning for another machine pretend.
 *
 * <pre>{@code
 * DeviceInventory here = DeviceInventory.system();
 * DeviceInventory twoGpus = DeviceInventory.simulated(List.of(24L << 30, 24L << 30), 64L << 30);
 * MaxMemory budget = MaxMemory.defaults(twoGpus);   // {cuda:0=24GiB, cuda:1=24GiB, cpu=64GiB}
 * }</pre>
 */
public interface DeviceInventory {

    /** Free bytes of each visible GPU, index = GPU id; empty without CUDA. */
    List<Long> gpuFreeBytes();

    /** Bytes of RAM available to new allocations (Linux's MemAvailable). */
    long cpuAvailableBytes();

    /** Number of visible GPUs. */
    default int gpuCount() {
        return gpuFreeBytes().size();
    }

    /** A machine that reports the given figures. */
    static DeviceInventory simulated(List<Long> gpuFreeBytes, long cpuAvailableBytes) {
        List<Long> gpus = List.copyOf(gpuFreeBytes);
        return new DeviceInventory() {
            @Override
            public List<Long> gpuFreeBytes() {
                return gpus;
            }

            @Override
            public long cpuAvailableBytes() {
                return cpuAvailableBytes;
            }
        };
    }

    /** This machine: CUDA through libtorch (when present) and {@code /proc/meminfo}. */
    static DeviceInventory system() {
        return SystemInventory.INSTANCE;
    }

    /** The libtorch / procfs backed inventory. */
    final class SystemInventory implements DeviceInventory {
        static final SystemInventory INSTANCE = new SystemInventory();
        private static final Logger LOG = LoggerFactory.getLogger(DeviceInventory.class);

        private SystemInventory() {
        }

        @Override
        public List<Long> gpuFreeBytes() {
            try {
                return CudaDevices.query(i -> {
                    try (SizeTPair info = torch_cuda.getAllocator().getMemoryInfo((byte) i)) {
                        return info.first();
                    }
                });
            } catch (RuntimeException | LinkageError e) {
                // A CPU-only libtorch has no CUDA allocator to ask: the machine simply has no usable GPU.
                LOG.info("No CUDA device could be queried ({}); planning without GPUs", e.toString());
                return new ArrayList<>();
            }
        }

        @Override
        public long cpuAvailableBytes() {
            Path meminfo = Path.of("/proc/meminfo");
            try {
                for (String line : Files.readAllLines(meminfo)) {
                    if (line.startsWith("MemAvailable:")) {
                        String[] parts = line.substring("MemAvailable:".length()).trim().split("\\s+");
                        return Long.parseLong(parts[0]) * 1024L;
                    }
                }
            } catch (IOException | NumberFormatException e) {
                LOG.debug("Cannot read {}: {}", meminfo, e.toString());
            }
            // Not Linux: the JVM's view of free physical memory is the closest figure available.
            java.lang.management.OperatingSystemMXBean os = java.lang.management.ManagementFactory.getOperatingSystemMXBean();
            if (os instanceof com.sun.management.OperatingSystemMXBean) {
                return ((com.sun.management.OperatingSystemMXBean) os).getFreeMemorySize();
            }
            return Runtime.getRuntime().maxMemory();
        }
    }
}
