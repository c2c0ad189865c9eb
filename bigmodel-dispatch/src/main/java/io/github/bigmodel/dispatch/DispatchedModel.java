package io.github.bigmodel.dispatch;

import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.HookHandle;
import io.github.bigmodel.core.ModelClosedException;
import io.github.bigmodel.core.Module;
import io.github.bigmodel.core.UseGuard;
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
 * <p>Threads: several threads may run forward passes at once; an offloaded module is entered by one thread at a
 * time ({@code AlignDevicesHook}), and the prefetcher's schedule is then only a guess (see {@code Prefetcher}).
 *
 * <p>Ownership and closing: this object owns everything the dispatch made, the hooks, the {@code Prefetcher} and
 * its thread, the offload folder's mapped views, the mapped checkpoint read in place, and the CPU copies of
 * offloaded weights; the model's parameters own the tensors placed in them. {@link #close()} may be called from any
 * thread, also while others run forward passes, and frees nothing another thread may still read: it (1) cancels
 * the prefetcher, so a forward under way stops at its next offloaded module, (2) closes the model's
 * {@link UseGuard}, so no forward starts any more, and waits for the running ones to end, (3) waits for the
 * prefetch thread's running read, (4) removes the hooks and puts the parameters back on meta, and only then (5)
 * closes the mappings, the checkpoint and the copies. Work that races it either completes or fails with
 * {@link ModelClosedException}: a forward of the root module ({@link Module#useGuard()}, entered by a hook this
 * object attaches first, or by the model's own forward as ChatGLM's does), {@link #model()} and
 * {@link #memoryReport()} after close, and a read of an offloaded weight's source after close.
 */
public final class DispatchedModel<M extends Module> implements AutoCloseable {

    private static final Logger LOG = LoggerFactory.getLogger(DispatchedModel.class);

    private final M model;
    private final DeviceMap deviceMap;
    private final Device mainDevice;
    private final DevicePlan plan;
    private final List<HookHandle> hooks;
    /** Enters the model's use guard around every forward of the root module, before any other hook. */
    private final HookHandle guardHook;
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
        // New weights are in place: forwards are welcome again (the guard stays closed after a previous close).
        model.useGuard().reopen();
        this.guardHook = model.addFirstForwardHook(model.useGuard().forwardHook());
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
            throw new ModelClosedException("This dispatched model (" + model.className() + ") is closed");
        }
    }

    /** Whether {@link #close()} was called. */
    public boolean isClosed() {
        return closed;
    }

    /**
     * Stops the background reads, waits for running forward passes and reads to end, then removes the hooks and
     * releases every weight (parameters go back to meta) and mapping, in that order (see the class doc). Safe from
     * any thread; idempotent (a second caller waits until the first has finished).
     *
     * @throws IllegalStateException when called from inside one of this model's forward passes (it would wait for
     *     itself)
     */
    @Override
    public synchronized void close() {
        if (closed) {
            return;
        }
        if (model.useGuard().isHeldByCurrentThread()) {
            throw new IllegalStateException("Cannot close " + this + " from inside its own forward pass");
        }
        if (prefetcher != null) {
            prefetcher.cancel();
        }
        model.useGuard().close();
        closed = true;
        if (prefetcher != null) {
            prefetcher.close();
        }
        guardHook.remove();
        hooks.forEach(HookHandle::remove);
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
