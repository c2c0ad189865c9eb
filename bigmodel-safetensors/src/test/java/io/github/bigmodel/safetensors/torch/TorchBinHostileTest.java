package io.github.bigmodel.safetensors.torch;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.catchThrowableOfType;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Tensors;
import io.github.bigmodel.safetensors.CheckpointException;
import io.github.bigmodel.safetensors.CheckpointException.Reason;
import io.github.bigmodel.safetensors.TensorInfo;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.stream.Stream;
import org.bytedeco.pytorch.Tensor;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestFactory;
import org.junit.jupiter.api.io.TempDir;
import io.github.bigmodel.safetensors.testing.TestPickle;
import io.github.bigmodel.safetensors.testing.TestZip;

/** Damaged and hostile torch.save files built byte by byte: each must fail with a typed, named error. */
class TorchBinHostileTest {

    @TempDir
    Path dir;

    private record Case(String name, byte[] file, Reason reason, String messagePart) {
    }

    /** 8 floats 0, 0.5, 1, ... 3.5 as little-endian bytes. */
    private static byte[] eightFloats() {
        ByteBuffer b = ByteBuffer.allocate(32).order(ByteOrder.LITTLE_ENDIAN);
        for (int i = 0; i < 8; i++) {
            b.putFloat(i * 0.5f);
        }
        return b.array();
    }

    private static byte[] zip(byte[] pickle, String... extra) {
        TestZip z = new TestZip().stored("archive/data.pkl", pickle).stored("archive/data/0", eightFloats());
        for (int i = 0; i + 1 < extra.length; i += 2) {
            z.stored("archive/" + extra[i], extra[i + 1].getBytes(StandardCharsets.US_ASCII));
        }
        return z.stored("archive/version", "3\n".getBytes(StandardCharsets.US_ASCII)).bytes();
    }

    private static byte[] goodPickle() {
        return new TestPickle().beginDict()
                .tensor("w", "FloatStorage", "0", 8, 0, new long[] {2, 4}, new long[] {4, 1})
                .endDict().bytes();
    }

    private static byte[] pickleWithGlobal(boolean stackGlobal, String module, String name) {
        TestPickle p = new TestPickle().beginDict().str("x");
        if (stackGlobal) {
            p.stackGlobal(module, name);
        } else {
            p.global(module, name);
        }
        return p.mark().str("print(1)").tuple().op('R').endDict().bytes();
    }

    private static List<Case> cases() {
        byte[] good = zip(goodPickle());
        byte[] pickle = goodPickle();
        byte[] truncatedPickle = Arrays.copyOf(pickle, pickle.length / 2);
        byte[] unknownOp = new TestPickle().beginDict().op(0x81).endDict().bytes();
        return List.of(
                new Case("not a zip", "hello, this is not a checkpoint at all".getBytes(StandardCharsets.US_ASCII),
                        Reason.UNKNOWN_FORMAT, "not a zip"),
                new Case("empty file", new byte[0], Reason.UNKNOWN_FORMAT, "too short"),
                new Case("truncated zip", Arrays.copyOf(good, good.length - 40), Reason.TRUNCATED,
                        "end of central directory"),
                new Case("zip cut inside the entries", Arrays.copyOf(good, 100), Reason.TRUNCATED, "zip"),
                new Case("GLOBAL builtins.eval", zip(pickleWithGlobal(false, "builtins", "eval")),
                        Reason.UNSUPPORTED_CONTENT, "refusing to load pickled object builtins.eval"),
                new Case("GLOBAL os.system", zip(pickleWithGlobal(false, "os", "system")),
                        Reason.UNSUPPORTED_CONTENT, "refusing to load pickled object os.system"),
                new Case("STACK_GLOBAL builtins.eval", zip(pickleWithGlobal(true, "builtins", "eval")),
                        Reason.UNSUPPORTED_CONTENT, "refusing to load pickled object builtins.eval"),
                new Case("STACK_GLOBAL os.system", zip(pickleWithGlobal(true, "os", "system")),
                        Reason.UNSUPPORTED_CONTENT, "refusing to load pickled object os.system"),
                new Case("missing storage entry", zip(new TestPickle().beginDict()
                        .tensor("w", "FloatStorage", "7", 8, 0, new long[] {8}, new long[] {1})
                        .endDict().bytes()), Reason.MISSING_TENSOR, "archive/data/7"),
                new Case("size reaches past storage", zip(new TestPickle().beginDict()
                        .tensor("w", "FloatStorage", "0", 8, 0, new long[] {3, 4}, new long[] {4, 1})
                        .endDict().bytes()), Reason.OFFSET_OUT_OF_RANGE, "reach element 11"),
                new Case("stride reaches past storage", zip(new TestPickle().beginDict()
                        .tensor("w", "FloatStorage", "0", 8, 0, new long[] {2, 2}, new long[] {1, 7})
                        .endDict().bytes()), Reason.OFFSET_OUT_OF_RANGE, "reach element 8"),
                new Case("offset reaches past storage", zip(new TestPickle().beginDict()
                        .tensor("w", "FloatStorage", "0", 8, 5, new long[] {4}, new long[] {1})
                        .endDict().bytes()), Reason.OFFSET_OUT_OF_RANGE, "reach element 8"),
                new Case("storage numel larger than entry", zip(new TestPickle().beginDict()
                        .tensor("w", "FloatStorage", "0", 1 << 20, 0, new long[] {1 << 20}, new long[] {1})
                        .endDict().bytes()), Reason.SIZE_MISMATCH, "holds 32 bytes"),
                new Case("truncated pickle", zip(truncatedPickle), Reason.TRUNCATED, "data.pkl"),
                new Case("unknown opcode", zip(unknownOp), Reason.UNSUPPORTED_CONTENT, "opcode 0x81"),
                new Case("byteorder big", zip(goodPickle(), "byteorder", "big"), Reason.UNSUPPORTED_CONTENT,
                        "byteorder is 'big'"),
                new Case("top level is a list", zip(new TestPickle().proto(2).op(']').op('.').bytes()),
                        Reason.UNSUPPORTED_CONTENT, "not a dict of tensors"),
                new Case("no data.pkl", new TestZip().stored("archive/data/0", eightFloats()).bytes(),
                        Reason.UNKNOWN_FORMAT, "data.pkl"),
                new Case("dict containing itself", zip(new TestPickle().proto(2).op('}').op('q').op(0)
                        .str("self").op('h').op(0).op('s').op('.').bytes()),
                        Reason.UNSUPPORTED_CONTENT, "nested deeper"),
                new Case("huge string length", zip(new TestPickle().proto(2).op('X')
                        .raw((byte) 0xff, (byte) 0xff, (byte) 0xff, (byte) 0x7f).bytes()),
                        Reason.TRUNCATED, "runs past the pickle"),
                new Case("memo get of nothing", zip(new TestPickle().proto(2).op('h').op(9).op('.').bytes()),
                        Reason.UNSUPPORTED_CONTENT, "memo has no entry 9"));
    }

    @TestFactory
    Stream<DynamicTest> hostileFilesGiveTypedErrors() {
        return cases().stream().map(c -> DynamicTest.dynamicTest(c.name(), () -> {
            Path file = dir.resolve(c.name().replace(' ', '_') + ".bin");
            Files.write(file, c.file());
            CheckpointException e = catchThrowableOfType(CheckpointException.class, () -> TorchBinFile.open(file));
            assertThat(e).as(c.name()).isNotNull();
            assertThat(e.reason()).as(e.getMessage()).isEqualTo(c.reason());
            assertThat(e.file()).isEqualTo(file);
            assertThat(e.getMessage()).contains(file.toString()).contains(c.messagePart());
        }));
    }

    @Test
    void sharedStorageStridedViewsAndSkippedValues() throws IOException {
        byte[] pickle = new TestPickle().beginDict()
                .tensor("a", "FloatStorage", "0", 8, 0, new long[] {2, 4}, new long[] {4, 1})
                .tensor("tail", "FloatStorage", "0", 8, 5, new long[] {3}, new long[] {1})
                .tensor("transposed", "FloatStorage", "0", 8, 0, new long[] {4, 2}, new long[] {1, 4})
                .tensor("scalar", "FloatStorage", "0", 8, 7, new long[] {}, new long[] {})
                .str("step").integer(1000)
                .str("names").op(']').str("x").op('a')
                .str("nested").op('}').str("inner").op('}').mark()
                .tensor("w", "FloatStorage", "0", 8, 2, new long[] {2}, new long[] {3})
                .op('u').op('s').op('u').op('.').bytes();
        Path file = dir.resolve("shared.bin");
        Files.write(file, zip(pickle));
        Tensor a;
        Tensor tail;
        Tensor transposed;
        Tensor nested;
        try (TorchBinFile f = TorchBinFile.open(file)) {
            assertThat(f.tensors().stream().map(TensorInfo::name))
                    .containsExactly("a", "tail", "transposed", "scalar", "nested.inner.w");
            long dataStart = f.info("a").fileOffset();
            assertThat(dataStart % 64).isZero();
            assertThat(f.info("tail").fileOffset()).isEqualTo(dataStart + 5 * 4);
            assertThat(f.info("tail").byteLength()).isEqualTo(12);
            assertThat(f.info("transposed").fileOffset()).as("non-contiguous: storage start").isEqualTo(dataStart);
            assertThat(f.info("nested.inner.w").dtype()).isEqualTo(DType.FLOAT32);
            assertThat(f.contains("step")).isFalse();
            a = f.load("a");
            tail = f.load("tail");
            transposed = f.load("transposed");
            nested = f.load("nested.inner.w");
            try (Tensor scalar = f.load("scalar")) {
                assertThat(Tensors.shape(scalar)).isEmpty();
                assertThat(floats(scalar)).containsExactly(3.5f);
            }
        }
        assertThat(floats(a)).containsExactly(0f, 0.5f, 1f, 1.5f, 2f, 2.5f, 3f, 3.5f);
        assertThat(floats(tail)).containsExactly(2.5f, 3f, 3.5f);
        assertThat(Tensors.shape(transposed)).containsExactly(4, 2);
        assertThat(floats(transposed)).containsExactly(0f, 2f, 0.5f, 2.5f, 1f, 3f, 1.5f, 3.5f);
        assertThat(floats(nested)).containsExactly(1f, 2.5f);
        assertThat(a.data_ptr().address() + 5 * 4).isEqualTo(tail.data_ptr().address());
    }

    @Test
    void deflatedAndUnalignedEntriesAreCopied() throws IOException {
        byte[] pickle = goodPickle();
        Path file = dir.resolve("deflated.bin");
        Files.write(file, new TestZip().deflated("archive/data.pkl", pickle)
                .deflated("archive/data/0", eightFloats()).bytes());
        try (TorchBinFile f = TorchBinFile.open(file)) {
            Tensor w = f.load("w");
            assertThat(Tensors.shape(w)).containsExactly(2, 4);
            assertThat(floats(w)).containsExactly(0f, 0.5f, 1f, 1.5f, 2f, 2.5f, 3f, 3.5f);
        }
    }

    @Test
    void deflatedStorageOfWrongSizeIsRejectedOnLoad() throws IOException {
        // The central directory claims 32 bytes but the stream inflates to 16.
        byte[] bytes = new TestZip().stored("archive/data.pkl", goodPickle())
                .deflated("archive/data/0", Arrays.copyOf(eightFloats(), 16)).bytes();
        patchUncompressedSize(bytes, "archive/data/0", 32);
        Path file = dir.resolve("short-deflate.bin");
        Files.write(file, bytes);
        try (TorchBinFile f = TorchBinFile.open(file)) {
            CheckpointException e = catchThrowableOfType(CheckpointException.class, () -> f.load("w"));
            assertThat(e.reason()).isEqualTo(Reason.SIZE_MISMATCH);
            assertThat(e.tensor()).isEqualTo("w");
        }
    }

    @Test
    void missingTensorAndClosedFile() throws IOException {
        Path file = dir.resolve("one.bin");
        Files.write(file, zip(goodPickle()));
        TorchBinFile f = TorchBinFile.open(file);
        CheckpointException e = catchThrowableOfType(CheckpointException.class, () -> f.load("nope"));
        assertThat(e.reason()).isEqualTo(Reason.MISSING_TENSOR);
        assertThat(e.tensor()).isEqualTo("nope");
        f.close();
        assertThat(catchThrowableOfType(IllegalStateException.class, () -> f.load("w"))).hasMessageContaining("closed");
    }

    /** Sets the uncompressed size of {@code name} in both its local and central headers. */
    private static void patchUncompressedSize(byte[] zip, String name, int size) {
        byte[] n = name.getBytes(StandardCharsets.US_ASCII);
        ByteBuffer b = ByteBuffer.wrap(zip).order(ByteOrder.LITTLE_ENDIAN);
        for (int i = 0; i + 46 < zip.length; i++) {
            int sig = b.getInt(i);
            if (sig == 0x04034b50 && matches(zip, i + 30, n)) {
                b.putInt(i + 22, size);
            } else if (sig == 0x02014b50 && matches(zip, i + 46, n)) {
                b.putInt(i + 24, size);
            }
        }
    }

    private static boolean matches(byte[] zip, int at, byte[] n) {
        return at + n.length <= zip.length && Arrays.equals(zip, at, at + n.length, n, 0, n.length);
    }

    private static float[] floats(Tensor t) {
        byte[] b = TorchBinReferenceTest.tensorBytes(t);
        ByteBuffer buf = ByteBuffer.wrap(b).order(ByteOrder.LITTLE_ENDIAN);
        float[] f = new float[b.length / 4];
        for (int i = 0; i < f.length; i++) {
            f[i] = buf.getFloat();
        }
        return f;
    }
}
