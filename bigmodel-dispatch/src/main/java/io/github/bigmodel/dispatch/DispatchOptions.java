package io.github.bigmodel.dispatch;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.quant.Precision;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * How {@link BigModel} loads and places a model: a device map or a strategy with a budget, the offload folder, the
 * load dtype, prefetching and the main (execution) device.
 *
 * <pre>{@code
 * DispatchOptions o = DispatchOptions.builder()
 *         .strategy(Strategy.AUTO)
 *         .maxMemory("0=10GiB,cpu=30GiB")
 *         .noSplitModuleClasses("GLMBlock")
 *         .offloadFolder(Path.of("offload"))
 *         .dtype(DType.FLOAT16)
 *         .prefetch(1)
 *         .build();
 * DispatchOptions int4OnGpu = DispatchOptions.builder()
 *         .maxMemory("0=6GiB,cpu=30GiB").dtype(DType.FLOAT16)
 *         .gpuPrecision(Precision.INT4)                 // block linears int4 wherever they execute on a GPU
 *         .cpuPrecision(Precision.INT8).build();        // int8 where they execute on the CPU
 * DispatchOptions fixed = DispatchOptions.builder()
 *         .deviceMap(DeviceMap.fromJson("{\"embed\": \"cpu\", \"layers\": \"disk\"}"))
 *         .offloadFolder(Path.of("offload")).build();
 * }</pre>
 */
public final class DispatchOptions {

    /** Receives one call per tensor placed while loading: for progress bars and memory checks. */
    @FunctionalInterface
    public interface Progress {
        /**
         * @param name  the tensor's state-dict name
         * @param where the device map's device for it ({@code disk} for offloaded weights)
         * @param done  tensors placed so far, this one included
         * @param total tensors to place
         */
        void placed(String name, Device where, int done, int total);
    }

    private final DeviceMap deviceMap;
    private final Strategy strategy;
    private final MaxMemory maxMemory;
    private final List<String> noSplitModuleClasses;
    private final Path offloadFolder;
    private final boolean offloadStateDict;
    private final DType dtype;
    private final int prefetch;
    private final Device executionDevice;
    private final DeviceInventory inventory;
    private final Progress progress;
    private final Map<Device, Precision> precisions;
    private final Precision gpuPrecision;
    private final Precision cpuPrecision;
    private final MemoryReservation reservation;

    private DispatchOptions(Builder b) {
        deviceMap = b.deviceMap;
        strategy = b.deviceMap == null && b.strategy == null ? Strategy.AUTO : b.strategy;
        maxMemory = b.maxMemory;
        noSplitModuleClasses = List.copyOf(b.noSplit);
        offloadFolder = b.offloadFolder;
        offloadStateDict = b.offloadStateDict;
        dtype = b.dtype;
        prefetch = b.prefetch;
        executionDevice = b.executionDevice;
        inventory = b.inventory;
        progress = b.progress;
        precisions = Collections.unmodifiableMap(new LinkedHashMap<>(b.precisions));
        gpuPrecision = b.gpuPrecision;
        cpuPrecision = b.cpuPrecision;
        reservation = b.reservation;
        checkOneFloatType();
    }

    /**
     * One floating-point dtype per model: float precisions must agree with each other and with {@link #dtype()}.
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

    /**
     * A builder holding these options, to change some of them.
     *
     * <pre>{@code
     * DispatchOptions withFolder = options.toBuilder().offloadFolder(Path.of("offload")).build();
     * }</pre>
     */
    public Builder toBuilder() {
        Builder b = new Builder();
        b.deviceMap = deviceMap;
        b.strategy = deviceMap == null ? strategy : null;
        b.maxMemory = maxMemory;
        b.noSplit.addAll(noSplitModuleClasses);
        b.offloadFolder = offloadFolder;
        b.offloadStateDict = offloadStateDict;
        b.dtype = dtype;
        b.prefetch = prefetch;
        b.executionDevice = executionDevice;
        b.inventory = inventory;
        b.progress = progress;
        b.precisions.putAll(precisions);
        b.gpuPrecision = gpuPrecision;
        b.cpuPrecision = cpuPrecision;
        b.reservation = reservation;
        return b;
    }

    /** Defaults: the {@code auto} strategy over this machine's free memory, prefetch depth 1. */
    public static DispatchOptions defaults() {
        return builder().build();
    }

    public static Builder builder() {
        return new Builder();
    }

    /** The map to use as given, or null when a strategy plans one. */
    public DeviceMap deviceMap() {
        return deviceMap;
    }

    /** The planning strategy, or null when a device map is given. */
    public Strategy strategy() {
        return strategy;
    }

    /** The budget to plan under, or null for this machine's free memory. */
    public MaxMemory maxMemory() {
        return maxMemory;
    }

    public List<String> noSplitModuleClasses() {
        return noSplitModuleClasses;
    }

    /** Where weights that must be rewritten for {@code disk} go, or null. */
    public Path offloadFolder() {
        return offloadFolder;
    }

    /** Whether CPU-resident weights stay mapped from the checkpoint file instead of being copied into memory. */
    public boolean offloadStateDict() {
        return offloadStateDict;
    }

    /** The floating dtype weights are converted to, or null to use each parameter's declared dtype. */
    public DType dtype() {
        return dtype;
    }

    /** How many offloaded modules are read ahead; 0 = no prefetch. */
    public int prefetch() {
        return prefetch;
    }

    /** The main device that offloaded modules execute on, or null for accelerate's choice (the first GPU). */
    public Device executionDevice() {
        return executionDevice;
    }

    /**
     * Memory a planned map leaves room for beside the weights (KV cache at a context length, workspace);
     * {@link MemoryReservation#NONE} by default. Used only when a strategy plans the map.
     */
    public MemoryReservation reservation() {
        return reservation;
    }

    public DeviceInventory inventory() {
        return inventory;
    }

    /** The progress listener, or null. */
    public Progress progress() {
        return progress;
    }

    /** Precisions set for single devices ({@link Builder#precision(Device, Precision)}). */
    public Map<Device, Precision> precisions() {
        return precisions;
    }

    /** The precision of every GPU without one of its own, or null. */
    public Precision gpuPrecision() {
        return gpuPrecision;
    }

    /** The precision of the CPU when none is set for it with {@link Builder#precision}, or null. */
    public Precision cpuPrecision() {
        return cpuPrecision;
    }

    /** Whether any precision is set. */
    public boolean hasPrecisions() {
        return !precisions.isEmpty() || gpuPrecision != null || cpuPrecision != null;
    }

    /**
     * The precision of modules that execute on {@code device}: the device's own, else {@link #gpuPrecision()} for a
     * GPU or {@link #cpuPrecision()} for the CPU, else null (weights in the load dtype, nothing quantized).
     */
    public Precision precisionOf(Device device) {
        return PlanOptions.resolvePrecision(precisions, gpuPrecision, cpuPrecision, device);
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

    /** Builds {@link DispatchOptions}. */
    public static final class Builder {
        private DeviceMap deviceMap;
        private Strategy strategy;
        private MaxMemory maxMemory;
        private final List<String> noSplit = new ArrayList<>();
        private Path offloadFolder;
        private boolean offloadStateDict;
        private DType dtype;
        private int prefetch = 1;
        private Device executionDevice;
        private DeviceInventory inventory = DeviceInventory.system();
        private Progress progress;
        private final Map<Device, Precision> precisions = new LinkedHashMap<>();
        private Precision gpuPrecision;
        private Precision cpuPrecision;
        private MemoryReservation reservation = MemoryReservation.NONE;

        private Builder() {
        }

        /**
         * The precision of the block linears (QuantizedLinear layers) that execute on {@code device}: int8/int4
         * quantizes them while loading, a float precision is the model's float dtype. Modules placed on {@code cpu}
         * or {@code disk} execute on the main device and take its precision (their weights are that device's,
         * parked elsewhere). null removes the device's entry.
         *
         * @throws IllegalArgumentException for {@code disk} or {@code meta} (nothing executes there)
         */
        public Builder precision(Device device, Precision precision) {
            if (device == null || device.isDisk() || device.isMeta()) {
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

        /** {@link #precision(Device, Precision)} for every GPU without a precision of its own (seed: fp16/int8/int4). */
        public Builder gpuPrecision(Precision precision) {
            this.gpuPrecision = precision;
            return this;
        }

        /** {@link #precision(Device, Precision)} for the CPU (seed: fp32/bf16; int8/int4 work too). */
        public Builder cpuPrecision(Precision precision) {
            this.cpuPrecision = precision;
            return this;
        }

        /**
         * Memory the planned map must leave room for beside the weights (see
         * {@link PlanOptions.Builder#reservation}); null = none. Ignored when a device map is given.
         *
         * <pre>{@code
         * DispatchOptions.builder().maxMemory("0=10GiB,cpu=64GiB").reservation(kvAt8192).build();
         * }</pre>
         */
        public Builder reservation(MemoryReservation value) {
            reservation = value == null ? MemoryReservation.NONE : value;
            return this;
        }

        /** Places the model with this map (checked against the model when loading); clears any strategy. */
        public Builder deviceMap(DeviceMap map) {
            this.deviceMap = map;
            this.strategy = null;
            return this;
        }

        /**
         * {@link #deviceMap(DeviceMap)} from {@code hf_device_map} JSON.
         *
         * @throws IllegalArgumentException naming the entry whose device is not understood
         */
        public Builder deviceMap(String json) {
            return deviceMap(DeviceMap.fromJson(json));
        }

        /** Plans the map with this strategy (the planner's rules); clears any device map. */
        public Builder strategy(Strategy s) {
            this.strategy = s;
            this.deviceMap = null;
            return this;
        }

        /**
         * {@link #strategy(Strategy)} from accelerate's spelling.
         *
         * @throws DeviceMapException for anything but auto, balanced, balanced_low_0, sequential
         */
        public Builder strategy(String s) {
            return strategy(Strategy.parse(s));
        }

        public Builder maxMemory(MaxMemory budget) {
            this.maxMemory = budget;
            return this;
        }

        /**
         * A budget such as {@code "0=10GiB,cpu=30GiB"}.
         *
         * @throws IllegalArgumentException naming the entry or size that is not understood
         */
        public Builder maxMemory(String budget) {
            return maxMemory(MaxMemory.parse(budget, inventory));
        }

        /** Class names whose instances the planner keeps on one device. */
        public Builder noSplitModuleClasses(String... classNames) {
            noSplit.addAll(List.of(classNames));
            return this;
        }

        public Builder offloadFolder(Path folder) {
            this.offloadFolder = folder;
            return this;
        }

        /**
         * Keeps weights placed on {@code cpu} as copy-on-write views of the mapped checkpoint (when no dtype
         * conversion is needed) instead of copying them into memory: pages come from the page cache and can be
         * dropped by the kernel. Off by default.
         */
        public Builder offloadStateDict(boolean value) {
            this.offloadStateDict = value;
            return this;
        }

        /**
         * Converts floating-point weights to {@code dtype} while loading; integer and bool tensors are never
         * converted.
         *
         * @throws IllegalArgumentException when {@code dtype} is not a floating dtype
         */
        public Builder dtype(DType value) {
            if (value != null && !value.isFloatingPoint()) {
                throw new IllegalArgumentException("The load dtype must be a floating dtype, got " + value.torchName()
                        + " (integer tensors are never converted)");
            }
            this.dtype = value;
            return this;
        }

        /** {@link #dtype(DType)} from a name ({@code "float16"}, {@code "bf16"}, ...). */
        public Builder dtype(String name) {
            return dtype(DType.parse(name));
        }

        /**
         * Read-ahead depth for offloaded modules (0 disables prefetching).
         *
         * @throws IllegalArgumentException when negative
         */
        public Builder prefetch(int depth) {
            if (depth < 0) {
                throw new IllegalArgumentException("prefetch depth must be 0 (off) or more, got " + depth);
            }
            this.prefetch = depth;
            return this;
        }

        /**
         * The main device: where modules placed on {@code cpu} or {@code disk} execute. By default the first GPU of
         * the map, or the CPU when the map has none.
         *
         * @throws IllegalArgumentException for {@code disk} or {@code meta}
         */
        public Builder executionDevice(Device device) {
            if (device != null && (device.isDisk() || device.isMeta())) {
                throw new IllegalArgumentException("A model cannot execute on " + device);
            }
            this.executionDevice = device;
            return this;
        }

        /** Where unset budgets and the list of available GPUs come from (tests simulate machines). */
        public Builder inventory(DeviceInventory value) {
            this.inventory = value;
            return this;
        }

        public Builder progress(Progress listener) {
            this.progress = listener;
            return this;
        }

        /**
         * @throws IllegalArgumentException when the precisions and the dtype name more than one floating-point type
         */
        public DispatchOptions build() {
            return new DispatchOptions(this);
        }
    }
}
