package io.github.bigmodel.core;

import org.bytedeco.pytorch.MemoryFormatOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;

/**
 * Small bridges between bigmodel's types and libtorch's.
 *
 * <pre>{@code
 * Tensor t = Tensors.empty(DType.FLOAT32, Device.CPU, 2, 3);
 * Device d = Tensors.deviceOf(t);   // cpu
 * }</pre>
 */
public final class Tensors {

    static {
        NativeRuntime.init();
    }

    private Tensors() {
    }

    /** The libtorch device for a bigmodel device. {@code disk} has none. */
    public static org.bytedeco.pytorch.Device toTorch(Device device) {
        // The first tensor work of the process sets libtorch's threads as NativeRuntime says (physical cores);
        // not in a static initializer, so a bad -Dbigmodel.threads is a plain IllegalArgumentException.
        NativeRuntime.applyThreads();
        if (device == null) {
            // A module with no weights here and no hook: not loaded, or placed remote (another pipeline stage).
            throw new IllegalArgumentException("No device to run on: the module holds no weights in this process"
                    + " (not loaded, or remote: held by another pipeline stage)");
        }
        if (device.isDisk()) {
            throw new IllegalArgumentException("disk is an offload location, not a libtorch device");
        }
        if (device.isRemote()) {
            throw new IllegalArgumentException("remote is held by another pipeline stage, not a libtorch device");
        }
        return new org.bytedeco.pytorch.Device(device.toString());
    }

    /** The bigmodel device a libtorch tensor lives on. */
    public static Device deviceOf(Tensor tensor) {
        if (tensor.is_meta()) {
            return Device.META;
        }
        if (tensor.is_cuda()) {
            return Device.cuda(tensor.device().index());
        }
        return Device.CPU;
    }

    /** Tensor options for a dtype on a device. */
    public static TensorOptions options(DType dtype, Device device) {
        NativeRuntime.init();
        return new TensorOptions(toTorch(device)).dtype(new org.bytedeco.pytorch.ScalarTypeOptional(dtype.scalarType()));
    }

    /** An uninitialized tensor. */
    public static Tensor empty(DType dtype, Device device, long... shape) {
        return torch.empty(shape, options(dtype, device), new MemoryFormatOptional());
    }

    /**
     * An uninitialized tensor for weights: on the CPU its memory is advised into 2 MiB pages before anything
     * touches it ({@link NativeRuntime#adviseHugePages}), so filling it takes a page fault per 2 MiB instead of per
     * 4 KiB (in a virtual machine each fault is a trip through the hypervisor) and a decode step streams it through
     * 512x fewer TLB entries. Elsewhere the same as {@link #empty}.
     *
     * <pre>{@code
     * Tensor codes = Tensors.emptyWeight(DType.INT8, Device.CPU, 4096, 4096);
     * }</pre>
     */
    public static Tensor emptyWeight(DType dtype, Device device, long... shape) {
        Tensor t = empty(dtype, device, shape);
        if (device.isCpu()) {
            NativeRuntime.adviseHugePages(t);
        }
        return t;
    }

    /** The shape of a tensor as a Java array. */
    public static long[] shape(Tensor tensor) {
        return tensor.sizes().vec().get();
    }

    /**
     * Whether {@code tensor} holds {@code type}. Compare dtypes with this, never with {@code ==}: the bindings hand
     * out a new {@code ScalarType} object for every {@code scalar_type()} call, so {@code t.scalar_type() ==
     * ScalarType.Float} is false even for a float32 tensor.
     *
     * <pre>{@code
     * Tensors.hasType(torch.ones(2), ScalarType.Float);   // true
     * }</pre>
     */
    public static boolean hasType(Tensor tensor, org.bytedeco.pytorch.global.torch.ScalarType type) {
        return tensor.scalar_type().value == type.value;
    }

    /** Whether two tensors hold one dtype (see {@link #hasType}). */
    public static boolean sameType(Tensor a, Tensor b) {
        return a.scalar_type().value == b.scalar_type().value;
    }
}
