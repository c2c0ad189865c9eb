package io.github.bigmodel.cli;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.dispatch.plan.DeviceMap;
import io.github.bigmodel.dispatch.DispatchOptions;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Set;
import io.github.bigmodel.core.NativeRuntime;
import picocli.CommandLine;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/** The options every command that loads weights shares: dtype, device map or strategy, budgets, offload. */
final class ModelOptions {

    private static final Set<String> STRATEGIES = Set.of("auto", "balanced", "balanced_low_0", "sequential");

    @Option(names = "--dtype", paramLabel = "DTYPE", defaultValue = "float32",
            description = "Weights and compute dtype: float32, bfloat16 or float16 (default: ${DEFAULT-VALUE}).")
    String dtype;

    @Option(names = "--device-map", paramLabel = "MAP",
            description = "auto, balanced, balanced_low_0, sequential, or a JSON file in hf_device_map form. "
                    + "Default: everything on the CPU, unless --max-memory is given (then auto).")
    String deviceMap;

    @Option(names = "--max-memory", paramLabel = "BUDGETS",
            description = "Per-device budgets for planning, e.g. \"0=10GiB,cpu=4GiB\".")
    String maxMemory;

    @Option(names = "--offload-folder", paramLabel = "DIR",
            description = "Where weights mapped to disk are written when they cannot be read in place.")
    Path offloadFolder;

    @Option(names = "--prefetch", paramLabel = "N", defaultValue = "1",
            description = "Offloaded blocks read ahead on a background thread (0 = off; default: ${DEFAULT-VALUE}).")
    int prefetch;

    @Mixin
    PrecisionOptions precisions = new PrecisionOptions();

    @Option(names = "--progress", description = "Draw a loading progress bar on stderr even when it is not a terminal.")
    boolean progress;

    @CommandLine.Spec(CommandLine.Spec.Target.MIXEE)
    CommandLine.Model.CommandSpec mixee;

    /** The --threads value applied, or null when the default stands. */
    Integer threads;

    @Option(names = "--threads", paramLabel = "N",
            description = "libtorch threads per operation (default: -D" + NativeRuntime.THREADS
                    + ", else OMP_NUM_THREADS, else the physical cores).")
    void threads(int n) {
        if (n <= 0) {
            throw new CommandLine.ParameterException(mixee.commandLine(),
                    "--threads must be a positive integer, got " + n);
        }
        // Applied as it is parsed: before the command loads or runs anything.
        NativeRuntime.setThreads(n);
        threads = n;
    }

    DType weightsDtype() {
        return DType.parse(dtype);
    }

    /** Dispatch options for these flags: a hand-written map, a strategy with budgets, or all on the CPU. */
    DispatchOptions toDispatchOptions() throws IOException {
        return toDispatchOptions(null);
    }

    /** As {@link #toDispatchOptions()}, reporting each placed tensor to {@code progress} (null: none). */
    DispatchOptions toDispatchOptions(LoadProgress progress) throws IOException {
        DispatchOptions.Builder b = DispatchOptions.builder().dtype(weightsDtype()).prefetch(prefetch);
        if (progress != null) {
            b.progress(progress);
        }
        b.gpuPrecision(precisions.gpu()).cpuPrecision(precisions.cpu());
        if (offloadFolder != null) {
            b.offloadFolder(offloadFolder);
        }
        if (deviceMap != null && !STRATEGIES.contains(deviceMap)) {
            b.deviceMap(DeviceMap.fromJson(Files.readString(Path.of(deviceMap), StandardCharsets.UTF_8)));
        } else if (deviceMap != null || maxMemory != null) {
            b.strategy(deviceMap == null ? "auto" : deviceMap);
            if (maxMemory != null) {
                b.maxMemory(maxMemory);
            }
        } else {
            b.deviceMap("{\"\": \"cpu\"}");
        }
        return b.build();
    }
}
