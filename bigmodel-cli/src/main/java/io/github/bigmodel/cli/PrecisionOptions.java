package io.github.bigmodel.cli;

import io.github.bigmodel.core.quant.Precision;
import picocli.CommandLine.Option;

/**
 * The precision flags of every command that plans or loads weights ({@code plan}, {@code chat}, {@code generate}):
 * the precision of the blocks' linear layers per device. Planning and loading read them through the same
 * {@link #gpu()} / {@link #cpu()}, so {@code plan} sizes what loading with the same flags holds.
 */
final class PrecisionOptions {

    @Option(names = "--precision", paramLabel = "P",
            description = "Weights of the blocks' linear layers on every device: fp32, bf16, fp16, int8 or int4 "
                    + "(an int8/int4 folder written by 'bigmodel convert' loads as stored).")
    String precision;

    @Option(names = "--gpu-precision", paramLabel = "P", description = "As --precision, for GPUs only.")
    String gpuPrecision;

    @Option(names = "--cpu-precision", paramLabel = "P", description = "As --precision, for the CPU only.")
    String cpuPrecision;

    /** Whether any of the three flags is given. */
    boolean given() {
        return precision != null || gpuPrecision != null || cpuPrecision != null;
    }

    /** The precision of GPUs: {@code --gpu-precision}, else {@code --precision}, else null. */
    Precision gpu() {
        return parse(gpuPrecision != null ? gpuPrecision : precision);
    }

    /** The precision of the CPU: {@code --cpu-precision}, else {@code --precision}, else null. */
    Precision cpu() {
        return parse(cpuPrecision != null ? cpuPrecision : precision);
    }

    private static Precision parse(String text) {
        return text == null ? null : Precision.parse(text);
    }
}
