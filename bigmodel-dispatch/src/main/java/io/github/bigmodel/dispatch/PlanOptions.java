package io.github.bigmodel.dispatch;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.quant.Precision;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Everything besides the model and the budget that shapes a device map: no-split classes, the load dtype and
 * per-tensor dtypes, buffer offloading, the clean-up and fallback switches, the front end whose budget rules apply,
 * where unset budgets come from, and the memory to reserve beside the weights ({@link MemoryReservation}).
 *
 * <pre>{@code
 * PlanOptions o = PlanOptions.builder()
 *         .noSplit("GLMBlock")
 *         .dtype(DType.FLOAT16)
 *         .build();
 * // transformers' from_pretrained(load_in_8bit=True): int8 weights, the head kept in fp16, budgets x 0.90
 * PlanOptions bnb = PlanOptions.builder().noSplit("GLMBlock").dtype("int8")
 *         .specialDtype("transformer.output_layer.weight", DType.FLOAT16)
 *         .frontEnd(PlanOptions.FrontEnd.FROM_PRETRAINED).budgetFactor(0.90).build();
 * }</pre>
 */
public final class PlanOptions {

    /** Which library's entry point the strategy is interpreted like (README section 5 of the fixtures). */
    public enum FrontEnd {
        /** accelerate's {@code load_checkpoint_and_dispatch}: sequential uses the budget as given. */
        LOAD_CHECKPOINT_AND_DISPATCH,
        /**
         * transformers' {@code from_pretrained}: sequential normalises the budget first, the
         * {@link Builder#budgetFactor quantizer factor} is applied after balancing, and no budget may exceed what
         * the user gave.
         */
        FROM_PRETRAINED
    }

    final List<String> noSplit;
    final Double dtypeBytes;
    final String dtypeName;
    final Map<String, Double> specialBytes;
    final boolean offloadBuffers;
    final boolean cleanResult;
    final boolean fallbackAllocation;
    final FrontEnd frontEnd;
    final double budgetFactor;
    final DeviceInventory inventory;
    final Map<Device, Precision> precisions;
    final Precision gpuPrecision;
    final Precision cpuPrecision;
    final Device executionDevice;
    final MemoryReservation reservation;

    private PlanOptions(Builder b) {
        noSplit = List.copyOf(b.noSplit);
        dtypeBytes = b.dtypeBytes;
        dtypeName = b.dtypeName;
        specialBytes = Collections.unmodifiableMap(new LinkedHashMap<>(b.specialBytes));
        offloadBuffers = b.offloadBuffers;
        cleanResult = b.cleanResult;
        fallbackAllocation = b.fallbackAllocation;
        frontEnd = b.frontEnd;
        budgetFactor = b.budgetFactor;
        inventory = b.inventory;
        precisions = Collections.unmodifiableMap(new LinkedHashMap<>(b.precisions));
        gpuPrecision = b.gpuPrecision;
        cpuPrecision = b.cpuPrecision;
        executionDevice = b.executionDevice;
        reservation = b.reservation;
    }

    /** Defaults: nothing no-split, tensors' own dtypes, buffers kept on GPU, clean result, no fallback. */
    public static PlanOptions defaults() {
        return builder().build();
    }

    public static Builder builder() {
        return new Builder();
    }

    public List<String> noSplitModuleClasses() {
        return noSplit;
    }

    /** The load dtype's bytes per element, or null when tensors keep their own dtype. */
    public Double dtypeBytes() {
        return dtypeBytes;
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

    public FrontEnd frontEnd() {
        return frontEnd;
    }

    public double budgetFactor() {
        return budgetFactor;
    }

    public DeviceInventory inventory() {
        return inventory;
    }

    /**
     * The precision of modules executing on {@code device} (its own, else the GPU or CPU default), or null when
     * none is set: then sizes are accelerate's.
     */
    public Precision precisionOf(Device device) {
        return resolvePrecision(precisions, gpuPrecision, cpuPrecision, device);
    }

    /**
     * The one rule for a device's precision, shared with {@link DispatchOptions} so that planning and loading
     * cannot disagree: the device's own, else the GPU or CPU default, else null.
     */
    static Precision resolvePrecision(Map<Device, Precision> precisions, Precision gpu, Precision cpu, Device device) {
        Precision p = precisions.get(device);
        if (p != null) {
            return p;
        }
        if (device.isCuda()) {
            return gpu;
        }
        return device.isCpu() ? cpu : null;
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

    /** Builds {@link PlanOptions}. */
    public static final class Builder {
        private final List<String> noSplit = new ArrayList<>();
        private Double dtypeBytes;
        private String dtypeName;
        private final Map<String, Double> specialBytes = new LinkedHashMap<>();
        private boolean offloadBuffers;
        private boolean cleanResult = true;
        private boolean fallbackAllocation;
        private FrontEnd frontEnd = FrontEnd.LOAD_CHECKPOINT_AND_DISPATCH;
        private double budgetFactor = 1.0;
        private DeviceInventory inventory = DeviceInventory.system();
        private final Map<Device, Precision> precisions = new LinkedHashMap<>();
        private Precision gpuPrecision;
        private Precision cpuPrecision;
        private Device executionDevice;
        private MemoryReservation reservation = MemoryReservation.NONE;

        private Builder() {
        }

        /** Class names ({@link io.github.bigmodel.core.Module#className()}) whose instances stay on one device. */
        public Builder noSplit(String... classNames) {
            return noSplit(List.of(classNames));
        }

        public Builder noSplit(List<String> classNames) {
            if (classNames != null) {
                noSplit.addAll(classNames);
            }
            return this;
        }

        /** The dtype weights are converted to on load (null = keep each tensor's dtype). */
        public Builder dtype(DType dtype) {
            dtypeBytes = dtype == null ? null : ModuleSizes.bytesPerElement(dtype);
            dtypeName = dtype == null ? null : dtype.torchName();
            return this;
        }

        /** The load dtype by name, including accelerate's custom {@code int4}, {@code int2}, {@code fp8}. */
        public Builder dtype(String name) {
            dtypeBytes = name == null ? null : ModuleSizes.bytesPerElement(name);
            dtypeName = name;
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

        public Builder frontEnd(FrontEnd value) {
            frontEnd = value;
            return this;
        }

        /** Multiplies every budget after balancing; bitsandbytes loading in transformers uses 0.90. */
        public Builder budgetFactor(double factor) {
            if (!(factor > 0) || Double.isInfinite(factor)) {
                throw new IllegalArgumentException("budget factor must be positive and finite: " + factor);
            }
            budgetFactor = factor;
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
            if (device == null || device.isDisk() || device.isMeta()) {
                throw new IllegalArgumentException("A precision belongs to cpu or cuda:N, got " + device);
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

        /** The main device (see {@link #precision}); null = the first GPU of the budget, else the CPU. */
        public Builder executionDevice(Device device) {
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

        public PlanOptions build() {
            return new PlanOptions(this);
        }
    }
}
