package io.github.bigmodel.safetensors;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.DynamicTest.dynamicTest;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Tensors;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.stream.Stream;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestFactory;
import org.junit.jupiter.api.io.TempDir;

/** Writer round trips and the reader's view semantics (lifetime, copy-on-write, unaligned fallback). */
class SafetensorsWriterTest {

    @TempDir
    Path dir;

    private static byte[] randomBytes(long n, long seed) {
        byte[] b = new byte[(int) n];
        new Random(seed).nextBytes(b);
        return b;
    }

    /** Every dtype libtorch has, each as a matrix, a scalar and an empty tensor, plus metadata. */
    @TestFactory
    List<DynamicTest> roundTripEveryDtype() {
        List<DynamicTest> tests = new ArrayList<>();
        for (DType dtype : DType.values()) {
            if (!dtype.hasScalarType()) {
                continue;
            }
            tests.add(dynamicTest(dtype.name(), () -> {
                long[][] shapes = {{3, 5}, {}, {0, 4}, {2, 1, 3}};
                List<SafetensorsWriter.Entry> entries = new ArrayList<>();
                List<byte[]> contents = new ArrayList<>();
                for (int i = 0; i < shapes.length; i++) {
                    SafetensorsWriter.Entry e = SafetensorsWriter.Entry.of("t" + i, dtype, shapes[i]);
                    entries.add(e);
                    byte[] bytes = randomBytes(e.byteLength(), 31L * i + dtype.ordinal());
                    if (dtype == DType.BOOL) {
                        for (int k = 0; k < bytes.length; k++) {
                            bytes[k] &= 1; // bool bytes other than 0/1 are not valid values
                        }
                    }
                    contents.add(bytes);
                }
                Path file = dir.resolve(dtype.name() + ".safetensors");
                Map<String, String> metadata = Map.of("format", "pt", "dtype", dtype.torchName());
                try (SafetensorsWriter w = SafetensorsWriter.create(file, entries, metadata)) {
                    for (int i = 0; i < shapes.length; i++) {
                        if (i % 2 == 0) {
                            try (Tensor t = TestBytes.tensorOf(contents.get(i), dtype, shapes[i])) {
                                w.write("t" + i, t);
                            }
                        } else {
                            w.write("t" + i, ByteBuffer.wrap(contents.get(i)));
                        }
                    }
                }
                assertThat(Files.size(file) - 8 - SafetensorsHeader.read(file).headerLength())
                        .isEqualTo(contents.stream().mapToLong(b -> b.length).sum());
                assertThat(SafetensorsHeader.read(file).dataStart() % 64).isZero();
                try (SafetensorsFile f = SafetensorsFile.open(file)) {
                    assertThat(f.metadata()).isEqualTo(metadata);
                    assertThat(f.tensors()).extracting(TensorInfo::name).containsExactly("t0", "t1", "t2", "t3");
                    for (int i = 0; i < shapes.length; i++) {
                        try (Tensor t = f.load("t" + i)) {
                            assertThat(Tensors.shape(t)).containsExactly(shapes[i]);
                            assertThat(DType.of(t.scalar_type().intern())).isEqualTo(dtype);
                            assertThat(TestBytes.bytesOf(t)).isEqualTo(contents.get(i));
                            assertThat(TestBytes.bytesOf(f.bytes("t" + i))).isEqualTo(contents.get(i));
                        }
                    }
                }
            }));
        }
        return tests;
    }

    @Test
    void nonContiguousTensorIsWrittenInLogicalOrder() throws Exception {
        byte[] bytes = randomBytes(6 * 4, 7);
        Path file = dir.resolve("t.safetensors");
        try (Tensor t = TestBytes.tensorOf(bytes, DType.FLOAT32, 2, 3); Tensor tt = t.t();
                SafetensorsWriter w = SafetensorsWriter.create(file,
                        List.of(SafetensorsWriter.Entry.of("tt", DType.FLOAT32, 3, 2)), Map.of())) {
            assertThat(tt.is_contiguous()).isFalse();
            w.write("tt", tt);
        }
        try (SafetensorsFile f = SafetensorsFile.open(file); Tensor t = TestBytes.tensorOf(bytes, DType.FLOAT32, 2, 3);
                Tensor tt = t.t(); Tensor back = f.load("tt")) {
            assertThat(TestBytes.bytesOf(back)).isEqualTo(TestBytes.bytesOf(tt));
        }
    }

    @Test
    void unalignedTensorIsCopiedWithTheRightValues() throws Exception {
        // A 1-byte tensor first puts the float32 tensor at an odd absolute offset: no in-place view possible.
        byte[] floats = randomBytes(8 * 4, 3);
        Path file = dir.resolve("odd.safetensors");
        try (SafetensorsWriter w = SafetensorsWriter.create(file, List.of(
                SafetensorsWriter.Entry.of("byte", DType.UINT8, 1),
                SafetensorsWriter.Entry.of("f", DType.FLOAT32, 2, 4)), Map.of())) {
            w.write("byte", ByteBuffer.wrap(new byte[] {42}));
            w.write("f", ByteBuffer.wrap(floats, 0, 10));
            w.write("f", ByteBuffer.wrap(floats, 10, 22));
        }
        try (SafetensorsFile f = SafetensorsFile.open(file); Tensor t = f.load("f")) {
            assertThat(f.info("f").fileOffset() % 4).isNotZero();
            assertThat(TestBytes.bytesOf(t)).isEqualTo(floats);
            assertThat(Tensors.shape(t)).containsExactly(2, 4);
        }
    }

    @Test
    void viewsOutliveCloseAndWritesNeverReachTheFile() throws Exception {
        byte[] bytes = randomBytes(16 * 4, 11);
        Path file = dir.resolve("ro.safetensors");
        try (SafetensorsWriter w = SafetensorsWriter.create(file,
                List.of(SafetensorsWriter.Entry.of("w", DType.FLOAT32, 4, 4)), Map.of())) {
            w.write("w", ByteBuffer.wrap(bytes));
        }
        byte[] fileBefore = Files.readAllBytes(file);
        Files.setPosixFilePermissions(file, PosixFilePermissions.fromString("r--r--r--"));
        Tensor view;
        ByteBuffer raw;
        try (SafetensorsFile f = SafetensorsFile.open(file)) {
            view = f.load("w");
            raw = f.bytes("w");
        }
        try {
            assertThat(TestBytes.bytesOf(view)).isEqualTo(bytes);
            assertThat(TestBytes.bytesOf(raw)).isEqualTo(bytes);
            view.fill_(new Scalar(1.5));
            byte[] changed = TestBytes.bytesOf(view);
            assertThat(changed).isNotEqualTo(bytes);
            assertThat(Files.readAllBytes(file)).isEqualTo(fileBefore);
            try (SafetensorsFile again = SafetensorsFile.open(file); Tensor fresh = again.load("w")) {
                assertThat(TestBytes.bytesOf(fresh)).isEqualTo(bytes);
            }
            assertThat(raw.isReadOnly()).isTrue();
        } finally {
            view.close();
        }
    }

    @Test
    void outOfOrderWriteFailsAndLeavesNothing() throws Exception {
        Path file = dir.resolve("order.safetensors");
        SafetensorsWriter w = SafetensorsWriter.create(file, List.of(
                SafetensorsWriter.Entry.of("a", DType.INT32, 2),
                SafetensorsWriter.Entry.of("b", DType.INT32, 2)), Map.of());
        assertThatThrownBy(() -> w.write("b", ByteBuffer.allocate(8)))
                .isInstanceOf(IllegalStateException.class).hasMessageContaining("'b'").hasMessageContaining("'a'");
        w.close();
        assertThat(file).doesNotExist();
        try (Stream<Path> left = Files.list(dir)) {
            assertThat(left).isEmpty();
        }
    }

    @Test
    void wrongDtypeOrTooManyBytesAreRejected() throws Exception {
        Path file = dir.resolve("bad.safetensors");
        try (SafetensorsWriter w = SafetensorsWriter.create(file,
                List.of(SafetensorsWriter.Entry.of("a", DType.FLOAT32, 2)), Map.of());
                Tensor t = TestBytes.tensorOf(new byte[16], DType.INT64, 2)) {
            assertThatThrownBy(() -> w.write("a", t)).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("I64");
        }
        assertThat(file).doesNotExist();
        try (SafetensorsWriter w = SafetensorsWriter.create(file,
                List.of(SafetensorsWriter.Entry.of("a", DType.FLOAT32, 2)), Map.of())) {
            assertThatThrownBy(() -> w.write("a", ByteBuffer.allocate(9)))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("9 bytes");
        }
        assertThat(file).doesNotExist();
    }

    @Test
    void incompleteFileIsNotCommittedAndOldTargetSurvives() throws Exception {
        Path file = dir.resolve("partial.safetensors");
        Files.write(file, new byte[] {1, 2, 3});
        SafetensorsWriter w = SafetensorsWriter.create(file, List.of(
                SafetensorsWriter.Entry.of("a", DType.FLOAT32, 4),
                SafetensorsWriter.Entry.of("b", DType.FLOAT32, 4)), Map.of());
        w.write("a", ByteBuffer.allocate(16));
        w.write("b", ByteBuffer.allocate(8));
        assertThatThrownBy(w::close).isInstanceOf(IllegalStateException.class)
                .hasMessageContaining("b F32[4] (8 of 16 bytes written)");
        assertThat(Files.readAllBytes(file)).containsExactly(1, 2, 3);
        try (Stream<Path> left = Files.list(dir)) {
            assertThat(left).containsExactly(file);
        }
    }

    @Test
    void emptyEntriesMayBeSkipped() throws Exception {
        Path file = dir.resolve("empty.safetensors");
        try (SafetensorsWriter w = SafetensorsWriter.create(file, List.of(
                SafetensorsWriter.Entry.of("e", DType.FLOAT16, 0, 3),
                SafetensorsWriter.Entry.of("s", DType.INT64)), Map.of())) {
            w.write("s", ByteBuffer.wrap(new byte[] {9, 0, 0, 0, 0, 0, 0, 0}));
        }
        try (SafetensorsFile f = SafetensorsFile.open(file); Tensor e = f.load("e"); Tensor s = f.load("s")) {
            assertThat(Tensors.shape(e)).containsExactly(0, 3);
            assertThat(Tensors.shape(s)).isEmpty();
            assertThat(s.item_long()).isEqualTo(9);
        }
    }

    @Test
    void concurrentLoadsSeeTheRightBytes() throws Exception {
        int n = 16;
        List<SafetensorsWriter.Entry> entries = new ArrayList<>();
        List<byte[]> contents = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            entries.add(SafetensorsWriter.Entry.of("t" + i, DType.INT32, 64));
            contents.add(randomBytes(256, 100 + i));
        }
        Path file = dir.resolve("concurrent.safetensors");
        try (SafetensorsWriter w = SafetensorsWriter.create(file, entries, Map.of())) {
            for (int i = 0; i < n; i++) {
                w.write("t" + i, ByteBuffer.wrap(contents.get(i)));
            }
        }
        try (SafetensorsFile f = SafetensorsFile.open(file)) {
            java.util.concurrent.ExecutorService pool = java.util.concurrent.Executors.newFixedThreadPool(4);
            try {
                List<java.util.concurrent.Future<Boolean>> results = new ArrayList<>();
                for (int k = 0; k < 400; k++) {
                    int i = k % n;
                    results.add(pool.submit(() -> {
                        try (Tensor t = f.load("t" + i)) {
                            return Arrays.equals(TestBytes.bytesOf(t), contents.get(i));
                        }
                    }));
                }
                for (java.util.concurrent.Future<Boolean> r : results) {
                    assertThat(r.get()).isTrue();
                }
            } finally {
                pool.shutdown();
            }
        }
    }
}
