package io.github.bigmodel.benchmarks.dispatch;

import io.github.bigmodel.core.Device;
import io.github.bigmodel.dispatch.hooks.AlignDevicesHook;
import io.github.bigmodel.dispatch.BigModel;
import io.github.bigmodel.dispatch.DispatchOptions;
import io.github.bigmodel.dispatch.DispatchedModel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;

/**
 * What {@link AlignDevicesHook}s cost when nothing is offloaded: a forward of a 28-block stack on the CPU with one
 * hook per block versus none. Target: hooks within 1.02x.
 *
 * <pre>{@code
 * java -jar benchmarks/target/benchmarks.jar HookOverheadBenchmark -f 1 -wi 2 -i 3
 * }</pre>
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
public class HookOverheadBenchmark {

    @Param({"false", "true"})
    public boolean hooks;

    @Param({"512"})
    public int hidden;

    @Param({"16"})
    public int rows;

    private Path dir;
    private DispatchedModel<BenchStack> model;
    private Tensor input;

    @Setup(Level.Trial)
    public void setUp() throws Exception {
        dir = Files.createTempDirectory("bench-hooks");
        BenchStack.writeCheckpoint(new BenchStack(28, hidden), dir.resolve("model.safetensors"), 1);
        model = BigModel.loadCheckpointAndDispatch(new BenchStack(28, hidden), dir,
                DispatchOptions.builder().deviceMap("{\"\":\"cpu\"}").build());
        if (hooks) {
            for (BenchStack.Block b : model.model().blocks()) {
                b.addForwardHook(new AlignDevicesHook(Device.CPU, null, null, -1));
            }
        }
        torch.manual_seed(3);
        input = torch.randn(rows, hidden);
    }

    @Benchmark
    public double forward() {
        try (Tensor y = model.model().forward(input)) {
            return y.data_ptr().address();
        }
    }

    @TearDown(Level.Trial)
    public void tearDown() throws Exception {
        model.model().removeAllForwardHooks();
        model.close();
        input.close();
        try (var files = Files.list(dir)) {
            for (Path f : (Iterable<Path>) files::iterator) {
                Files.delete(f);
            }
        }
        Files.delete(dir);
    }
}
