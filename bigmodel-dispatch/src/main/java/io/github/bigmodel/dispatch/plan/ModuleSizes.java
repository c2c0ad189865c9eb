package io.github.bigmodel.dispatch.plan;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Module;
import io.github.bigmodel.core.Parameter;
import io.github.bigmodel.core.quant.Precision;
import io.github.bigmodel.core.quant.QuantizedLinear;
import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;

/**
 * The size in bytes of every module and tensor of a model once loaded in a target dtype, accelerate's
 * {@code compute_module_sizes}: a tensor counts {@code numel * bytes}, where the bytes are the special dtype's when
 * the tensor's full name has one, else the tensor's own when no dtype is asked or the tensor is an integer/bool
 * tensor (never converted), else the smaller of the target's and the tensor's. A module's size sums everything
 * below it; a tied tensor counts once, under its first name, so an alias has size 0.
 *
 * <p>Sizes are doubles: int4 (0.5 byte), int2 (0.25) and bool (0.125, accelerate's figure) give fractions.
 *
 * <pre>{@code
 * ModuleSizes sizes = ModuleSizes.compute(model, DType.FLOAT16, Map.of());
 * sizes.total();                      // whole model, e.g. 1.3415859968E10
 * sizes.size("transformer.layers.0"); // one block
 * }</pre>
 */
public final class ModuleSizes {

    private final Map<String, Double> sizes;

    private ModuleSizes(Map<String, Double> sizes) {
        this.sizes = sizes;
    }

    /**
     * Sizes under {@code dtype} (null = each tensor's own dtype) and per-tensor {@code specialDtypes} (may be
     * null or empty).
     */
    public static ModuleSizes compute(Module model, DType dtype, Map<String, DType> specialDtypes) {
        Map<String, Double> special = new LinkedHashMap<>();
        if (specialDtypes != null) {
            specialDtypes.forEach((k, v) -> special.put(k, bytesPerElement(v)));
        }
        return compute(model, dtype == null ? null : bytesPerElement(dtype), special, false);
    }

    /**
     * Sizes as {@link #compute(Module, DType, Map)}, with the weight of every {@link QuantizedLinear} held at
     * {@code precision}: for int8/int4 {@code out * rowBytes(in)} (1 or 0.5 byte per weight) plus one scale per
     * row in the weights' float type ({@code dtype}, else the weight's own), its {@code weight_scale} counted with
     * it; for a float precision {@code out * in} elements of that precision's dtype (what loading holds); for null
     * exactly {@link #compute(Module, DType, Map)} (layers planned at a stored precision count as planned).
     *
     * <pre>{@code
     * ModuleSizes int4 = ModuleSizes.compute(model, DType.FLOAT16, Map.of(), Precision.INT4);
     * }</pre>
     */
    public static ModuleSizes compute(Module model, DType dtype, Map<String, DType> specialDtypes,
            Precision precision) {
        Map<String, Double> special = new LinkedHashMap<>();
        if (specialDtypes != null) {
            specialDtypes.forEach((k, v) -> special.put(k, bytesPerElement(v)));
        }
        return compute(model, dtype == null ? null : bytesPerElement(dtype), special, false, precision);
    }

    /** Sizes with the target and special dtypes already given as bytes per element (null = no conversion). */
    static ModuleSizes compute(Module model, Double dtypeBytes, Map<String, Double> specialBytes, boolean buffersOnly) {
        return compute(model, dtypeBytes, specialBytes, buffersOnly, null);
    }

    static ModuleSizes compute(Module model, Double dtypeBytes, Map<String, Double> specialBytes, boolean buffersOnly,
            Precision precision) {
        Map<Parameter, Double> quantized = new IdentityHashMap<>();
        if (precision != null && !precision.isQuantized()) {
            // A float precision holds every quantizable weight in its dtype, also a layer a pre-quantized
            // checkpoint had planned at its stored precision (loading dequantizes it).
            for (Module m : model.namedModules().values()) {
                if (m instanceof QuantizedLinear) {
                    QuantizedLinear q = (QuantizedLinear) m;
                    quantized.put(q.weight(), (double) q.outFeatures() * q.inFeatures()
                            * bytesPerElement(precision.dtype()));
                    if (q.weightScale() != null) {
                        quantized.put(q.weightScale(), 0.0);
                    }
                }
            }
        }
        if (precision != null && precision.isQuantized()) {
            for (Module m : model.namedModules().values()) {
                if (m instanceof QuantizedLinear) {
                    QuantizedLinear q = (QuantizedLinear) m;
                    Parameter w = q.weight();
                    // As loading holds them (StoredPrecisions.scaleDtype): the load dtype, else the planned
                    // scales' or the weight's float dtype, else THUDM's float16.
                    double scaleBytes = dtypeBytes != null ? dtypeBytes
                            : q.weightScale() != null ? bytesPerElement(q.weightScale().dtype())
                            : w.dtype().isFloatingPoint() ? bytesPerElement(w.dtype()) : 2.0;
                    quantized.put(w, (double) q.outFeatures() * precision.rowBytes(q.inFeatures())
                            + q.outFeatures() * scaleBytes);
                    if (q.weightScale() != null) {
                        quantized.put(q.weightScale(), 0.0);
                    }
                }
            }
        }
        Map<String, Double> out = new LinkedHashMap<>();
        if (!buffersOnly) {
            for (Map.Entry<String, Parameter> p : model.namedParameters().entrySet()) {
                Double q = quantized.get(p.getValue());
                boolean special = specialBytes != null && specialBytes.containsKey(p.getKey());
                add(out, p.getKey(), q != null && !special ? q
                        : tensorSize(p.getKey(), p.getValue(), dtypeBytes, specialBytes));
            }
        }
        for (Map.Entry<String, Parameter> b : model.namedBuffers().entrySet()) {
            add(out, b.getKey(), tensorSize(b.getKey(), b.getValue(), dtypeBytes, specialBytes));
        }
        if (out.isEmpty()) {
            out.put("", 0.0);
        }
        return new ModuleSizes(out);
    }

    private static void add(Map<String, Double> out, String name, double size) {
        out.merge("", size, Double::sum);
        int from = 0;
        while (true) {
            int dot = name.indexOf('.', from);
            String prefix = dot < 0 ? name : name.substring(0, dot);
            out.merge(prefix, size, Double::sum);
            if (dot < 0) {
                return;
            }
            from = dot + 1;
        }
    }

    private static double tensorSize(String name, Parameter t, Double dtypeBytes, Map<String, Double> special) {
        double numel = t.numel();
        Double s = special == null ? null : special.get(name);
        if (s != null) {
            return numel * s;
        }
        double own = bytesPerElement(t.dtype());
        if (dtypeBytes == null || !t.dtype().isFloatingPoint()) {
            return numel * own; // integer and bool tensors are never converted on load
        }
        return numel * Math.min(dtypeBytes, own);
    }

    /** accelerate's bytes per element: bits / 8, except bool 0.125 and int4 0.5. */
    public static double bytesPerElement(DType dtype) {
        if (dtype == DType.BOOL) {
            return 0.125;
        }
        return dtype.bits() / 8.0;
    }

    /**
     * Bytes per element of a dtype name as accelerate accepts it: any {@link DType#parse} name, plus accelerate's
     * custom {@code int2} (0.25) and {@code fp8} (1).
     */
    public static double bytesPerElement(String dtypeName) {
        String s = dtypeName.trim().toLowerCase(Locale.ROOT).replace("torch.", "");
        if (s.equals("int2")) {
            return 0.25;
        }
        return bytesPerElement(DType.parse(dtypeName));
    }

    /** The size of a module or tensor; 0 for names that hold no tensor (parameter-less modules, tied aliases). */
    public double size(String name) {
        return sizes.getOrDefault(name, 0.0);
    }

    /** The whole model. */
    public double total() {
        return size("");
    }

    /** Whether a name holds any tensor of its own (accelerate's key set). */
    public boolean contains(String name) {
        return sizes.containsKey(name);
    }

    /**
     * Every name holding a tensor, with its size, in accelerate's order: prefixes as first met walking the
     * parameters, then the buffers.
     */
    public Map<String, Double> asMap() {
        return Collections.unmodifiableMap(sizes);
    }
}
