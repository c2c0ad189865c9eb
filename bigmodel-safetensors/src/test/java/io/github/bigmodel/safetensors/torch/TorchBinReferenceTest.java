package io.github.bigmodel.safetensors.torch;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Tensors;
import io.github.bigmodel.core.testing.ReferenceTree;
import io.github.bigmodel.safetensors.TensorInfo;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;
import java.util.stream.Stream;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.pytorch.Tensor;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;

/**
 * Every torch.save shard of the reference models against the same tensors in the folder's model.safetensors,
 * read here with a minimal test-only safetensors reader.
 */
class TorchBinReferenceTest {

    private static final ObjectMapper JSON = new ObjectMapper();

    /** A tensor of the reference safetensors file: dtype, shape, raw bytes. */
    private record Expected(DType dtype, long[] shape, byte[] bytes) {
    }

    static List<Path> shards() throws IOException {
        List<Path> shards = new ArrayList<>();
        try (Stream<Path> dirs = Files.list(ReferenceTree.models())) {
            for (Path dir : dirs.filter(Files::isDirectory).sorted().toList()) {
                try (Stream<Path> files = Files.list(dir)) {
                    files.filter(p -> p.getFileName().toString().matches("pytorch_model-.*\\.bin"))
                            .sorted().forEach(shards::add);
                }
            }
        }
        return shards;
    }

    @TestFactory
    Stream<DynamicTest> everyShardMatchesSafetensors() throws IOException {
        List<Path> shards = shards();
        assertThat(shards).as("reference .bin shards").isNotEmpty();
        return shards.stream().map(shard -> DynamicTest.dynamicTest(
                shard.getParent().getFileName() + "/" + shard.getFileName(), () -> checkShard(shard)));
    }

    private static void checkShard(Path shard) throws IOException {
        Path dir = shard.getParent();
        JsonNode weightMap = JSON.readTree(dir.resolve("pytorch_model.bin.index.json").toFile()).get("weight_map");
        TreeSet<String> names = new TreeSet<>();
        for (Iterator<Map.Entry<String, JsonNode>> it = weightMap.fields(); it.hasNext();) {
            Map.Entry<String, JsonNode> e = it.next();
            if (e.getValue().asText().equals(shard.getFileName().toString())) {
                names.add(e.getKey());
            }
        }
        assertThat(names).as("index entries for " + shard.getFileName()).isNotEmpty();
        Path safetensors = dir.resolve("model.safetensors");
        List<Tensor> loaded = new ArrayList<>();
        List<byte[]> expectedBytes = new ArrayList<>();
        try (TorchBinFile bin = TorchBinFile.open(shard)) {
            assertThat(new TreeSet<>(bin.tensors().stream().map(TensorInfo::name).toList()))
                    .as("tensors of " + shard.getFileName()).isEqualTo(names);
            for (String name : names) {
                Expected want = readSafetensors(safetensors, name);
                TensorInfo info = bin.info(name);
                assertThat(info.dtype()).as(name).isEqualTo(want.dtype());
                assertThat(info.shape()).as(name).containsExactly(want.shape());
                assertThat(info.byteLength()).as(name).isEqualTo(want.bytes().length);
                assertThat(info.file()).isEqualTo(shard);
                // Every reference tensor owns a contiguous storage, so its bytes sit at fileOffset in the zip.
                assertThat(readBytes(shard, info.fileOffset(), (int) info.byteLength())).as(name + " at fileOffset")
                        .isEqualTo(want.bytes());
                Tensor t = bin.load(name);
                assertThat(Tensors.shape(t)).as(name).containsExactly(want.shape());
                // Compared by value: DType.of(ScalarType) does not recognise the enum instances JavaCPP returns here.
                assertThat(t.scalar_type().value).as(name).isEqualTo(want.dtype().scalarType().value);
                assertThat(tensorBytes(t)).as(name + " bytes").isEqualTo(want.bytes());
                // Zero-copy: the view points into the mapping of the file, so addresses differ as file offsets do.
                if (!loaded.isEmpty()) {
                    Tensor first = loaded.get(0);
                    TensorInfo firstInfo = bin.info(bin.tensors().stream().map(TensorInfo::name)
                            .filter(n -> n.equals(names.first())).findFirst().orElseThrow());
                    assertThat(t.data_ptr().address() - first.data_ptr().address()).as(name + " address")
                            .isEqualTo(info.fileOffset() - firstInfo.fileOffset());
                }
                loaded.add(t);
                expectedBytes.add(want.bytes());
            }
        }
        // Views outlive the file object.
        for (int i = 0; i < loaded.size(); i++) {
            assertThat(tensorBytes(loaded.get(i))).isEqualTo(expectedBytes.get(i));
            loaded.get(i).close();
        }
    }

    static byte[] tensorBytes(Tensor t) {
        try (Tensor c = t.contiguous()) {
            long n = c.nbytes();
            byte[] b = new byte[(int) n];
            new BytePointer(c.data_ptr()).capacity(n).get(b);
            return b;
        }
    }

    private static byte[] readBytes(Path file, long offset, int len) throws IOException {
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            ByteBuffer b = ByteBuffer.allocate(len);
            while (b.hasRemaining()) {
                if (ch.read(b, offset + b.position()) < 0) {
                    throw new IOException("short read");
                }
            }
            return b.array();
        }
    }

    /** Test-only safetensors reading: 8-byte little-endian header length N, JSON header, data at 8 + N + begin. */
    private static Expected readSafetensors(Path file, String name) throws IOException {
        long n = ByteBuffer.wrap(readBytes(file, 0, 8)).order(ByteOrder.LITTLE_ENDIAN).getLong();
        JsonNode header = JSON.readTree(readBytes(file, 8, (int) n));
        JsonNode t = header.get(name);
        assertThat(t).as(name + " in " + file.getFileName()).isNotNull();
        long[] shape = new long[t.get("shape").size()];
        for (int i = 0; i < shape.length; i++) {
            shape[i] = t.get("shape").get(i).asLong();
        }
        long begin = t.get("data_offsets").get(0).asLong();
        long end = t.get("data_offsets").get(1).asLong();
        return new Expected(DType.fromSafetensors(t.get("dtype").asText()), shape,
                readBytes(file, 8 + n + begin, (int) (end - begin)));
    }
}
