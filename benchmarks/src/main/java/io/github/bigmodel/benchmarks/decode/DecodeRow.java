package io.github.bigmodel.benchmarks.decode;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.quant.Precision;
import io.github.bigmodel.dispatch.plan.DeviceMap;
import io.github.bigmodel.dispatch.DispatchOptions;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * The settings of the 6B decode benchmark, one row of docs/benchmarks.md each: (a) everything on the CPU in bf16,
 * (b) a CPU budget with the rest read from disk, without and with prefetch, (c) block linears in int8, (d) in int4,
 * (b-int8, b-int4) the budget and prefetch of (b) with int8/int4 block linears, so the same budget holds more blocks
 * and each offloaded one reads 2x/3.5x fewer bytes, and (fp16) every weight converted to float16 while loading (the
 * side-by-side run's match for chatglm.cpp's f16). The last three are not part of {@code all}. The int8/int4 rows
 * given a folder written by {@code bigmodel convert --precision int8/int4} load its stored codes instead of
 * quantizing (and the disk rows read them in place; from a bf16 checkpoint they need {@code --offload DIR}).
 *
 * <pre>{@code
 * List<DecodeRow> rows = DecodeRow.parseList("a,b-prefetch");
 * DispatchOptions o = DecodeRow.B_PREFETCH.options(4L << 30, null);
 * }</pre>
 */
public enum DecodeRow {
    /** Every weight in CPU memory, bf16. */
    A("a", "CPU, bf16"),
    /** CPU budget, the blocks that do not fit read in place from the checkpoint for each token, no read-ahead. */
    B_NOPREFETCH("b-noprefetch", "CPU budget + disk, no prefetch"),
    /** As {@link #B_NOPREFETCH}, the next offloaded block read on a background thread while one computes. */
    B_PREFETCH("b-prefetch", "CPU budget + disk, prefetch 1"),
    /** Block linears int8 (weight-only, activations bf16), everything on the CPU. */
    C("c", "CPU, int8 blocks"),
    /** Block linears int4 (weight-only, activations bf16), everything on the CPU. */
    D("d", "CPU, int4 blocks"),
    /** As {@link #B_PREFETCH} with int8 block linears (not part of {@code all}). */
    B_INT8("b-int8", "CPU budget + disk, prefetch 1, int8 blocks"),
    /** As {@link #B_PREFETCH} with int4 block linears (not part of {@code all}). */
    B_INT4("b-int4", "CPU budget + disk, prefetch 1, int4 blocks"),
    /** Every weight converted to float16 while loading, everything on the CPU (not part of {@code all}). */
    FP16("fp16", "CPU, fp16 (converted while loading)");

    private final String key;
    private final String label;

    DecodeRow(String key, String label) {
        this.key = key;
        this.label = label;
    }

    /** The name on the command line ({@code a}, {@code b-noprefetch}, ...). */
    public String key() {
        return key;
    }

    /** A short description for the table. */
    public String label() {
        return label;
    }

    /** The dtype the model is built in: the weights' dtype after loading (the KV cache and activations follow it). */
    public DType modelDtype() {
        return this == FP16 ? DType.FLOAT16 : DType.BFLOAT16;
    }

    /** Whether this row reads weights from disk during decode. */
    public boolean usesDisk() {
        return this == B_NOPREFETCH || this == B_PREFETCH || this == B_INT8 || this == B_INT4;
    }

    /**
     * How the row loads the model.
     *
     * @param cpuBudgetBytes the CPU budget of the disk rows
     * @param offloadFolder  where weights needing conversion would go (null: none; the bf16 checkpoint is read
     *                       in place)
     */
    public DispatchOptions options(long cpuBudgetBytes, Path offloadFolder) {
        DispatchOptions.Builder b = DispatchOptions.builder().dtype(modelDtype())
                .offloadFolder(offloadFolder);
        switch (this) {
            // In place: the bf16 checkpoint needs no conversion, so the weights stay copy-on-write views of the
            // mapped shards (file-backed pages) instead of 11.6 GiB of anonymous copies.
            case A -> b.deviceMap(DeviceMap.of(Map.of("", Device.CPU))).prefetch(0).offloadStateDict(true);
            case B_NOPREFETCH -> b.maxMemory("cpu=" + cpuBudgetBytes).prefetch(0);
            case B_PREFETCH -> b.maxMemory("cpu=" + cpuBudgetBytes).prefetch(1);
            case B_INT8 -> b.maxMemory("cpu=" + cpuBudgetBytes).prefetch(1).cpuPrecision(Precision.INT8);
            case B_INT4 -> b.maxMemory("cpu=" + cpuBudgetBytes).prefetch(1).cpuPrecision(Precision.INT4);
            case C -> b.deviceMap(DeviceMap.of(Map.of("", Device.CPU))).prefetch(0).cpuPrecision(Precision.INT8);
            case D -> b.deviceMap(DeviceMap.of(Map.of("", Device.CPU))).prefetch(0).cpuPrecision(Precision.INT4);
            case FP16 -> b.deviceMap(DeviceMap.of(Map.of("", Device.CPU))).prefetch(0);
            default -> throw new IllegalStateException(name());
        }
        return b.build();
    }

    /** The row named {@code key}. */
    public static DecodeRow parse(String key) {
        for (DecodeRow r : values()) {
            if (r.key.equals(key.trim().toLowerCase(Locale.ROOT))) {
                return r;
            }
        }
        throw new IllegalArgumentException("Unknown row '" + key + "': expected a, b-noprefetch, b-prefetch, c, d,"
                + " b-int8, b-int4, fp16, b (both bf16 disk rows) or all");
    }

    /** A comma-separated list of rows; {@code all} is (a) to (d), {@code b} both bf16 disk rows. */
    public static List<DecodeRow> parseList(String text) {
        List<DecodeRow> out = new ArrayList<>();
        for (String part : text.split(",")) {
            String p = part.trim().toLowerCase(Locale.ROOT);
            if (p.equals("all")) {
                out.addAll(List.of(A, B_NOPREFETCH, B_PREFETCH, C, D));
            } else if (p.equals("b")) {
                out.add(B_NOPREFETCH);
                out.add(B_PREFETCH);
            } else {
                out.add(parse(p));
            }
        }
        return out;
    }
}
