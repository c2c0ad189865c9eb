package io.github.bigmodel.dispatch;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Module;
import io.github.bigmodel.core.quant.Precision;
import io.github.bigmodel.core.quant.QuantizedLinear;
import io.github.bigmodel.core.quant.WeightConversion;
import io.github.bigmodel.safetensors.Checkpoint;
import io.github.bigmodel.safetensors.TensorInfo;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * What a pre-quantized checkpoint says about a model's quantizable layers: the precision each
 * {@link QuantizedLinear} weight is stored in (int8 {@code [out, in]} or packed int4 {@code [out, in/2]} codes
 * beside a {@code weight_scale}), read from the checkpoint's header only. Loading plans those layers at the stored
 * precision unless their device asks for another ({@link WeightConversion#layerPrecision}), and planning sizes
 * them the same way, so a folder written by {@code bigmodel convert --precision int8} loads as stored through
 * every entry point.
 *
 * <pre>{@code
 * try (Checkpoint ckpt = Checkpoint.open(Path.of("chatglm3-6b-int4"))) {
 *     Map<String, Precision> stored = StoredPrecisions.of(model, ckpt);  // {"transformer.encoder.layers.0.mlp.dense_h_to_4h": INT4, ...}
 *     StoredPrecisions.plan(model, stored, null);                        // on meta: those weights are int4 now
 * }
 * }</pre>
 */
public final class StoredPrecisions {

    private StoredPrecisions() {
    }

    /**
     * The stored precision of every quantizable layer whose checkpoint weight holds integer codes, by module path
     * (layers stored as floats, or absent, are left out).
     *
     * @throws IllegalArgumentException naming the tensor when integer codes do not fit the layer or have no
     *     {@code weight_scale}
     */
    public static Map<String, Precision> of(Module model, Checkpoint checkpoint) {
        Map<String, Precision> out = new LinkedHashMap<>();
        for (Map.Entry<String, Module> e : model.namedModules().entrySet()) {
            if (!(e.getValue() instanceof QuantizedLinear)) {
                continue;
            }
            QuantizedLinear linear = (QuantizedLinear) e.getValue();
            String prefix = e.getKey().isEmpty() ? "" : e.getKey() + ".";
            String weight = prefix + "weight";
            if (!checkpoint.contains(weight)) {
                continue;
            }
            TensorInfo info = checkpoint.info(weight);
            if (info.dtype().isFloatingPoint()) {
                continue;
            }
            Precision p = WeightConversion.storedPrecision(weight, info.dtype(), info.shape(),
                    checkpoint.contains(prefix + QuantizedLinear.SCALE_NAME), linear.outFeatures(),
                    linear.inFeatures());
            out.put(e.getKey(), p);
        }
        return out;
    }

    /**
     * Plans, on meta, every layer of {@code stored} at its stored precision, scales in {@code floatDtype} (null:
     * the layer's own float dtype), so that a device map planned next sizes them as they will be held.
     */
    public static void plan(Module model, Map<String, Precision> stored, DType floatDtype) {
        stored.forEach((path, precision) -> {
            QuantizedLinear linear = (QuantizedLinear) model.module(path);
            if (!linear.weight().isMaterialized()) {
                linear.planPrecision(precision, scaleDtype(linear, floatDtype));
            }
        });
    }

    /** The float dtype of a layer's scales: the load dtype, else the layer's float dtype, else float16 (THUDM's). */
    static DType scaleDtype(QuantizedLinear linear, DType floatDtype) {
        if (floatDtype != null) {
            return floatDtype;
        }
        if (linear.weightScale() != null) {
            return linear.weightScale().dtype();
        }
        DType declared = linear.weight().dtype();
        return declared.isFloatingPoint() ? declared : DType.FLOAT16;
    }
}
