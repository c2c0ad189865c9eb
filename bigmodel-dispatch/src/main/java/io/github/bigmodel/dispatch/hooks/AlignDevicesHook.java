package io.github.bigmodel.dispatch.hooks;

import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.ForwardHook;
import io.github.bigmodel.core.Module;
import io.github.bigmodel.core.Parameter;
import io.github.bigmodel.core.Tensors;
import io.github.bigmodel.core.quant.QuantizedLinear;
import java.util.Map;
import java.util.concurrent.locks.ReentrantLock;
import org.bytedeco.pytorch.Tensor;

/**
 * Makes a module run on its execution device: inputs on another device are moved there (one transfer per device
 * boundary, since each module receives what the previous one produced), and for an offloaded module the weights are
 * brought from the CPU or disk for the duration of the forward pass only, then released.
 *
 * <pre>{@code
 * block.addForwardHook(new AlignDevicesHook(Device.cuda(0), null, null, -1));            // placed on GPU 0
 * block.addForwardHook(new AlignDevicesHook(Device.CPU, offloaded, prefetcher, 7));      // weights on disk
 * }</pre>
 *
 * <p>Threads: a module whose weights live on its execution device needs no guard, so several threads run it at
 * once. An offloaded module's parameter slots are shared, and are filled for one forward pass and emptied after
 * it: one thread at a time may be inside such a module. {@link #beforeForward} takes a lock of this hook and
 * {@link #afterForward} (run by the same thread when the forward scope closes) gives it back, so a second
 * session waits for the first to leave the module, while different offloaded modules still run in parallel.
 * Device-map entries never nest, so a thread holds at most one such lock and waiting threads cannot deadlock.
 */
public final class AlignDevicesHook implements ForwardHook {

    private final Device executionDevice;
    private final org.bytedeco.pytorch.Device torchDevice;
    private final OffloadedWeights offloaded;
    private final Prefetcher prefetcher;
    private final int stage;
    /** Held from {@link #beforeForward} to {@link #afterForward} of an offloaded module (see the class doc). */
    private final ReentrantLock inUse = new ReentrantLock();

    /**
     * @param executionDevice where the module computes
     * @param offloaded the module's offloaded weights, or null when its weights live on the execution device
     * @param prefetcher reads offloaded weights ahead, or null to read them when the forward starts
     * @param stage this module's index in the prefetcher's stages (ignored without a prefetcher)
     */
    public AlignDevicesHook(Device executionDevice, OffloadedWeights offloaded, Prefetcher prefetcher, int stage) {
        if (!executionDevice.isTensorDevice() || executionDevice.isMeta()) {
            throw new IllegalArgumentException("A module cannot execute on " + executionDevice);
        }
        this.executionDevice = executionDevice;
        this.torchDevice = Tensors.toTorch(executionDevice);
        this.offloaded = offloaded == null || offloaded.isEmpty() ? null : offloaded;
        this.prefetcher = this.offloaded == null ? null : prefetcher;
        this.stage = stage;
    }

    @Override
    public Device executionDevice() {
        return executionDevice;
    }

    /** The offloaded weights this hook brings in, or null. */
    public OffloadedWeights offloaded() {
        return offloaded;
    }

    @Override
    public void beforeForward(Module module) {
        if (offloaded == null) {
            return;
        }
        inUse.lock();
        boolean installed = false;
        try {
            Map<Parameter, Tensor> values = prefetcher != null ? prefetcher.take(stage)
                    : offloaded.materialize(false);
            for (Map.Entry<Parameter, Tensor> e : values.entrySet()) {
                QuantizedLinear owner = offloaded.quantizedOwner(e.getKey());
                if (owner != null) {
                    owner.installExecutionLayout(e.getValue()); // packed or tiled: not the logical shape
                } else {
                    e.getKey().set(e.getValue());
                }
            }
            installed = true;
        } finally {
            if (!installed) {
                // The scope does not call afterForward for a hook whose beforeForward failed.
                release();
                inUse.unlock();
            }
        }
    }

    @Override
    public Tensor onInput(Module module, Tensor input) {
        if (Tensors.deviceOf(input).equals(executionDevice)) {
            return input;
        }
        return input.to(torchDevice, input.scalar_type());
    }

    @Override
    public void afterForward(Module module) {
        if (offloaded == null) {
            return;
        }
        if (!inUse.isHeldByCurrentThread()) {
            throw new IllegalStateException("afterForward of " + offloaded.moduleName()
                    + " on a thread that did not run its beforeForward");
        }
        try {
            release();
        } finally {
            inUse.unlock();
        }
    }

    private void release() {
        for (Parameter p : offloaded.sources().keySet()) {
            QuantizedLinear owner = offloaded.quantizedOwner(p);
            if (owner != null) {
                owner.markOffloaded(); // drops its kernel tables too
            } else {
                p.markOffloaded();
            }
        }
    }
}
