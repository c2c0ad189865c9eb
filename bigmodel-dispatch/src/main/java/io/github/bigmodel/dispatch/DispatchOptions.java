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
import io.github.bigmodel.dispatch.plan.DeviceInventory;
import io.github.bigmodel.dispatch.plan.DeviceMap;
import io.github.bigmodel.dispatch.plan.DeviceMapException;
import io.github.bigmodel.dispatch.plan.MaxMemory;
import io.github.bigmodel.dispatch.plan.MemoryReservation;
import io.github.bigmodel.dispatch.plan.PlanOptions;
import io.github.bigmodel.dispatch.plan.Strategy;

/**
 * How {@link BigModel} loads and places a model: a device map or a strategy with a budget, the offload folder,
 * prefetching, and the {@link PlanOptions} that planning and placing share (dtype, precisions, main device, no-split
 * classes, reservation). The builder's setters for those write into the one {@link #plan()} these options hold.
 *
 * <pre>{@code
 * DispatchOptions o = DispatchOptions.builder()
 *         .strategy(Strategy.AUTO)
 *         .maxMemory("0=10GiB,cpu=30GiB")                  // blocks stay whole: the model names its no-split classes
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
    private final Path offloadFolder;
    private final boolean offloadStateDict;
    private final int prefetch;
    private final Progress progress;
    private final PlanOptions plan;

    private DispatchOptions(Builder b) {
        deviceMap = b.deviceMap;
        strategy = b.deviceMap == null && b.strategy == null ? Strategy.AUTO : b.strategy;
        plan = b.plan.build();
        maxMemory = b.maxMemory;
        offloadFolder = b.offloadFolder;
        offloadStateDict = b.offloadStateDict;
        prefetch = b.prefetch;
        progress = b.progress;
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
        b.offloadFolder = offloadFolder;
        b.offloadStateDict = offloadStateDict;
        b.prefetch = prefetch;
        b.progress = progress;
        b.plan = plan.toBuilder();
        b.inventory = plan.inventory();
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

    /**
     * What planning and placing share: no-split classes, the load dtype, per-device precisions, the main device,
     * the reservation and the device inventory. A given {@link #deviceMap()} is still sized and checked with them.
     */
    public PlanOptions plan() {
        return plan;
    }

    /** Where weights that must be rewritten for {@code disk} go, or null. */
    public Path offloadFolder() {
        return offloadFolder;
    }

    /**
     * Whether CPU-resident weights that need no conversion stay mapped from the checkpoint file instead of being
     * copied into memory (true unless {@link Builder#offloadStateDict(boolean)} turned it off; a device map with
     * {@code disk} entries copies them either way, see there).
     */
    public boolean offloadStateDict() {
        return offloadStateDict;
    }

    /** How many offloaded modules are read ahead; 0 = no prefetch. */
    public int prefetch() {
        return prefetch;
    }

    /** The progress listener, or null. */
    public Progress progress() {
        return progress;
    }

    /** Builds {@link DispatchOptions}. */
    public static final class Builder {
        private DeviceMap deviceMap;
        private Strategy strategy;
        private MaxMemory maxMemory;
        private Path offloadFolder;
        private boolean offloadStateDict = true;
        private int prefetch = 1;
        private Progress progress;
        private PlanOptions.Builder plan = PlanOptions.builder();
        /** The plan's inventory, kept here too: a budget given as text is parsed against it when set. */
        private DeviceInventory inventory = DeviceInventory.system();

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
            plan.precision(device, precision);
            return this;
        }

        /** {@link #precision(Device, Precision)} for every GPU without a precision of its own (seed: fp16/int8/int4). */
        public Builder gpuPrecision(Precision precision) {
            plan.gpuPrecision(precision);
            return this;
        }

        /** {@link #precision(Device, Precision)} for the CPU (seed: fp32/bf16; int8/int4 work too). */
        public Builder cpuPrecision(Precision precision) {
            plan.cpuPrecision(precision);
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
            plan.reservation(value);
            return this;
        }

        /**
         * Every planning option at once (no-split classes, dtype, precisions, main device, reservation,
         * inventory), replacing those set so far.
         *
         * <pre>{@code
         * DispatchOptions.builder().plan(PlanOptions.builder().gpuPrecision(Precision.INT4).build())
         *         .offloadFolder(Path.of("offload")).build();
         * }</pre>
         */
        public Builder plan(PlanOptions value) {
            plan = value == null ? PlanOptions.builder() : value.toBuilder();
            inventory = value == null ? DeviceInventory.system() : value.inventory();
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

        /**
         * Class names whose instances the planner keeps on one device, replacing the model's own
         * ({@link io.github.bigmodel.core.Module#noSplitModuleClasses()}, used when none are given).
         */
        public Builder noSplitModuleClasses(String... classNames) {
            plan.noSplitModuleClasses(classNames);
            return this;
        }

        public Builder offloadFolder(Path folder) {
            this.offloadFolder = folder;
            return this;
        }

        /**
         * Whether weights placed on {@code cpu} that need no conversion (stored dtype = load dtype, not quantized
         * while loading; int8/int4 codes of a converted folder included) stay copy-on-write views of the mapped
         * checkpoint: pages come from the page cache, cost no anonymous memory and can be dropped by the kernel,
         * and loading them takes no time. On by default; {@code false} copies them into memory (for a checkpoint
         * on a slow or removable disk that must not be read during inference). When the device map also puts
         * weights on {@code disk}, CPU weights are copied either way: the blocks streamed from disk pass more bytes
         * through the page cache each token than it can hold and would push the CPU blocks' pages out with them
         * (measured: a 4 GiB budget of a 6B model re-read 1.4-2.4 GiB of its CPU blocks per token); the copies are
         * the budget the planner gave the CPU. A tensor whose bytes cannot be
         * viewed (unaligned for its dtype in a safetensors file, compressed in a {@code .bin} zip) is copied
         * either way. The mapping lives as long as any view of it: closing the model releases the views and
         * unmaps the file.
         *
         * <pre>{@code
         * DispatchOptions copies = DispatchOptions.builder().offloadStateDict(false).build();
         * }</pre>
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
            plan.dtype(value);
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
            plan.executionDevice(device);
            return this;
        }

        /** Where unset budgets and the list of available GPUs come from (tests simulate machines). */
        public Builder inventory(DeviceInventory value) {
            plan.inventory(value);
            inventory = value;
            return this;
        }

        public Builder progress(Progress listener) {
            this.progress = listener;
            return this;
        }

        /**
         * @throws IllegalArgumentException when the precisions and the dtype name more than one floating-point type,
         *     or the budget text is not understood
         */
        public DispatchOptions build() {
            return new DispatchOptions(this);
        }
    }
}
