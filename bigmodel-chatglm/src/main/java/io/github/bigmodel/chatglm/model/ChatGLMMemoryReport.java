package io.github.bigmodel.chatglm.model;

import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.MemorySize;
import io.github.bigmodel.core.ProcessMemory;
import io.github.bigmodel.dispatch.report.MemoryReport;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Collectors;

/**
 * A running ChatGLM model's memory, per device, from the library's own accounting: the weights, the KV cache of
 * every live session (a cache made by {@link ChatGLMLanguageModel#newCache} and not yet closed or collected), and
 * the workspace of one decode step per live session ({@link StepWorkspace}, at the session's full capacity: the
 * most its next steps can need); next to the process's resident and anonymous memory and, when a CUDA device is
 * present, the CUDA caching allocator's figures (absent otherwise), all read when the report was made.
 *
 * <pre>{@code
 * ChatGLMMemoryReport r = glm.memoryReport();
 * r.row(Device.CPU).kvBytes();            // KV bytes of every live session on the CPU
 * System.out.println(r);                  // device | weights | kv | workspace | total, then sessions and process
 * }</pre>
 *
 * <p>Immutable.
 */
public final class ChatGLMMemoryReport {

    /** One live session's cache: its id ({@link KvCache#id()}), filled and allocated positions, bytes per device. */
    public record Session(long id, long batch, long length, long capacity, Map<Device, Long> kvBytesByDevice) {

        /** The cache's bytes on all devices. */
        public long kvBytes() {
            return kvBytesByDevice.values().stream().mapToLong(Long::longValue).sum();
        }
    }

    /** One device: weights, KV bytes per live session (by session id), the estimated workspace. */
    public record DeviceRow(Device device, long weightBytes, Map<Long, Long> kvBytesBySession, long workspaceBytes) {

        /** KV bytes of all live sessions on this device. */
        public long kvBytes() {
            return kvBytesBySession.values().stream().mapToLong(Long::longValue).sum();
        }

        /** Weights, KV and workspace together. */
        public long totalBytes() {
            return weightBytes + kvBytes() + workspaceBytes;
        }
    }

    private final List<DeviceRow> rows;
    private final List<Session> sessions;
    private final ProcessMemory process;
    private final List<MemoryReport.CudaAllocator> cuda;

    ChatGLMMemoryReport(List<DeviceRow> rows, List<Session> sessions, ProcessMemory process,
            List<MemoryReport.CudaAllocator> cuda) {
        this.rows = List.copyOf(rows);
        this.sessions = List.copyOf(sessions);
        this.process = process;
        this.cuda = List.copyOf(cuda);
    }

    /** Builds the rows: one per device that holds weights, a cache or a workspace, in the weights' order first. */
    static ChatGLMMemoryReport of(MemoryReport weights, List<Session> sessions, Map<Device, Long> workspace) {
        List<Device> devices = new ArrayList<>(weights.weightBytes().keySet());
        for (Session s : sessions) {
            s.kvBytesByDevice().keySet().stream().filter(d -> !devices.contains(d)).forEach(devices::add);
        }
        workspace.keySet().stream().filter(d -> !devices.contains(d)).forEach(devices::add);
        List<DeviceRow> rows = new ArrayList<>();
        for (Device d : devices) {
            Map<Long, Long> kv = new LinkedHashMap<>();
            for (Session s : sessions) {
                Long b = s.kvBytesByDevice().get(d);
                if (b != null) {
                    kv.put(s.id(), b);
                }
            }
            rows.add(new DeviceRow(d, weights.weightBytes(d), Collections.unmodifiableMap(kv),
                    workspace.getOrDefault(d, 0L)));
        }
        return new ChatGLMMemoryReport(rows, sessions, weights.process(), weights.cudaAllocators());
    }

    /** One row per device. */
    public List<DeviceRow> rows() {
        return rows;
    }

    /**
     * The row of {@code device}, or an empty one when nothing of the model is there.
     */
    public DeviceRow row(Device device) {
        return rows.stream().filter(r -> r.device().equals(device)).findFirst()
                .orElse(new DeviceRow(device, 0, Map.of(), 0));
    }

    /** The live sessions, oldest first. */
    public List<Session> sessions() {
        return sessions;
    }

    /** Weights, KV and workspace on every device (disk included). */
    public long totalBytes() {
        return rows.stream().mapToLong(DeviceRow::totalBytes).sum();
    }

    /** The process's memory when the report was made (zeros where not Linux). */
    public ProcessMemory process() {
        return process;
    }

    /** The CUDA allocator per GPU when the report was made; empty without a CUDA device. */
    public List<MemoryReport.CudaAllocator> cudaAllocators() {
        return cuda;
    }

    @Override
    public String toString() {
        StringBuilder sb = new StringBuilder();
        String format = "%-8s %12s %12s %12s %12s  %s%n";
        sb.append(String.format(format, "device", "weights", "kv", "workspace", "total", "kv by session"));
        for (DeviceRow r : rows) {
            String bySession = r.kvBytesBySession().entrySet().stream()
                    .map(e -> "#" + e.getKey() + " " + MemorySize.format(e.getValue()))
                    .collect(Collectors.joining(", "));
            sb.append(String.format(format, r.device(), MemorySize.format(r.weightBytes()),
                    MemorySize.format(r.kvBytes()), MemorySize.format(r.workspaceBytes()),
                    MemorySize.format(r.totalBytes()), bySession));
        }
        for (Session s : sessions) {
            sb.append(String.format("session #%d: batch %d, %d/%d positions, kv %s%n", s.id(), s.batch(), s.length(),
                    s.capacity(), MemorySize.format(s.kvBytes())));
        }
        sb.append("process: ").append(process).append('\n');
        for (MemoryReport.CudaAllocator c : cuda) {
            sb.append(c.device()).append(" allocator: allocated ").append(MemorySize.format(c.allocatedBytes()))
                    .append(", reserved ").append(MemorySize.format(c.reservedBytes())).append(", peak allocated ")
                    .append(MemorySize.format(c.peakAllocatedBytes())).append('\n');
        }
        return sb.toString();
    }
}
