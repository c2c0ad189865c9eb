package io.github.bigmodel.core.quant;

import io.github.bigmodel.core.Module;
import io.github.bigmodel.core.Parameter;
import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.Map;
import java.util.Set;

/**
 * What a memory planner needs to place a model whose devices hold different precisions: the bytes a module
 * takes once loaded at a {@link Precision}. Every {@link QuantizedLinear} weight counts {@code rowBytes(in)} per
 * output row (1 byte per weight for int8, half a byte for int4) plus one half-precision scale per row; every other
 * floating-point tensor counts at the precision's {@link Precision#companionDtype()}; integer tensors keep their
 * own size; a tied tensor counts once.
 *
 * <pre>{@code
 * long block = PrecisionSizes.bytes(model.module("transformer.encoder.layers.0"), Precision.INT4);
 * long whole = PrecisionSizes.bytes(model, Precision.INT8);   // about 6.3 GiB for chatglm3-6b
 * }</pre>
 */
public final class PrecisionSizes {

    /** Bytes of one stored scale: THUDM keeps them in half precision. */
    public static final long SCALE_BYTES = 2;

    private PrecisionSizes() {
    }

    /** Bytes of {@code module} and everything below it, loaded at {@code precision}. */
    public static long bytes(Module module, Precision precision) {
        if (precision == null) {
            throw new IllegalArgumentException("precision must not be null");
        }
        Set<Parameter> seen = Collections.newSetFromMap(new IdentityHashMap<>());
        long total = 0;
        for (Module m : module.namedModules().values()) {
            QuantizedLinear quantizable = m instanceof QuantizedLinear ? (QuantizedLinear) m : null;
            for (Map.Entry<String, Parameter> e : m.parameters().entrySet()) {
                total += tensorBytes(e.getKey(), e.getValue(), quantizable, precision, seen);
            }
            for (Map.Entry<String, Parameter> e : m.buffers().entrySet()) {
                total += tensorBytes(e.getKey(), e.getValue(), null, precision, seen);
            }
        }
        return total;
    }

    /** Bytes of one linear weight {@code [out, in]} at {@code precision}, scales included for int8/int4. */
    public static long linearWeightBytes(long outFeatures, long inFeatures, Precision precision) {
        if (precision.isQuantized()) {
            return Math.multiplyExact(outFeatures, precision.rowBytes(inFeatures) + SCALE_BYTES);
        }
        return precision.dtype().bytesFor(Math.multiplyExact(outFeatures, inFeatures));
    }

    private static long tensorBytes(String leaf, Parameter p, QuantizedLinear owner, Precision precision,
            Set<Parameter> seen) {
        if (!seen.add(p)) {
            return 0;
        }
        if (owner != null && leaf.equals(QuantizedLinear.SCALE_NAME)) {
            return 0; // counted with the weight
        }
        if (owner != null && p == owner.weight()) {
            return linearWeightBytes(owner.outFeatures(), owner.inFeatures(), precision);
        }
        if (!p.dtype().isFloatingPoint()) {
            return p.byteSize();
        }
        return precision.companionDtype().bytesFor(p.numel());
    }
}
