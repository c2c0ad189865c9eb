package io.github.bigmodel.safetensors;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.DynamicTest.dynamicTest;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Tensors;
import io.github.bigmodel.core.testing.ReferenceTree;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;

/** Reads every reference model's checkpoint: single file, safetensors shards, and the half-precision copies. */
class ReferenceCheckpointTest {

    private static final Pattern ROW = Pattern.compile("^\\| `([^`]+)` \\| (\\w+) \\| \\[([0-9, ]*)\\] \\|$");

    /** The "model tensors" table of each folder's section in the models README: name -> "DTYPE[dims]". */
    private static Map<String, String> readmeTensors(String folder) throws IOException {
        List<String> lines = Files.readAllLines(ReferenceTree.models().resolve("README.md"));
        Map<String, String> tensors = new LinkedHashMap<>();
        boolean inFolder = false;
        boolean inTable = false;
        for (String line : lines) {
            if (line.startsWith("### ")) {
                inFolder = line.equals("### `" + folder + "`");
                inTable = false;
            } else if (line.startsWith("<details><summary>")) {
                inTable = inFolder && line.contains("model tensors");
            } else if (line.startsWith("</details>")) {
                inTable = false;
            } else if (inTable) {
                Matcher m = ROW.matcher(line);
                if (m.matches()) {
                    tensors.put(m.group(1), m.group(2) + "[" + m.group(3) + "]");
                }
            }
        }
        return tensors;
    }

    private static String describe(TensorInfo t) {
        return t.dtype().safetensorsName() + Arrays.toString(t.shape()).replace("[", "[").replace("]", "]");
    }

    private static List<Path> folders(String file) throws IOException {
        try (Stream<Path> s = Files.list(ReferenceTree.models())) {
            return s.filter(p -> Files.isRegularFile(p.resolve(file))).sorted().collect(Collectors.toList());
        }
    }

    private static byte[] rawBytes(Tensor t) {
        return TestBytes.bytesOf(t);
    }

    @TestFactory
    List<DynamicTest> singleFileHeaderMatchesReadme() throws IOException {
        List<DynamicTest> tests = new ArrayList<>();
        for (Path folder : folders("model.safetensors")) {
            String name = folder.getFileName().toString();
            tests.add(dynamicTest(name, () -> {
                Map<String, String> expected = readmeTensors(name);
                assertThat(expected).as("README table for " + name).isNotEmpty();
                try (SafetensorsFile f = SafetensorsFile.open(folder.resolve("model.safetensors"))) {
                    Map<String, String> actual = new LinkedHashMap<>();
                    for (TensorInfo t : f.tensors()) {
                        actual.put(t.name(), describe(t));
                        assertThat(t.byteLength()).isEqualTo(t.dtype().bytesFor(t.numel()));
                        try (Tensor v = f.load(t.name())) {
                            assertThat(Tensors.shape(v)).containsExactly(t.shape());
                            assertThat(DType.of(v.scalar_type().intern())).isEqualTo(t.dtype());
                            assertThat(rawBytes(v)).isEqualTo(TestBytes.bytesOf(f.bytes(t.name())));
                        }
                    }
                    assertThat(actual).containsExactlyInAnyOrderEntriesOf(expected);
                    assertThat(f.metadata()).containsEntry("format", "pt");
                }
            }));
        }
        return tests;
    }

    @TestFactory
    List<DynamicTest> shardsEqualSingleFile() throws IOException {
        List<DynamicTest> tests = new ArrayList<>();
        for (Path folder : folders("model.safetensors.index.json")) {
            tests.add(dynamicTest(folder.getFileName().toString(), () -> {
                try (Checkpoint sharded = Checkpoint.open(folder);
                        Checkpoint single = Checkpoint.open(folder.resolve("model.safetensors"))) {
                    assertThat(sharded.source().getFileName().toString()).isEqualTo("model.safetensors.index.json");
                    assertThat(sharded.shards()).hasSizeGreaterThan(1);
                    assertThat(sharded.names()).containsExactlyInAnyOrderElementsOf(single.names());
                    assertThat(sharded.totalBytes()).isEqualTo(single.totalBytes());
                    assertThat(sharded.metadata().get("total_size")).isEqualTo(Long.toString(single.totalBytes()));
                    for (String name : single.names()) {
                        TensorInfo a = sharded.info(name);
                        TensorInfo b = single.info(name);
                        assertThat(describe(a)).as(name).isEqualTo(describe(b));
                        assertThat(a.file()).isEqualTo(sharded.shardOf(name));
                        try (Tensor x = sharded.load(name); Tensor y = single.load(name);
                                Tensor xf = x.view(-1); Tensor yf = y.view(-1);
                                Tensor xb = xf.view(ScalarType.Byte); Tensor yb = yf.view(ScalarType.Byte)) {
                            assertThat(torch.equal(xb, yb)).as(name).isTrue();
                        }
                    }
                }
            }));
        }
        return tests;
    }

    /** The bf16/fp16 folders are chatglm3-6b-tiny's weights rounded to that dtype (models README). */
    @TestFactory
    List<DynamicTest> halfPrecisionCopiesWidenExactly() {
        List<DynamicTest> tests = new ArrayList<>();
        Path fp32 = ReferenceTree.models().resolve("chatglm3-6b-tiny/model.safetensors");
        for (String suffix : List.of("bf16", "fp16")) {
            DType half = suffix.equals("bf16") ? DType.BFLOAT16 : DType.FLOAT16;
            tests.add(dynamicTest("chatglm3-6b-tiny-" + suffix, () -> {
                Path path = ReferenceTree.models().resolve("chatglm3-6b-tiny-" + suffix + "/model.safetensors");
                try (SafetensorsFile reference = SafetensorsFile.open(fp32);
                        SafetensorsFile rounded = SafetensorsFile.open(path)) {
                    assertThat(rounded.tensors()).hasSameSizeAs(reference.tensors());
                    for (TensorInfo t : rounded.tensors()) {
                        assertThat(t.dtype()).isEqualTo(half);
                        try (Tensor h = rounded.load(t.name()); Tensor f = reference.load(t.name());
                                Tensor widened = h.to(ScalarType.Float);
                                Tensor roundedRef = f.to(half.scalarType());
                                Tensor expected = roundedRef.to(ScalarType.Float)) {
                            assertThat(torch.equal(widened, expected)).as(t.name()).isTrue();
                        }
                    }
                }
            }));
        }
        return tests;
    }
}
