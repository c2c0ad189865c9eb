package io.github.bigmodel.dispatch.plan;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.Module;
import io.github.bigmodel.core.quant.Precision;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import io.github.bigmodel.dispatch.DispatchOptions;

/**
 * Everything besides the model and the budget that shapes a device map: no-split classes (the model's own unless
 * given), the load dtype and per-tensor dtypes, per-device precisions, buffer offloading, the clean-up and fallback
 * switches, where unset budgets come from, and the memory to reserve beside the weights ({@link MemoryReservation}).
 * {@link DispatchOptions} holds one of these for the planning it does.
 *
 * <pre>{@code
 * PlanOptions o = PlanOptions.builder()
 *         .dtype(DType.FLOAT16)                       // no-split classes: the model's own (GLMBlock for ChatGLM)
 *         .gpuPrecision(Precision.INT4)
 *         .build();
 * }</pre>
 */
public final class PlanOptions {

    /** As given, or null for the model's own ({@link Module#noSplitModuleClasses()}). */
    final List<String> noSplit;
    final Double dtypeBytes;
    final String dtypeName;
    final DType dtype;
    final Map<String, Double> specialBytes;
    final boolean offloadBuffers;
    final boolean cleanResult;
    final boolean fallbackAllocation;
    final DeviceInventory inventory;
    final Map<Device, Precision> precisions;
    final Precision gpuPrecision;
    final Precision cpuPrecision;
    final Device executionDevice;
    final MemoryReservation reservation;
    final HostBudgets hosts;

    private PlanOptions(Builder b) {
        noSplit = b.noSplit == null ? null : List.copyOf(b.noSplit);
        dtypeBytes = b.dtypeBytes;
        dtypeName = b.dtypeName;
        dtype = b.dtype;
        specialBytes = Collections.unmodifiableMap(new LinkedHashMap<>(b.specialBytes));
        offloadBuffers = b.offloadBuffers;
        cleanResult = b.cleanResult;
        fallbackAllocation = b.fallbackAllocation;
        inventory = b.inventory;
        precisions = Collections.unmodifiableMap(new LinkedHashMap<>(b.precisions));
        gpuPrecision = b.gpuPrecision;
        cpuPrecision = b.cpuPrecision;
        executionDevice = b.executionDevice;
        reservation = b.reservation;
        hosts = b.hosts;
        checkOneFloatType();
    }

    /**
     * One floating-point dtype per model: float precisions must agree with each other and with the load dtype.
     * Mixed float types (fp16 on the GPU, fp32 on the CPU) would need every module to compute in its own dtype,
     * with the KV cache, rotary tables and masks per device too; that is not done (docs/quantization.md).
     */
    private void checkOneFloatType() {
        Set<String> floats = new LinkedHashSet<>();
        Map<String, Precision> all = new LinkedHashMap<>();
        precisions.forEach((d, p) -> all.put(d.toString(), p));
        if (gpuPrecision != null) {
            all.put("gpu", gpuPrecision);
        }
        if (cpuPrecision != null) {
            all.put("cpu (default)", cpuPrecision);
        }
        all.forEach((where, p) -> {
            if (!p.isQuantized()) {
                floats.add(p.dtype().torchName());
            }
        });
        if (dtype != null) {
            floats.add(dtype.torchName());
        }
        if (floats.size() > 1) {
            throw new IllegalArgumentException("Precisions " + all + (dtype == null ? "" : " with dtype "
                    + dtype.torchName()) + " mix floating-point types " + floats + ": one floating-point dtype per"
                    + " model is supported (int8/int4 may differ by device); use the same float type everywhere");
        }
    }

    /** These options with the no-split classes resolved for {@code model}: as given, else the model's own. */
    PlanOptions forModel(Module model) {
        if (noSplit != null) {
            return this;
        }
        return toBuilder().noSplitModuleClasses(new ArrayList<>(new TreeSet<>(model.noSplitModuleClasses())))
                .build();
    }

    /** A builder holding these options, to change some of them. */
    public Builder toBuilder() {
        Builder b = new Builder();
        b.noSplit = noSplit == null ? null : new ArrayList<>(noSplit);
        b.dtypeBytes = dtypeBytes;
        b.dtypeName = dtypeName;
        b.dtype = dtype;
        b.specialBytes.putAll(specialBytes);
        b.offloadBuffers = offloadBuffers;
        b.cleanResult = cleanResult;
        b.fallbackAllocation = fallbackAllocation;
        b.inventory = inventory;
        b.precisions.putAll(precisions);
        b.gpuPrecision = gpuPrecision;
        b.cpuPrecision = cpuPrecision;
        b.executionDevice = executionDevice;
        b.reservation = reservation;
        b.hosts = hosts;
        return b;
    }

    /** Defaults: nothing no-split, tensors' own dtypes, buffers kept on GPU, clean result, no fallback. */
    public static PlanOptions defaults() {
        return builder().build();
    }

    public static Builder builder() {
        return new Builder();
    }

    /** The no-split class names as given, or null when the model's own apply. */
    public List<String> noSplitModuleClasses() {
        return noSplit;
    }

    /**
     * The load dtype's bytes per element: the dtype given, else that of a float precision some device asks for,
     * else null (tensors keep their own dtype).
     */
    public Double dtypeBytes() {
        if (dtypeBytes != null) {
            return dtypeBytes;
        }
        DType f = floatDtype();
        return f == null ? null : ModuleSizes.bytesPerElement(f);
    }

    /** The load dtype when given as a libtorch dtype ({@link Builder#dtype(DType)}), else null. */
    public DType dtype() {
        return dtype;
    }

    /**
     * The floating-point dtype of the weights: {@link #dtype()} when set, else the float precision some device
     * asks for (they agree, see {@link Builder#build()}), else null (each parameter's declared dtype).
     */
    public DType floatDtype() {
        if (dtype != null) {
            return dtype;
        }
        List<Precision> all = new ArrayList<>(precisions.values());
        all.add(gpuPrecision);
        all.add(cpuPrecision);
        for (Precision p : all) {
            if (p != null && !p.isQuantized()) {
                return p.dtype();
            }
        }
        return null;
    }

    /** Per-tensor bytes per element overriding the load dtype. */
    public Map<String, Double> specialDtypeBytes() {
        return specialBytes;
    }

    public boolean offloadBuffers() {
        return offloadBuffers;
    }

    public boolean cleanResult() {
        return cleanResult;
    }

    public boolean fallbackAllocation() {
        return fallbackAllocation;
    }

    public DeviceInventory inventory() {
        return inventory;
    }

    /**
     * The precision of modules executing on {@code device} (its own, else the GPU or CPU default), or null when
     * none is set: then sizes are accelerate's.
     */
    public Precision precisionOf(Device device) {
        // The one rule for a device's precision: planning and loading both ask it, so they cannot disagree.
        Precision p = precisions.get(device);
        if (p != null) {
            return p;
        }
        if (device.isCuda()) {
            return gpuPrecision;
        }
        return device.isCpu() ? cpuPrecision : null;
    }

    /** Precisions set for single devices ({@link Builder#precision(Device, Precision)}). */
    public Map<Device, Precision> precisions() {
        return precisions;
    }

    /** The precision of every GPU without one of its own, or null. */
    public Precision gpuPrecision() {
        return gpuPrecision;
    }

    /** The precision of the CPU when it has none of its own, or null. */
    public Precision cpuPrecision() {
        return cpuPrecision;
    }

    /** Whether any precision is set. */
    public boolean hasPrecisions() {
        return !precisions.isEmpty() || gpuPrecision != null || cpuPrecision != null;
    }

    /** The main device modules on {@code cpu}/{@code disk} execute on, or null for the first GPU of the budget. */
    public Device executionDevice() {
        return executionDevice;
    }

    /** Memory kept beside the weights (KV cache, workspace); {@link MemoryReservation#NONE} by default. */
    public MemoryReservation reservation() {
        return reservation;
    }

    /** The hosts of a pipeline and their budgets ({@link DeviceMapPlanner#planHosts}), or null for one machine. */
    public HostBudgets hosts() {
        return hosts;
    }

    /** Builds {@link PlanOptions}. */
    public static final class Builder {
        private List<String> noSplit;
        private Double dtypeBytes;
        private String dtypeName;
        private DType dtype;
        private final Map<String, Double> specialBytes = new LinkedHashMap<>();
        private boolean offloadBuffers;
        private boolean cleanResult = true;
        private boolean fallbackAllocation;
        private DeviceInventory inventory = DeviceInventory.system();
        private final Map<Device, Precision> precisions = new LinkedHashMap<>();
        private Precision gpuPrecision;
        private Precision cpuPrecision;
        private Device executionDevice;
        private MemoryReservation reservation = MemoryReservation.NONE;
        private HostBudgets hosts;

        private Builder() {
        }

        /**
         * Class names ({@link Module#className()}) whose instances stay on one device, replacing the model's own
         * ({@link Module#noSplitModuleClasses()}); an empty list lets the planner split everything.
         */
        public Builder noSplitModuleClasses(String... classNames) {
            return noSplitModuleClasses(List.of(classNames));
        }

        /** {@link #noSplitModuleClasses(String...)} from a list; null = the model's own. */
        public Builder noSplitModuleClasses(List<String> classNames) {
            noSplit = classNames == null ? null : new ArrayList<>(classNames);
            return this;
        }

        /** The dtype weights are converted to on load (null = keep each tensor's dtype). */
        public Builder dtype(DType value) {
            dtypeBytes = value == null ? null : ModuleSizes.bytesPerElement(value);
            dtypeName = value == null ? null : value.torchName();
            dtype = value;
            return this;
        }

        /**
         * The load dtype by name for sizing, including accelerate's custom {@code int4}, {@code int2},
         * {@code fp8}.
         */
        public Builder dtype(String name) {
            dtypeBytes = name == null ? null : ModuleSizes.bytesPerElement(name);
            dtypeName = name;
            DType parsed = null;
            if (name != null) {
                try {
                    parsed = DType.parse(name);
                } catch (IllegalArgumentException notALibtorchType) {
                    parsed = null; // a sizing-only name such as int2 or fp8
                }
            }
            dtype = parsed != null && parsed.isFloatingPoint() ? parsed : null;
            return this;
        }

        /** Keeps the tensor {@code parameterName} in {@code dtype} whatever the load dtype. */
        public Builder specialDtype(String parameterName, DType dtype) {
            specialBytes.put(parameterName, ModuleSizes.bytesPerElement(dtype));
            return this;
        }

        /** As {@link #specialDtype(String, DType)} with a dtype name. */
        public Builder specialDtype(String parameterName, String dtypeName) {
            specialBytes.put(parameterName, ModuleSizes.bytesPerElement(dtypeName));
            return this;
        }

        /** Whether offloaded layers' buffers are offloaded too (else they are counted for a GPU warning). */
        public Builder offloadBuffers(boolean value) {
            offloadBuffers = value;
            return this;
        }

        /** Whether entries that end up on one device are merged into their parent (default true). */
        public Builder cleanResult(boolean value) {
            cleanResult = value;
            return this;
        }

        /** Whether a device that fits nothing in order may take a smaller module from further on (default false). */
        public Builder fallbackAllocation(boolean value) {
            fallbackAllocation = value;
            return this;
        }

        /** Where unset budgets come from (default: this machine). */
        public Builder inventory(DeviceInventory value) {
            inventory = value;
            return this;
        }

        /**
         * The precision of the QuantizedLinear weights of modules that execute on {@code device}: a module placed
         * there is sized at it ({@link ModuleSizes#compute(io.github.bigmodel.core.Module, DType, Map, Precision)});
         * modules placed on {@code cpu}/{@code disk} execute on the main device and are sized at its precision.
         */
        public Builder precision(Device device, Precision precision) {
            if (device == null || device.isDisk() || device.isMeta() || device.isRemote()) {
                throw new IllegalArgumentException("A precision belongs to a device that executes modules (cpu or"
                        + " cuda:N), got " + device + ": modules on disk take their execution device's precision");
            }
            if (precision == null) {
                precisions.remove(device);
            } else {
                precisions.put(device, precision);
            }
            return this;
        }

        /** The precision of every GPU without one of its own. */
        public Builder gpuPrecision(Precision precision) {
            gpuPrecision = precision;
            return this;
        }

        /** The precision of the CPU when it has none of its own. */
        public Builder cpuPrecision(Precision precision) {
            cpuPrecision = precision;
            return this;
        }

        /**
         * The main device: where modules placed on {@code cpu} or {@code disk} execute (see {@link #precision});
         * null = the first GPU of the budget or map, else the CPU.
         *
         * @throws IllegalArgumentException for {@code disk} or {@code meta}
         */
        public Builder executionDevice(Device device) {
            if (device != null && (device.isDisk() || device.isMeta() || device.isRemote())) {
                throw new IllegalArgumentException("A model cannot execute on " + device);
            }
            executionDevice = device;
            return this;
        }

        /**
         * Memory the model needs beside its weights while it runs: each module's reserved bytes are counted with
         * its weights on the device it executes on, and every executing device keeps the workspace (see
         * {@link MemoryReservation}). Null or {@link MemoryReservation#NONE}: plans are exactly accelerate's.
         */
        public Builder reservation(MemoryReservation value) {
            reservation = value == null ? MemoryReservation.NONE : value;
            return this;
        }

        /**
         * The hosts of a pipeline, in pipeline order, with each host's budgets: {@link DeviceMapPlanner#planHosts}
         * gives each host a run of consecutive blocks (see docs/distributed.md). Null (the default): one machine.
         *
         * <pre>{@code
         * PlanOptions o = PlanOptions.builder().dtype(DType.FLOAT16)
         *         .hosts(HostBudgets.parse(List.of("box-a=cuda:0:6GiB,cpu:8GiB", "box-b=cpu:16GiB"))).build();
         * }</pre>
         */
        public Builder hosts(HostBudgets value) {
            hosts = value;
            return this;
        }

        /**
         * @throws IllegalArgumentException when the precisions and the dtype name more than one floating-point type
         */
        public PlanOptions build() {
            return new PlanOptions(this);
        }
    }
}
