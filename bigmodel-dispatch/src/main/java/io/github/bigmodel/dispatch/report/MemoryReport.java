package io.github.bigmodel.dispatch.report;

import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.MemorySize;
import io.github.bigmodel.core.Module;
import io.github.bigmodel.core.Parameter;
import io.github.bigmodel.core.ProcessMemory;
import java.util.ArrayList;
import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import org.bytedeco.pytorch.cuda.DeviceStats;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch_cuda;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import io.github.bigmodel.dispatch.plan.CudaDevices;
import io.github.bigmodel.dispatch.plan.DeviceMap;
import io.github.bigmodel.dispatch.DispatchedModel;

/**
 * Where a placed model's weights are, per device, from the library's own accounting (the module tree and the
 * device map), next to what the process and, when a CUDA device is present, libtorch's CUDA caching allocator
 * report at the moment the report is made.
 *
 * <pre>{@code
 * MemoryReport r = dispatched.memoryReport();
 * r.weightBytes(Device.CPU);    // bytes of weights held in CPU memory (placed there or offloaded to it)
 * r.weightBytes(Device.DISK);   // bytes offloaded to the offload folder (or read in place from the checkpoint)
 * System.out.println(r);        // a table, one row per device, then the process figures
 * }</pre>
 *
 * <p>Counting rule ({@link #weightBytesByDevice}): every parameter and buffer of the module tree once (a tied
 * parameter once), a materialized one at its tensor's byte size on its tensor's device, an offloaded one at its
 * planned dtype and logical shape on the device the map put it on ({@code cpu} for weights offloaded to CPU
 * memory, {@code disk} for the offload folder); parameters still on meta are not counted. Values are immutable.
 */
public final class MemoryReport {

    private static final Logger LOG = LoggerFactory.getLogger(MemoryReport.class);

    /**
     * What libtorch's CUDA caching allocator reports for one GPU: bytes handed out to live tensors, bytes it holds
     * from the driver (allocated plus cached free blocks), and the peak of allocated bytes.
     */
    public record CudaAllocator(Device device, long allocatedBytes, long reservedBytes, long peakAllocatedBytes) {
    }

    private final Map<Device, Long> weightBytes;
    private final ProcessMemory process;
    private final List<CudaAllocator> cuda;

    private MemoryReport(Map<Device, Long> weightBytes, ProcessMemory process, List<CudaAllocator> cuda) {
        this.weightBytes = Collections.unmodifiableMap(new LinkedHashMap<>(weightBytes));
        this.process = process;
        this.cuda = List.copyOf(cuda);
    }

    /**
     * A report of these weight figures with the process and CUDA allocator figures read now.
     *
     * @param weightBytes bytes per device, as {@link #weightBytesByDevice} counts them
     */
    public static MemoryReport of(Map<Device, Long> weightBytes) {
        return new MemoryReport(weightBytes, ProcessMemory.read(), readCudaAllocators());
    }

    /**
     * Bytes of weights per device in the order GPUs (by index), {@code cpu}, {@code disk}, counted as the class
     * comment says. Reads the parameters' state: call it while no forward pass runs (offload hooks put weights in
     * and out of the parameters during one); {@link DispatchedModel} calls it once, right after dispatch.
     *
     * @param model the model
     * @param map   where each module was placed, or null for a model loaded without one (offloaded parameters are
     *              then counted on {@code disk})
     */
    public static Map<Device, Long> weightBytesByDevice(Module model, DeviceMap map) {
        Map<Device, Long> bytes = new TreeMap<>(MemoryReport::deviceOrder);
        Set<Parameter> seen = Collections.newSetFromMap(new IdentityHashMap<>());
        Map<String, Parameter> all = new LinkedHashMap<>(model.namedParameters());
        all.putAll(model.namedBuffers());
        for (Map.Entry<String, Parameter> e : all.entrySet()) {
            Parameter p = e.getValue();
            if (!seen.add(p)) {
                continue;
            }
            Device device = p.device();
            long size;
            if (p.isMaterialized()) {
                size = p.data().nbytes();
            } else if (device.isDisk()) {
                Device placed = map == null ? null : map.deviceOf(e.getKey());
                // Offloaded weights wait in CPU memory or on disk, whatever the module executes on.
                device = placed != null && placed.isCpu() ? Device.CPU : Device.DISK;
                size = p.byteSize();
            } else {
                continue;
            }
            bytes.merge(device, size, Long::sum);
        }
        return bytes;
    }

    private static int deviceOrder(Device a, Device b) {
        int ra = rank(a);
        int rb = rank(b);
        return ra != rb ? Integer.compare(ra, rb) : Integer.compare(a.index(), b.index());
    }

    private static int rank(Device d) {
        return d.isCuda() ? 0 : d.isCpu() ? 1 : d.isDisk() ? 2 : 3;
    }

    /**
     * The CUDA caching allocator's figures for every visible GPU; an empty list when no CUDA device is present or
     * the libtorch build has no CUDA (nothing is asked of CUDA then).
     */
    public static List<CudaAllocator> readCudaAllocators() {
        try {
            return CudaDevices.query(i -> {
                try (DeviceStats stats = torch_cuda.getAllocator().getDeviceStats((byte) i)) {
                    return new CudaAllocator(Device.cuda(i), stats.allocated_bytes().current(),
                            stats.reserved_bytes().current(), stats.allocated_bytes().peak());
                }
            });
        } catch (RuntimeException | LinkageError e) {
            LOG.debug("No CUDA allocator to report on ({})", e.toString());
            return new ArrayList<>();
        }
    }

    /** Weight bytes per device, GPUs first, then {@code cpu}, then {@code disk}; devices holding none are absent. */
    public Map<Device, Long> weightBytes() {
        return weightBytes;
    }

    /** Weight bytes on {@code device}, 0 when it holds none. */
    public long weightBytes(Device device) {
        return weightBytes.getOrDefault(device, 0L);
    }

    /** The process's resident and anonymous memory when the report was made (zeros where not Linux). */
    public ProcessMemory process() {
        return process;
    }

    /** The CUDA allocator figures per GPU when the report was made; empty without a CUDA device. */
    public List<CudaAllocator> cudaAllocators() {
        return cuda;
    }

    @Override
    public String toString() {
        StringBuilder sb = new StringBuilder();
        sb.append(String.format("%-10s %14s%n", "device", "weights"));
        weightBytes.forEach((d, b) -> sb.append(String.format("%-10s %14s%n", d, MemorySize.format(b))));
        sb.append("process: ").append(process).append('\n');
        for (CudaAllocator c : cuda) {
            sb.append(c.device()).append(" allocator: allocated ").append(MemorySize.format(c.allocatedBytes()))
                    .append(", reserved ").append(MemorySize.format(c.reservedBytes())).append(", peak allocated ")
                    .append(MemorySize.format(c.peakAllocatedBytes())).append('\n');
        }
        return sb.toString();
    }
}
