package io.github.bigmodel.dispatch;

import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.Parameter;
import io.github.bigmodel.core.Tensors;
import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.LinkedHashMap;
import java.util.Map;
import org.bytedeco.pytorch.Tensor;

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

    public OffloadedWeights(String moduleName, Device executionDevice, Map<Parameter, WeightSource> sources) {
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

    /**
     * Reads every parameter's values onto the execution device. With {@code touch}, values that would stay
     * zero-copy views of a mapped file on the CPU are copied into memory, so the disk reads happen here (on a
     * prefetch thread) rather than as page faults during the forward pass.
     */
    public Map<Parameter, Tensor> materialize(boolean touch) {
        Map<Parameter, Tensor> out = new IdentityHashMap<>();
        try {
            for (Map.Entry<Parameter, WeightSource> e : sources.entrySet()) {
                out.put(e.getKey(), bringIn(e.getValue(), touch));
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
                Tensor copy = cpu.clone();
                cpu.close();
                return copy;
            }
            return cpu;
        }
        Tensor moved = cpu.to(Tensors.toTorch(executionDevice), cpu.scalar_type());
        cpu.close();
        return moved;
    }

    @Override
    public String toString() {
        return moduleName + " (" + sources.size() + " tensors, " + byteLength + " bytes) -> " + executionDevice;
    }
}
