package io.github.bigmodel.core.quant;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.Tensors;
import io.github.bigmodel.core.kernel.NativeKernels;
import io.github.bigmodel.core.kernel.Scopes;
import java.util.Arrays;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.MemoryFormatOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * The one road from a stored tensor (what a checkpoint holds) to what a parameter holds. Loading, dispatch, offload
 * and {@code bigmodel convert} all call {@link #convert}; the rules live here and nowhere else:
 *
 * <ul>
 *   <li>an ordinary tensor takes the target float dtype when it is floating point; integer and bool tensors are
 *       never converted ({@link #dtypeFor});</li>
 *   <li>a linear weight planned int8/int4 is quantized with THUDM's recipe ({@link WeightQuantizer#quantize}) from
 *       a float tensor, taken as stored from codes of the same precision (a pre-quantized checkpoint), or
 *       dequantized and quantized again from codes of the other precision;</li>
 *   <li>a linear weight planned floating point is converted, or dequantized from stored codes;</li>
 *   <li>which precision a layer is held in: {@link #layerPrecision} (what its device asks, else what is stored).</li>
 * </ul>
 *
 * <pre>{@code
 * // a float tensor onto the CPU in bfloat16
 * try (WeightConversion.Held h = WeightConversion.convert(stored, null,
 *         WeightConversion.Target.tensor(DType.BFLOAT16, Device.CPU))) { ... h.tensor() ... }
 * // a block's linear weight at int4, from a float or a pre-quantized checkpoint (scale null for a float one)
 * WeightConversion.Held q = WeightConversion.convert(weight, storedScaleOrNull,
 *         WeightConversion.Target.linearWeight(Precision.INT4, DType.FLOAT16, out, in, Device.CPU));
 * linear.setQuantized(q.quantized());
 * }</pre>
 */
// PointerScope blocks are used for what they release on close.
@SuppressWarnings("try")
public final class WeightConversion {

    private WeightConversion() {
    }

    /** What one parameter slot is to hold once loaded. */
    public static final class Target {
        private final DType dtype;
        private final Precision precision;
        private final long outFeatures;
        private final long inFeatures;
        private final Device device;
        private final boolean shareStorage;

        private Target(DType dtype, Precision precision, long out, long in, Device device, boolean share) {
            if (device == null || !device.isTensorDevice() || device.isMeta()) {
                throw new IllegalArgumentException("A loaded tensor needs a real device, got " + device);
            }
            this.dtype = dtype;
            this.precision = precision;
            this.outFeatures = out;
            this.inFeatures = in;
            this.device = device;
            this.shareStorage = share;
        }

        /**
         * An ordinary tensor (not a quantizable linear weight) on {@code device}: floating-point values in
         * {@code dtype} (null: as stored), anything else as stored.
         */
        public static Target tensor(DType dtype, Device device) {
            if (dtype != null && !dtype.isFloatingPoint()) {
                throw new IllegalArgumentException("The target of a tensor is a float dtype, got " + dtype);
            }
            return new Target(dtype, null, 0, 0, device, false);
        }

        /**
         * The weight {@code [out, in]} of a quantizable linear layer held at {@code precision}; {@code floatDtype}
         * is the dtype of its scales (int8/int4) or of the weight itself (a float precision's own dtype wins).
         */
        public static Target linearWeight(Precision precision, DType floatDtype, long out, long in, Device device) {
            if (precision == null) {
                throw new IllegalArgumentException("A linear weight's target needs a precision");
            }
            DType f = precision.isQuantized() ? floatDtype : precision.dtype();
            if (f == null || !f.isFloatingPoint()) {
                throw new IllegalArgumentException("The scales of a quantized weight are floating point, got " + f);
            }
            return new Target(f, precision, out, in, device, false);
        }

        /**
         * This target, allowed to share the stored tensor's storage when nothing needs converting (a zero-copy view
         * of a mapped checkpoint stays one); otherwise the result never aliases the stored tensor.
         */
        public Target sharingStorage() {
            return new Target(dtype, precision, outFeatures, inFeatures, device, true);
        }

        public Device device() {
            return device;
        }

        /** The precision of a linear weight target, null for an ordinary tensor. */
        public Precision precision() {
            return precision;
        }
    }

    /** What a parameter is to hold: a tensor, or a quantized weight in THUDM's layout. The caller owns both. */
    public static final class Held implements AutoCloseable {
        private final Tensor tensor;
        private final QuantizedWeight quantized;
        private final boolean quantizedHere;

        private Held(Tensor tensor, QuantizedWeight quantized, boolean quantizedHere) {
            this.tensor = tensor;
            this.quantized = quantized;
            this.quantizedHere = quantizedHere;
        }

        /** The tensor, or null when {@link #quantized()} holds the values. */
        public Tensor tensor() {
            return tensor;
        }

        /** The quantized weight, or null for a plain tensor. */
        public QuantizedWeight quantized() {
            return quantized;
        }

        /** Whether codes were computed here (from floats or other codes) rather than taken as stored. */
        public boolean quantizedHere() {
            return quantizedHere;
        }

        @Override
        public void close() {
            if (tensor != null) {
                tensor.close();
            }
            if (quantized != null) {
                quantized.close();
            }
        }
    }

    /**
     * The dtype a stored tensor is held in: integers and bools never change; floats take {@code loadDtype}, else
     * the declared dtype when that is a float, else stay as stored.
     */
    public static DType dtypeFor(DType stored, DType loadDtype, DType declared) {
        if (!stored.isFloatingPoint()) {
            return stored;
        }
        if (loadDtype != null) {
            return loadDtype;
        }
        return declared != null && declared.isFloatingPoint() ? declared : stored;
    }

    /**
     * The precision a quantizable linear layer is held in: the precision its execution device asks for when one
     * is set, else the precision its weight is stored in (a pre-quantized checkpoint loads as stored), else the
     * model's float dtype. Planning and loading both decide with this rule.
     *
     * @param asked    the precision of the device the layer executes on, or null when none is set
     * @param stored   {@link #storedPrecision} of the layer's checkpoint weight, or null when unknown / floating
     * @param floatDty the model's floating-point dtype
     */
    public static Precision layerPrecision(Precision asked, Precision stored, DType floatDty) {
        if (asked != null) {
            return asked;
        }
        if (stored != null && stored.isQuantized()) {
            return stored;
        }
        return Precision.of(floatDty);
    }

    /**
     * The precision a linear weight {@code [out, in]} is stored in: null for floating point, {@link Precision#INT8}
     * for int8/uint8 {@code [out, in]} codes, {@link Precision#INT4} for {@code [out, in/2]} packed codes; integer
     * codes need their {@code weight_scale} beside them.
     *
     * @throws IllegalArgumentException naming the tensor when it is neither a float {@code [out, in]} weight nor
     *     codes with a scale
     */
    public static Precision storedPrecision(String name, DType dtype, long[] shape, boolean hasScale, long out,
            long in) {
        if (dtype.isFloatingPoint()) {
            if (!Arrays.equals(shape, new long[] {out, in})) {
                throw new IllegalArgumentException("Tensor '" + name + "' has shape " + Arrays.toString(shape)
                        + ", the model expects a linear weight " + Arrays.toString(new long[] {out, in}));
            }
            return null;
        }
        boolean int8Bytes = dtype == DType.INT8 || dtype == DType.UINT8;
        Precision p = null;
        if (int8Bytes && shape.length == 2 && shape[0] == out && shape[1] == in) {
            p = Precision.INT8;
        } else if (int8Bytes && shape.length == 2 && shape[0] == out && in % 2 == 0 && shape[1] == in / 2) {
            p = Precision.INT4;
        }
        if (p == null) {
            throw new IllegalArgumentException("Tensor '" + name + "' is " + dtype.torchName() + Arrays.toString(shape)
                    + ": a linear weight [" + out + ", " + in + "] is floating point, or int8 codes [" + out + ", "
                    + in + "] (int8) / [" + out + ", " + (in / 2) + "] (int4) with a weight_scale");
        }
        if (!hasScale) {
            throw new IllegalArgumentException("Integer weight '" + name + "' has no "
                    + QuantizedLinear.SCALE_NAME + " beside it");
        }
        return p;
    }

    /**
     * Turns a stored tensor into what a parameter holds (see the class comment). The stored tensors stay the
     * caller's; the result is new unless {@link Target#sharingStorage()} allowed a view. Results are handed to the
     * caller's innermost {@link PointerScope} when one is open.
     *
     * @param stored      the tensor as the checkpoint holds it (any device)
     * @param storedScale the {@code weight_scale} stored beside integer codes, else null
     * @throws IllegalArgumentException when the stored tensor does not fit the target
     */
    public static Held convert(Tensor stored, Tensor storedScale, Target target) {
        if (target.precision == null && storedScale != null) {
            throw new IllegalArgumentException("Only a quantizable linear weight has a weight_scale");
        }
        Precision storedAs = null;
        if (target.precision != null) {
            DType storedType = DType.of(stored.scalar_type());
            storedAs = storedPrecision("weight", storedType, Tensors.shape(stored), storedScale != null,
                    target.outFeatures, target.inFeatures);
            if (storedAs != null && !DType.of(storedScale.scalar_type()).isFloatingPoint()) {
                throw new IllegalArgumentException("weight_scale must be floating point, got "
                        + DType.of(storedScale.scalar_type()).torchName());
            }
        }
        Tensor dense = null;
        Tensor packed = null;
        Tensor scale = null;
        boolean here = false;
        try (PointerScope scope = new PointerScope()) {
            Precision want = target.precision;
            if (want == null) {
                DType own = DType.of(stored.scalar_type());
                dense = moved(stored, target.device, own.isFloatingPoint() && target.dtype != null ? target.dtype
                        : own, target.shareStorage);
            } else {
                long in = target.inFeatures;
                ScalarType floatType = target.dtype.scalarType();
                QuantizedWeight made = null;
                if (storedAs != null) {
                    Tensor signed = Tensors.hasType(stored, ScalarType.Char) ? stored : stored.view(ScalarType.Char);
                    QuantizedWeight asStored = new QuantizedWeight(signed, storedScale, storedAs, in);
                    if (storedAs == want) {
                        made = asStored;
                    } else {
                        // Codes of another precision: their values (codes * scale, in the scale's dtype) are the
                        // weight this layer starts from.
                        Tensor values = WeightQuantizer.dequantize(asStored, storedScale.scalar_type());
                        if (want.isQuantized()) {
                            made = WeightQuantizer.quantize(values, target.dtype, want);
                            here = true;
                        } else {
                            dense = moved(values, target.device, target.dtype, false);
                        }
                    }
                } else if (want.isQuantized()) {
                    // Quantize where the tensor is (a mapped checkpoint), then move only the small result; the
                    // conversion to the float type happens value by value inside, never as a copy of the weight.
                    made = WeightQuantizer.quantize(stored, target.dtype, want);
                    here = true;
                } else {
                    dense = moved(stored, target.device, target.dtype, target.shareStorage);
                }
                if (made != null) {
                    org.bytedeco.pytorch.Device device = Tensors.toTorch(target.device);
                    // Codes taken as stored are views of the checkpoint: copied unless sharing is allowed, and
                    // unless the view starts off the kernels' alignment (see KERNEL_ALIGNMENT).
                    boolean copyPacked = !here && (!target.shareStorage || !kernelAligned(made.packed()));
                    boolean copyScale = !here && (!target.shareStorage || !kernelAligned(made.scale()));
                    packed = made.packed().to(device, ScalarType.Char, false, copyPacked,
                            new MemoryFormatOptional()).contiguous();
                    scale = made.scale().to(device, floatType, false, copyScale, new MemoryFormatOptional())
                            .contiguous();
                    packed.retainReference();
                    scale.retainReference();
                }
            }
            if (dense != null) {
                dense.retainReference();
            }
        }
        if (dense != null) {
            return new Held(Scopes.handOut(dense), null, false);
        }
        return new Held(null, new QuantizedWeight(Scopes.handOut(packed), Scopes.handOut(scale), target.precision,
                target.inFeatures), here);
    }

    /**
     * The start alignment libtorch's own CPU allocations have (64 bytes) and its weight-only int8 kernel relies on:
     * it reads the codes with aligned vector loads, and a mapped view 8 bytes off a 16-byte boundary (a safetensors
     * file whose header length is not a multiple of 16) made it fault in native code, a JVM crash. Such views are
     * copied once at load instead.
     */
    static final long KERNEL_ALIGNMENT = 64;

    /** Whether {@code t}'s first element sits on {@link #KERNEL_ALIGNMENT} (always true for an empty tensor). */
    static boolean kernelAligned(Tensor t) {
        return t.numel() == 0 || t.data_ptr().address() % KERNEL_ALIGNMENT == 0;
    }

    /** {@code t} on {@code device} as {@code dtype}, contiguous: a new tensor unless {@code share} allows a view. */
    private static Tensor moved(Tensor t, Device device, DType dtype, boolean share) {
        boolean newTensor = !share || t.scalar_type().value != dtype.scalarType().value || !t.is_contiguous();
        if (newTensor && device.isCpu() && t.device().is_cpu() && t.nbytes() >= (4L << 20)) {
            // A copy out of a mapped checkpoint faulted on every page of both buffers; in a virtual machine the
            // faults cost more than the copy (1.75 GiB of bf16: 3.7-4.2 s). The destination in 2 MiB pages and the
            // source mapped in one call: 0.4-2.6 s, what is left being the kernel zeroing the new pages. The same
            // for a conversion (bf16 stored, fp16 wanted): libtorch's own allocation got 4 KiB pages, which the
            // decode then streams through 512x more TLB entries.
            Tensor r = Tensors.emptyWeight(dtype, Device.CPU, Tensors.shape(t));
            NativeKernels.populate(t.data_ptr().address(), t.nbytes());
            r.copy_(t);
            return r;
        }
        Tensor r = t.to(Tensors.toTorch(device), dtype.scalarType(), false, !share, new MemoryFormatOptional());
        return share ? r.contiguous() : r;
    }
}
