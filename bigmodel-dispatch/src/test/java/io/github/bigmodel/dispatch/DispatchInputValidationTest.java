package io.github.bigmodel.dispatch;

import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.github.bigmodel.core.MemorySize;
import io.github.bigmodel.safetensors.CheckpointException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.assertj.core.api.ThrowableAssert.ThrowingCallable;
import org.bytedeco.pytorch.Tensor;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;
import org.junit.jupiter.api.io.TempDir;
import io.github.bigmodel.dispatch.hooks.AlignDevicesHook;
import io.github.bigmodel.dispatch.plan.DeviceInventory;
import io.github.bigmodel.dispatch.plan.DeviceMap;
import io.github.bigmodel.dispatch.plan.DeviceMapException;
import io.github.bigmodel.dispatch.plan.MaxMemory;
import io.github.bigmodel.dispatch.hooks.Prefetcher;

/**
 * The input-validation matrix of dispatch's public entry points (listed in docs/reliability.md): budgets, device
 * maps, options and checkpoint paths that cannot work give a typed exception whose message names the bad value.
 */
class DispatchInputValidationTest {

    private static final DeviceInventory NO_GPU = DeviceInventory.simulated(List.of(), 8L << 30);

    @TempDir
    static Path tmp;

    record Case(String name, ThrowingCallable call, Class<? extends Throwable> type, String messagePart) {
    }

    private static List<Case> cases() throws Exception {
        Map<String, Tensor> weights = new SyntheticStack(2, 8).randomWeights(1);
        Path ckpt = Checkpoints.singleFile(tmp.resolve("ckpt"), weights);
        DispatchOptions cpu = DispatchOptions.builder().inventory(NO_GPU).deviceMap("{\"\": \"cpu\"}").build();
        List<Case> cases = new ArrayList<>(List.of(
                new Case("MemorySize: negative", () -> MemorySize.parse("-5GiB"),
                        IllegalArgumentException.class, "-5GiB"),
                new Case("MemorySize: garbage", () -> MemorySize.parse("ten gigs"),
                        IllegalArgumentException.class, "ten gigs"),
                new Case("MemorySize: null", () -> MemorySize.parse(null),
                        IllegalArgumentException.class, "null"),
                new Case("MaxMemory: garbage budget", () -> MaxMemory.parse("cpu=10 potatoes", NO_GPU),
                        IllegalArgumentException.class, "10 potatoes"),
                new Case("MaxMemory: negative budget", () -> MaxMemory.parse("cpu=-1GiB", NO_GPU),
                        IllegalArgumentException.class, "-1GiB"),
                new Case("DeviceMap: unknown device", () -> DeviceMap.fromJson("{\"layers.0\": \"tpu:0\"}"),
                        IllegalArgumentException.class, "tpu"),
                new Case("DeviceMap: not JSON", () -> DeviceMap.fromJson("layers.0 = cpu"),
                        IllegalArgumentException.class, "layers.0 = cpu"),
                new Case("DeviceMap: a parameter without a device",
                        () -> BigModel.loadCheckpointAndDispatch(new SyntheticStack(2, 8), ckpt,
                                DispatchOptions.builder().inventory(NO_GPU).deviceMap("{\"layers.0\": \"cpu\"}")
                                        .build()),
                        DeviceMapException.class, "layers.1"),
                new Case("DeviceMap: unknown module",
                        () -> BigModel.loadCheckpointAndDispatch(new SyntheticStack(2, 8), ckpt,
                                DispatchOptions.builder().inventory(NO_GPU)
                                        .deviceMap("{\"\": \"cpu\", \"nowhere.7\": \"cpu\"}").build()),
                        DeviceMapException.class, "nowhere.7"),
                new Case("loadCheckpointAndDispatch: missing checkpoint",
                        () -> BigModel.loadCheckpointAndDispatch(new SyntheticStack(2, 8),
                                tmp.resolve("no-such-folder"), cpu),
                        CheckpointException.class, "no-such-folder"),
                new Case("loadCheckpointAndDispatch: null options",
                        () -> BigModel.loadCheckpointAndDispatch(new SyntheticStack(2, 8), ckpt, null),
                        IllegalArgumentException.class, "DispatchOptions.defaults()"),
                new Case("loadCheckpointAndDispatch: null checkpoint",
                        () -> BigModel.loadCheckpointAndDispatch(new SyntheticStack(2, 8), null, cpu),
                        IllegalArgumentException.class, "checkpoint must not be null"),
                new Case("DispatchOptions: prefetch -1", () -> DispatchOptions.builder().prefetch(-1),
                        IllegalArgumentException.class, "-1"),
                new Case("Prefetcher: depth 0", () -> new Prefetcher(List.of(), 0),
                        IllegalArgumentException.class, "at least 1"),
                new Case("AlignDevicesHook: meta execution device",
                        () -> new AlignDevicesHook(io.github.bigmodel.core.Device.META, null, null, -1),
                        IllegalArgumentException.class, "meta"),
                new Case("disk entries without an offload folder",
                        () -> BigModel.loadCheckpointAndDispatch(new SyntheticStack(2, 8), ckpt,
                                DispatchOptions.builder().inventory(NO_GPU).dtype("float64")
                                        .deviceMap("{\"layers.0\": \"cpu\", \"layers.1\": \"disk\"}").build()),
                        IllegalArgumentException.class, "offloadFolder")));
        return cases;
    }

    @TestFactory
    Stream<DynamicTest> everyBadInputIsATypedClearError() throws Exception {
        return cases().stream().map(c -> DynamicTest.dynamicTest(c.name(),
                () -> assertThatThrownBy(c.call()).isInstanceOf(c.type()).hasMessageContaining(c.messagePart())));
    }
}
