package io.github.bigmodel.dispatch;

import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.HookHandle;
import io.github.bigmodel.core.Module;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import io.github.bigmodel.dispatch.plan.DeviceMap;
import io.github.bigmodel.dispatch.plan.DevicePlan;
import io.github.bigmodel.dispatch.report.MemoryReport;
import io.github.bigmodel.dispatch.hooks.Prefetcher;

/**
 * A model whose weights have been placed by {@link BigModel}: on GPUs, on the CPU, or offloaded (to CPU memory or
 * disk) and brought in by hooks for each forward pass.
 *
 * <pre>{@code
 * try (DispatchedModel<MyModel> d = BigModel.loadCheckpointAndDispatch(new MyModel(), ckpt, options)) {
 *     d.hfDeviceMap();                       // {"embed":"cpu","layers.0":"cpu","layers.1":"disk",...}
 *     d.executionDevice("layers.1");         // cpu (or the first GPU when the map has one)
 *     Tensor y = d.model().forward(x);
 * }                                          // hooks removed, prefetcher stopped, weights released
 * }</pre>
 *
 * <p>Not thread-safe for concurrent forwards when anything is offloaded: offloaded weights are put into the shared
 * parameters for the duration of one module's forward and the prefetcher follows one execution order, so forwards
 * must take turns. A model with nothing offloaded may be read by several threads.
 */
public final class DispatchedModel<M extends Module> implements AutoCloseable {

    private static final Logger LOG = LoggerFactory.getLogger(DispatchedModel.class);

    private final M model;
    private final DeviceMap deviceMap;
    private final Device mainDevice;
    private final DevicePlan plan;
    private final List<HookHandle> hooks;
    private final Prefetcher prefetcher;
    private final List<AutoCloseable> resources;
    private final OffloadStats stats;
    /** Counted once at dispatch, before any forward: hooks move offloaded weights in and out during one. */
    private final Map<Device, Long> weightBytes;
    private volatile boolean closed;

    /** What loading did with the offload folder: for logs and tests. */
    record OffloadStats(int tensorsWritten, long bytesWritten, int tensorsReused, int tensorsInPlace) {
    }

    DispatchedModel(M model, DeviceMap deviceMap, Device mainDevice, DevicePlan plan, List<HookHandle> hooks,
            Prefetcher prefetcher, List<AutoCloseable> resources, OffloadStats stats) {
        this.model = model;
        this.deviceMap = deviceMap;
        this.mainDevice = mainDevice;
        this.plan = plan;
        this.hooks = List.copyOf(hooks);
        this.prefetcher = prefetcher;
        this.resources = new ArrayList<>(resources);
        this.stats = stats;
        this.weightBytes = MemoryReport.weightBytesByDevice(model, deviceMap);
    }

    /**
     * Weights per device (GPUs, {@code cpu} including weights offloaded to CPU memory, {@code disk} for the offload
     * folder) as placed at dispatch, with the process's and (when a CUDA device is present) the CUDA allocator's
     * figures read now. Safe to call from any thread, also while another thread runs a forward pass: the weight
     * figures were counted once at dispatch and reading them touches no tensor.
     *
     * <pre>{@code
     * System.out.println(dispatched.memoryReport());
     * }</pre>
     *
     * @throws IllegalStateException once closed
     */
    public MemoryReport memoryReport() {
        checkOpen();
        return MemoryReport.of(weightBytes);
    }

    /** The model, with its weights placed and its hooks attached. */
    public M model() {
        checkOpen();
        return model;
    }

    /** The placement used, in {@code hf_device_map} form (GPUs as indices in JSON): the plan or the given map. */
    public DeviceMap hfDeviceMap() {
        return deviceMap;
    }

    /** The plan the map came from, or null when a device map was given. */
    public DevicePlan plan() {
        return plan;
    }

    /** Where modules placed on {@code cpu} or {@code disk} execute: the first GPU of the map, or the CPU. */
    public Device mainDevice() {
        return mainDevice;
    }

    /**
     * Where module (or tensor) {@code name} computes: its entry's GPU, or the main device for {@code cpu} and
     * {@code disk} entries (the CPU itself when there is no GPU).
     *
     * @throws IllegalArgumentException when the model has no module or tensor of that name
     */
    public Device executionDevice(String name) {
        if (model.findModule(name) == null && model.findTensor(name) == null) {
            throw new IllegalArgumentException("No module or tensor named '" + name + "' in " + model.className());
        }
        Device placed = deviceMap.deviceOf(name);
        return placed == null ? mainDevice : Dispatcher.executionDevice(placed, mainDevice);
    }

    /** The prefetcher reading offloaded modules ahead, or null when prefetch is off or nothing is offloaded. */
    Prefetcher prefetcher() {
        return prefetcher;
    }

    int hookCount() {
        return hooks.size();
    }

    OffloadStats offloadStats() {
        return stats;
    }

    private void checkOpen() {
        if (closed) {
            throw new IllegalStateException("This dispatched model is closed");
        }
    }

    /** Removes the hooks, stops the prefetcher, releases every weight (parameters go back to meta). Idempotent. */
    @Override
    public synchronized void close() {
        if (closed) {
            return;
        }
        closed = true;
        hooks.forEach(HookHandle::remove);
        if (prefetcher != null) {
            prefetcher.close();
        }
        model.toMeta();
        Collections.reverse(resources);
        for (AutoCloseable r : resources) {
            try {
                r.close();
            } catch (Exception e) {
                LOG.warn("Releasing {} failed: {}", r, e.toString());
            }
        }
        resources.clear();
    }

    @Override
    public String toString() {
        return "DispatchedModel[" + model.className() + ", main " + mainDevice + ", " + deviceMap + "]";
    }

    /** Convenience for the chosen map per module, in order. */
    Map<String, Device> entries() {
        return deviceMap.asMap();
    }
}
