package io.github.bigmodel.dispatch;

import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.github.bigmodel.core.MemorySize;
import io.github.bigmodel.core.SettingException;
import io.github.bigmodel.safetensors.Checkpoint;
import io.github.bigmodel.safetensors.SafetensorsHeader;
import java.nio.file.Files;
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
        Path six = Checkpoints.singleFile(tmp.resolve("ckpt-six"), new SyntheticStack(6, 8).randomWeights(2));
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
                        SettingException.class, "set DispatchOptions.offloadFolder"),
                new Case("MaxMemory: a device given twice", () -> MaxMemory.parse("cpu=10GiB,cpu=1GiB", NO_GPU),
                        DeviceMapException.class, "cpu more than one budget (cpu=10GiB, cpu=1GiB)"),
                new Case("MaxMemory: GPU 0 given as 0 and cuda:0",
                        () -> MaxMemory.parse("0=1GiB,cuda:0=2GiB,cpu=1GiB", NO_GPU),
                        DeviceMapException.class, "cuda:0 more than one budget"),
                new Case("DeviceMap: missing modules listed as modules, not parameters",
                        () -> BigModel.loadCheckpointAndDispatch(new SyntheticStack(6, 8), six,
                                DispatchOptions.builder().inventory(NO_GPU).deviceMap("{\"layers.0\": \"cpu\","
                                        + " \"layers.1.up\": \"cpu\"}").build()),
                        DeviceMapException.class, "to 18 parameter(s), in the module(s): layers.1.down, layers.2..5")));
        Path fifo = tmp.resolve("pipe.safetensors");
        if (!Files.exists(fifo) && new ProcessBuilder("mkfifo", fifo.toString()).start().waitFor() == 0) {
            cases.add(new Case("Checkpoint.open: a FIFO named .safetensors", () -> Checkpoint.open(fifo),
                    CheckpointException.class, "not a regular file"));
        }
        Path zero = tmp.resolve("zero.safetensors");
        if (Files.exists(Path.of("/dev/zero"))) {
            if (!Files.exists(zero, java.nio.file.LinkOption.NOFOLLOW_LINKS)) {
                Files.createSymbolicLink(zero, Path.of("/dev/zero"));
            }
            cases.add(new Case("Checkpoint.open: a link to /dev/zero named .safetensors", () -> Checkpoint.open(zero),
                    CheckpointException.class, "not a regular file"));
            cases.add(new Case("SafetensorsHeader.read: a link to /dev/zero", () -> SafetensorsHeader.read(zero),
                    CheckpointException.class, "not a regular file"));
        }
        Path negative = tmp.resolve("negative.safetensors");
        byte[] header = "{\"a\":{\"dtype\":\"F32\",\"shape\":[-2,2],\"data_offsets\":[0,16]}}"
                .getBytes(java.nio.charset.StandardCharsets.UTF_8);
        java.nio.ByteBuffer bytes = java.nio.ByteBuffer.allocate(8 + header.length + 16)
                .order(java.nio.ByteOrder.LITTLE_ENDIAN);
        bytes.putLong(header.length).put(header);
        Files.write(negative, bytes.array());
        cases.add(new Case("Checkpoint.open: a negative dimension is a shape error", () -> Checkpoint.open(negative),
                CheckpointException.class, "negative dimension"));
        return cases;
    }

    @org.junit.jupiter.api.Test
    void negativeDimensionIsTaggedAsAShape() throws Exception {
        Path negative = tmp.resolve("negative-tag.safetensors");
        byte[] header = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,-1],\"data_offsets\":[0,8]}}"
                .getBytes(java.nio.charset.StandardCharsets.UTF_8);
        java.nio.ByteBuffer bytes = java.nio.ByteBuffer.allocate(8 + header.length + 8)
                .order(java.nio.ByteOrder.LITTLE_ENDIAN);
        bytes.putLong(header.length).put(header);
        Files.write(negative, bytes.array());
        assertThatThrownBy(() -> Checkpoint.open(negative)).isInstanceOf(CheckpointException.class)
                .satisfies(e -> org.assertj.core.api.Assertions.assertThat(((CheckpointException) e).reason())
                        .isEqualTo(CheckpointException.Reason.INVALID_SHAPE));
    }

    @org.junit.jupiter.api.Test
    void offloadFolderMessageNamesTheSettingInTheCallersWords() throws Exception {
        Map<String, Tensor> weights = new SyntheticStack(2, 8).randomWeights(1);
        Path ckpt = Checkpoints.singleFile(tmp.resolve("ckpt-setting"), weights);
        SettingException e = org.junit.jupiter.api.Assertions.assertThrows(SettingException.class,
                () -> BigModel.loadCheckpointAndDispatch(new SyntheticStack(2, 8), ckpt,
                        DispatchOptions.builder().inventory(NO_GPU).dtype("float64")
                                .deviceMap("{\"layers.0\": \"cpu\", \"layers.1\": \"disk\"}").build()));
        org.assertj.core.api.Assertions.assertThat(e.settingMessage().setting()).isEqualTo("offload_folder");
        org.assertj.core.api.Assertions.assertThat(e.message(s -> "--" + s.replace('_', '-')))
                .contains("set --offload-folder. First: layers.1.").doesNotContain("DispatchOptions");
    }

    @TestFactory
    Stream<DynamicTest> everyBadInputIsATypedClearError() throws Exception {
        return cases().stream().map(c -> DynamicTest.dynamicTest(c.name(),
                () -> assertThatThrownBy(c.call()).isInstanceOf(c.type()).hasMessageContaining(c.messagePart())));
    }
}
