package io.github.bigmodel.core.testing;

import io.github.bigmodel.core.kernel.NativeKernels;

/**
 * How far bigmodel's native int8/int4 kernels may move a result on purpose: they round each row of activations to
 * int16 per {@link NativeKernels#ACTIVATION_BLOCK} values (docs/benchmarks.md, "Kernels"). One place for every test
 * that compares a quantized result with an exact-activation one.
 */
public final class KernelAllowance {

    /** Largest move of one activation, relative to its block's largest |x|: half an int16 step, plus float32 rounding. */
    public static final double ACTIVATION = 0.5 / 32767 + 0x1p-20;

    /** Allowed move of a model's logits per quantized linear, relative to the largest logit. */
    public static final double LOGITS_PER_LINEAR = 0x1p-15;

    private KernelAllowance() {
    }

    /**
     * Allowed move of a model's logits, relative to the largest: {@link #LOGITS_PER_LINEAR} for each of the four
     * quantized linears of every layer, added over {@code layers}; 0 where the native kernels do not run.
     */
    public static double logits(int layers) {
        return NativeKernels.available() ? 4.0 * layers * LOGITS_PER_LINEAR : 0;
    }
}
