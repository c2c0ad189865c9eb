package io.github.bigmodel.dispatch;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.Tensors;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.bytedeco.pytorch.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import io.github.bigmodel.dispatch.plan.DeviceInventory;
import io.github.bigmodel.dispatch.offload.OffloadSpaceException;
import io.github.bigmodel.dispatch.hooks.OffloadStore;

/**
 * A full or read-only offload disk gives {@link OffloadSpaceException} / a clear I/O error naming the folder, never a
 * folder a later load accepts: simulated with a space probe, and on a real 1 MiB tmpfs (read-write and read-only)
 * when this process may mount one (the build runs as root; mounting is skipped, with the test, elsewhere).
 */
class OffloadSpaceTest {

    private static final long[] SHAPE = {64, 64};
    private static final long BYTES = 64 * 64 * 8;

    @TempDir
    Path tmp;

    private static Tensor values() {
        return Tensors.empty(DType.FLOAT64, Device.CPU, SHAPE).fill_(new org.bytedeco.pytorch.Scalar(1.5));
    }

    private static List<String> files(Path dir) throws IOException {
        try (Stream<Path> s = Files.list(dir)) {
            return s.map(p -> p.getFileName().toString()).sorted().toList();
        }
    }

    @Test
    void upFrontCheckNamesFolderNeededAndAvailableBytes() throws IOException {
        Path dir = tmp.resolve("offload");
        OffloadStore store = OffloadStore.open(dir, OffloadStore.inMemorySource(null), d -> 10_000);
        long planned = 3 * BYTES;
        assertThatThrownBy(() -> store.requireRoom(Map.of("a", BYTES, "b", BYTES, "c", BYTES)))
                .isInstanceOfSatisfying(OffloadSpaceException.class, e -> {
                    assertThat(e.folder()).isEqualTo(dir);
                    assertThat(e.neededBytes()).isEqualTo(planned + OffloadStore.margin(planned));
                    assertThat(e.availableBytes()).isEqualTo(10_000);
                })
                .hasMessageContaining(dir.toString()).hasMessageContaining("10000 bytes available")
                .hasMessageContaining(String.valueOf(planned + OffloadStore.margin(planned)));
        assertThat(files(dir)).isEmpty();
        store.close();
    }

    @Test
    void eachTensorIsCheckedBeforeItIsWritten() throws IOException {
        Path dir = tmp.resolve("offload");
        long[] free = {BYTES + OffloadStore.margin(BYTES)};
        OffloadStore store = OffloadStore.open(dir, OffloadStore.inMemorySource(null), d -> free[0]);
        store.requireRoom(Map.of("a", BYTES));
        store.source("a", DType.FLOAT64, SHAPE, OffloadSpaceTest::values);
        free[0] = BYTES; // less than the tensor plus the margin
        assertThatThrownBy(() -> store.source("b", DType.FLOAT64, SHAPE, OffloadSpaceTest::values))
                .isInstanceOf(OffloadSpaceException.class).hasMessageContaining(dir.toString());
        assertThat(files(dir)).containsExactly("a.dat");
        store.close();
    }

    @Test
    void unknownFreeSpaceLeavesTheVerdictToTheWrite() throws IOException {
        Path dir = tmp.resolve("offload");
        OffloadStore store = OffloadStore.open(dir, OffloadStore.inMemorySource(null), d -> {
            throw new IOException("statvfs not supported");
        });
        store.requireRoom(Map.of("a", BYTES));
        store.source("a", DType.FLOAT64, SHAPE, OffloadSpaceTest::values);
        store.commit();
        assertThat(files(dir)).contains("a.dat", OffloadStore.FINGERPRINT);
        store.close();
    }

    @Test
    void folderUnderARegularFileIsAClearError() throws IOException {
        // Root ignores permission bits, so a folder that cannot be created stands in for a read-only one.
        Path file = Files.writeString(tmp.resolve("plain-file"), "x");
        Path dir = file.resolve("offload");
        assertThatThrownBy(() -> OffloadStore.open(dir, OffloadStore.inMemorySource(null)))
                .isInstanceOf(UncheckedIOException.class).hasMessageContaining(dir.toString())
                .hasMessageContaining("writable");
    }

    @Test
    void realFullTmpfsFailsTypedAndLeavesNoTemporaryFile() throws Exception {
        Path mount = tmp.resolve("small-disk");
        Files.createDirectories(mount);
        assumeTrue(mountTmpfs(mount, "size=1m"), "cannot mount a tmpfs here (needs root)");
        try {
            Path dir = mount.resolve("offload");
            // The real probe refuses 2 MiB up front.
            OffloadStore checked = OffloadStore.open(dir, OffloadStore.inMemorySource(null));
            assertThatThrownBy(() -> checked.requireRoom(Map.of("big", 2L << 20)))
                    .isInstanceOfSatisfying(OffloadSpaceException.class, e -> {
                        assertThat(e.availableBytes()).isBetween(0L, 1L << 20);
                        assertThat(e.folder()).isEqualTo(dir);
                    });
            checked.close();

            // A probe that over-reports lets the write run into ENOSPC: same typed error, temp file removed.
            OffloadStore store = OffloadStore.open(dir, OffloadStore.inMemorySource(null), d -> Long.MAX_VALUE / 4);
            long[] bigShape = {256, 1024}; // 2 MiB of float64
            assertThatThrownBy(() -> store.source("big", DType.FLOAT64, bigShape,
                    () -> Tensors.empty(DType.FLOAT64, Device.CPU, bigShape).fill_(new org.bytedeco.pytorch.Scalar(2))))
                    .isInstanceOfSatisfying(OffloadSpaceException.class, e -> {
                        assertThat(e.neededBytes()).isEqualTo(2L << 20);
                        assertThat(e.getCause().getMessage()).contains("No space left");
                    })
                    .hasMessageContaining(dir.toAbsolutePath().toString());
            store.close();
            assertThat(files(dir)).as("no partial tensor, no temporary file, no fingerprint").isEmpty();

            // End to end: a load whose disk blocks do not fit fails before writing a tensor.
            Map<String, Tensor> weights = new SyntheticStack(6, 256).randomWeights(5);
            Path ckpt = Checkpoints.singleFile(tmp.resolve("ckpt"), weights);
            String split = "{\"layers.0\":\"cpu\",\"layers.1\":\"cpu\",\"layers.2\":\"cpu\","
                    + "\"layers.3\":\"disk\",\"layers.4\":\"disk\",\"layers.5\":\"disk\"}";
            Path loadDir = mount.resolve("load");
            assertThatThrownBy(() -> BigModel.loadCheckpointAndDispatch(new SyntheticStack(6, 256), ckpt,
                    DispatchOptions.builder().inventory(DeviceInventory.simulated(List.of(), 8L << 30))
                            .deviceMap(split).dtype(DType.FLOAT64).offloadFolder(loadDir).build()))
                    .isInstanceOf(OffloadSpaceException.class).hasMessageContaining(loadDir.toString());
            assertThat(files(loadDir)).isEmpty();
            weights.values().forEach(Tensor::close);
        } finally {
            umount(mount);
        }
    }

    @Test
    void realReadOnlyTmpfsIsAClearError() throws Exception {
        Path mount = tmp.resolve("ro-disk");
        Files.createDirectories(mount);
        assumeTrue(mountTmpfs(mount, "size=1m,ro"), "cannot mount a tmpfs here (needs root)");
        try {
            Path dir = mount.resolve("offload");
            assertThatThrownBy(() -> OffloadStore.open(dir, OffloadStore.inMemorySource(null)))
                    .isInstanceOf(UncheckedIOException.class).hasMessageContaining(dir.toString())
                    .hasMessageContaining("writable");
        } finally {
            umount(mount);
        }
    }

    private static boolean mountTmpfs(Path at, String options) {
        try {
            Process p = new ProcessBuilder("mount", "-t", "tmpfs", "-o", options, "tmpfs", at.toString())
                    .redirectErrorStream(true).start();
            return p.waitFor(20, TimeUnit.SECONDS) && p.exitValue() == 0;
        } catch (IOException e) {
            return false;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return false;
        }
    }

    private static void umount(Path at) throws Exception {
        Process p = new ProcessBuilder("umount", at.toString()).redirectErrorStream(true).start();
        assertThat(p.waitFor(20, TimeUnit.SECONDS)).isTrue();
        assertThat(p.exitValue()).as("umount " + at).isZero();
    }
}
