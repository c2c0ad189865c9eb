package io.github.bigmodel.dispatch.hooks;

import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.Parameter;
import io.github.bigmodel.core.Tensors;
import io.github.bigmodel.core.quant.QuantizedLinear;
import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.LinkedHashMap;
import java.util.Map;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * The offloaded parameters of one dispatched module (a device-map entry) and how to bring them to the module's
 * execution device: the unit that hooks load before a forward and prefetch ahead of it.
 *
 * <pre>{@code
 * OffloadedWeights w = new OffloadedWeights("transformer.encoder.layers.27", Device.CPU, sources);
 * Map<Parameter, Tensor> ready = w.materialize();   // on the execution device
 * }</pre>
 */
public final class OffloadedWeights {

    private final String moduleName;
    private final Device executionDevice;
    private final Map<Parameter, WeightSource> sources;
    private final long byteLength;
    private final Map<Parameter, QuantizedLinear> quantizedOwners;

    public OffloadedWeights(String moduleName, Device executionDevice, Map<Parameter, WeightSource> sources) {
        this(moduleName, executionDevice, sources, Map.of());
    }

    /**
     * @param quantizedOwners for each int8/int4 weight among {@code sources} (stored in THUDM's portable layout),
     *     its layer: the weight is converted to the layer's layout on the execution device when brought in
     */
    public OffloadedWeights(String moduleName, Device executionDevice, Map<Parameter, WeightSource> sources,
            Map<Parameter, QuantizedLinear> quantizedOwners) {
        this.quantizedOwners = Collections.unmodifiableMap(new IdentityHashMap<>(quantizedOwners));
        this.moduleName = moduleName;
        this.executionDevice = executionDevice;
        this.sources = Collections.unmodifiableMap(new LinkedHashMap<>(sources));
        long total = 0;
        for (WeightSource s : sources.values()) {
            total += s.byteLength();
        }
        this.byteLength = total;
    }

    public String moduleName() {
        return moduleName;
    }

    public Device executionDevice() {
        return executionDevice;
    }

    public Map<Parameter, WeightSource> sources() {
        return sources;
    }

    public long byteLength() {
        return byteLength;
    }

    public boolean isEmpty() {
        return sources.isEmpty();
    }

    /** The quantized layer whose weight {@code p} is, or null for an ordinary tensor. */
    public QuantizedLinear quantizedOwner(Parameter p) {
        return quantizedOwners.get(p);
    }

    /**
     * Reads every parameter's values onto the execution device. With {@code touch}, values that stay zero-copy
     * views of a mapped file on the CPU have their pages faulted in here (on a prefetch thread), so the disk reads
     * happen ahead of the forward pass rather than as page faults during it.
     */
    public Map<Parameter, Tensor> materialize(boolean touch) {
        Map<Parameter, Tensor> out = new IdentityHashMap<>();
        try {
            for (Map.Entry<Parameter, WeightSource> e : sources.entrySet()) {
                Tensor value = bringIn(e.getValue(), touch);
                QuantizedLinear owner = quantizedOwners.get(e.getKey());
                if (owner != null) {
                    // On this (possibly prefetch) thread: e.g. CPU int4 tiles made from the portable layout.
                    Tensor layout;
                    try {
                        layout = owner.executionLayout(value);
                    } catch (RuntimeException ex) {
                        value.close();
                        throw ex;
                    }
                    if (layout != value) {
                        value.close();
                    }
                    value = layout;
                }
                out.put(e.getKey(), value);
            }
        } catch (RuntimeException | Error ex) {
            out.values().forEach(Tensor::close);
            throw ex;
        }
        return out;
    }

    private Tensor bringIn(WeightSource source, boolean touch) {
        Tensor cpu = source.read();
        if (executionDevice.isCpu()) {
            if (touch && source.onDisk()) {
                touchPages(cpu);
            }
            return cpu;
        }
        Tensor moved = cpu.to(Tensors.toTorch(executionDevice), cpu.scalar_type());
        cpu.close();
        return moved;
    }

    /**
     * Reads one byte of every 4 KiB page of a (mapped) tensor, so the kernel pages it in now, on the prefetch
     * thread, and the forward pass finds it in memory. Unlike a copy this costs almost nothing when the pages are
     * already cached, and it leaves the tensor a zero-copy view.
     */
    public static void touchPages(Tensor t) {
        long bytes = t.nbytes();
        if (bytes == 0 || !t.is_contiguous()) {
            return;
        }
        try (PointerScope scope = new PointerScope()) {
            Tensor raw = t.view(-1).view(ScalarType.Byte);
            long pages = (bytes + PAGE - 1) / PAGE;
            raw.as_strided(new long[] {pages}, new long[] {PAGE}).sum().item_long();
        }
    }

    private static final long PAGE = 4096;

    @Override
    public String toString() {
        return moduleName + " (" + sources.size() + " tensors, " + byteLength + " bytes) -> " + executionDevice;
    }
}
