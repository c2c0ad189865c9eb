package io.github.bigmodel.core;

import java.util.Arrays;
import org.bytedeco.pytorch.Tensor;

/**
 * One weight or buffer slot of a {@link Module}: a shape, a dtype, the device it lives on and, once materialized,
 * the libtorch tensor that holds its values.
 *
 * <p>Every parameter is born on {@link Device#META}: it has a shape and a dtype and costs no memory, whatever the
 * model's size. Loading puts a tensor in it ({@link #set(Tensor)}); offloading to disk keeps the slot empty with
 * device {@code disk} ({@link #markOffloaded()}) so a hook can bring the values in for a forward pass.
 * A parameter has no name of its own: its names come from where it is registered, and a tied parameter is one
 * {@code Parameter} registered under two names.
 *
 * <pre>{@code
 * Parameter w = Parameter.empty(DType.FLOAT16, 4096, 4096);  // on meta, no bytes
 * w.set(loadedTensor);                                        // now on the tensor's device
 * }</pre>
 *
 * <p>Not thread-safe for writes; reading a materialized tensor from several threads is safe.
 */
public final class Parameter implements AutoCloseable {

    private final long[] shape;
    private DType dtype;
    private Device device = Device.META;
    private Tensor data;

    private Parameter(DType dtype, long[] shape) {
        this.dtype = dtype;
        this.shape = shape.clone();
        for (long d : shape) {
            if (d < 0) {
                throw new IllegalArgumentException("Negative dimension in shape " + Arrays.toString(shape));
            }
        }
    }

    /** A parameter of this dtype and shape on the meta device: no memory is allocated. */
    public static Parameter empty(DType dtype, long... shape) {
        if (dtype == null) {
            throw new IllegalArgumentException("dtype must not be null");
        }
        return new Parameter(dtype, shape);
    }

    /** A copy of the logical shape. */
    public long[] shape() {
        return shape.clone();
    }

    public int rank() {
        return shape.length;
    }

    public long dim(int i) {
        return shape[i];
    }

    /** Number of elements (1 for a scalar). */
    public long numel() {
        long n = 1;
        for (long d : shape) {
            n = Math.multiplyExact(n, d);
        }
        return n;
    }

    /** The dtype of the values held (or to be held, while on meta). */
    public DType dtype() {
        return dtype;
    }

    /** Bytes the values take in the current dtype. */
    public long byteSize() {
        return dtype.bytesFor(numel());
    }

    public Device device() {
        return device;
    }

    /** Whether values are held in a tensor (on cpu or a GPU). */
    public boolean isMaterialized() {
        return data != null;
    }

    /**
     * The tensor holding the values.
     *
     * @throws IllegalStateException when the parameter is on meta or offloaded to disk
     */
    public Tensor data() {
        if (data == null) {
            throw new IllegalStateException("Parameter " + describe() + " is on " + device
                    + " and holds no values: load the checkpoint (or let an offload hook bring it in) first");
        }
        return data;
    }

    /**
     * Puts values in this slot; the device and dtype become the tensor's. The shape must match, except for a
     * packed quantized tensor, which callers set through {@link #setPacked(Tensor, DType)}.
     *
     * <p>The parameter takes ownership and frees the tensor (with {@code close()}) when it is replaced or released.
     * A tensor made inside a {@code PointerScope} must be retained first ({@code retainReference()}), or the scope
     * would free it when it closes.
     *
     * @throws IllegalArgumentException when the tensor's shape differs from the parameter's
     */
    public void set(Tensor tensor) {
        long[] actual = tensor.sizes().vec().get();
        if (!Arrays.equals(actual, shape)) {
            throw new IllegalArgumentException("Shape mismatch: parameter " + describe() + " cannot take a tensor of shape "
                    + Arrays.toString(actual));
        }
        replace(tensor, DType.of(tensor.scalar_type()));
    }

    /**
     * Puts values stored in another layout than the logical shape (for example int4 weights packed two per byte);
     * {@code storedAs} is the logical dtype reported by {@link #dtype()}.
     */
    public void setPacked(Tensor tensor, DType storedAs) {
        replace(tensor, storedAs);
    }

    private void replace(Tensor tensor, DType newDtype) {
        Tensor old = data;
        data = tensor;
        dtype = newDtype;
        device = Tensors.deviceOf(tensor);
        if (old != null && old != tensor) {
            old.close();
        }
    }

    /** Releases the values and marks the slot as living in an offload folder on disk. */
    public void markOffloaded() {
        release();
        device = Device.DISK;
    }

    /** Releases the values and puts the slot back on meta. */
    public void toMeta() {
        release();
        device = Device.META;
    }

    /** Changes the dtype the slot will hold once loaded; only allowed while it holds no values. */
    public void setPlannedDtype(DType newDtype) {
        if (data != null) {
            throw new IllegalStateException("Parameter " + describe() + " is already materialized");
        }
        dtype = newDtype;
    }

    private void release() {
        if (data != null) {
            data.close();
            data = null;
        }
    }

    @Override
    public void close() {
        toMeta();
    }

    private String describe() {
        return dtype.torchName() + Arrays.toString(shape);
    }

    @Override
    public String toString() {
        return "Parameter(" + describe() + " on " + device + ")";
    }
}
