package io.github.bigmodel.cli;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.github.bigmodel.chatglm.ChatGLMConfig;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.chatglm.model.ForwardInput;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.Module;
import io.github.bigmodel.core.quant.Precision;
import io.github.bigmodel.core.quant.QuantizedLinear;
import io.github.bigmodel.core.quant.QuantizedWeight;
import io.github.bigmodel.core.testing.ReferenceTree;
import io.github.bigmodel.safetensors.Checkpoint;
import io.github.bigmodel.safetensors.SafetensorsFile;
import io.github.bigmodel.safetensors.ShardedCheckpointWriter;
import io.github.bigmodel.safetensors.TensorInfo;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.stream.Stream;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestFactory;
import org.junit.jupiter.api.io.TempDir;

class ConvertCommandTest {

    private static final ObjectMapper JSON = new ObjectMapper();
    private static final String[] MODELS = {"chatglm3-6b-tiny", "chatglm-6b-tiny"};

    /**
     * int8/int4 from the .bin shards: the written codes and scales are those quantizing at load time holds, and the
     * converted folder loaded with the same precision gives the logits of quantizing at load time, bit for bit.
     */
    @TestFactory
    Stream<DynamicTest> quantizedConversionLoadsBackBitForBit(@TempDir Path tmp) {
        List<DynamicTest> tests = new ArrayList<>();
        for (String model : MODELS) {
            for (Precision precision : new Precision[] {Precision.INT8, Precision.INT4}) {
                String name = model + " " + precision.name().toLowerCase(Locale.ROOT);
                tests.add(DynamicTest.dynamicTest(name, () -> checkQuantized(model, precision,
                        tmp.resolve(name.replace(' ', '-')))));
            }
        }
        return tests.stream();
    }

    private static void checkQuantized(String modelName, Precision precision, Path out) throws Exception {
        Path folder = ReferenceTree.models().resolve(modelName);
        CliTest.Run r = CliTest.run("convert", folder.resolve("pytorch_model.bin.index.json").toString(),
                out.toString(), "--precision", precision.name().toLowerCase(Locale.ROOT), "--shard-size", "40KB",
                "--json");
        assertThat(r.code()).as(r.err()).isZero();
        assertThat(r.err()).as("no progress bar without a terminal or --progress").isEmpty();
        assertThat(r.json().get("shards").size()).isGreaterThan(1);
        assertThat(out.resolve(ShardedCheckpointWriter.INDEX_FILE)).exists();
        assertThat(Files.readAllBytes(out.resolve("config.json")))
                .isEqualTo(Files.readAllBytes(folder.resolve("config.json")));

        ChatGLMConfig config = ChatGLMConfig.fromJson(folder.resolve("config.json"));
        long[] ids = greedyPromptIds(folder);
        ChatGLMLanguageModel atLoad = ChatGLMLanguageModel.create(config, DType.FLOAT32);
        ChatGLMLanguageModel converted = ChatGLMLanguageModel.create(config, DType.FLOAT32);
        try (PointerScope scope = new PointerScope();
             Checkpoint original = Checkpoint.open(folder);
             Checkpoint written = Checkpoint.open(out)) {
            atLoad.loadWeights(n -> original.contains(n) ? original.load(n) : null, n -> Device.CPU, DType.FLOAT32,
                    d -> precision);
            converted.loadWeights(n -> written.contains(n) ? written.load(n) : null, n -> Device.CPU, DType.FLOAT32,
                    d -> precision);
            int linears = 0;
            for (Map.Entry<String, Module> m : atLoad.namedModules().entrySet()) {
                if (m.getValue() instanceof QuantizedLinear && ((QuantizedLinear) m.getValue()).isQuantized()) {
                    QuantizedWeight q = ((QuantizedLinear) m.getValue()).quantizedWeight();
                    Tensor codes = written.load(m.getKey() + ".weight");
                    assertThat(DType.of(codes.scalar_type())).isEqualTo(DType.INT8);
                    assertThat(torch.equal(codes, q.packed())).as(m.getKey() + " codes").isTrue();
                    assertThat(torch.equal(written.load(m.getKey() + ".weight_scale"), q.scale()))
                            .as(m.getKey() + " scales").isTrue();
                    linears++;
                }
            }
            assertThat(linears).isEqualTo(4 * config.numLayers());
            assertThat(written.metadata()).isNotNull();
            try (SafetensorsFile shard = SafetensorsFile.open(written.shards().get(0))) {
                assertThat(shard.metadata()).containsEntry("quantization_bit", Integer.toString(precision.bits()));
            }
            Tensor expected = atLoad.forward(ForwardInput.builder(new long[][] {ids}).build());
            Tensor got = converted.forward(ForwardInput.builder(new long[][] {ids}).build());
            assertThat(torch.equal(got, expected)).as("logits bit for bit").isTrue();
        } finally {
            atLoad.toMeta();
            converted.toMeta();
        }
    }

    /** bf16/fp16 of the float32 fixture are, tensor for tensor, the fixture's own rounded copies. */
    @TestFactory
    Stream<DynamicTest> floatConversionMatchesTheRoundedFixtures(@TempDir Path tmp) {
        List<DynamicTest> tests = new ArrayList<>();
        for (String precision : new String[] {"bf16", "fp16"}) {
            tests.add(DynamicTest.dynamicTest(precision, () -> {
                Path source = ReferenceTree.models().resolve("chatglm3-6b-tiny");
                Path rounded = ReferenceTree.models().resolve("chatglm3-6b-tiny-" + precision);
                Path out = tmp.resolve(precision);
                CliTest.Run r = CliTest.run("convert", source.toString(), out.toString(), "--precision", precision);
                assertThat(r.code()).as(r.err()).isZero();
                assertThat(r.out()).contains("Wrote ").contains(out.toString());
                assertSameTensors(out, rounded.resolve("model.safetensors"));
                String dtype = JSON.readTree(rounded.resolve("config.json").toFile()).get("torch_dtype").asText();
                assertThat(JSON.readTree(out.resolve("config.json").toFile()).get("torch_dtype").asText())
                        .isEqualTo(dtype);
            }));
        }
        return tests.stream();
    }

    /** Re-sharding only: every tensor as stored, each shard within the limit unless one tensor is larger. */
    @Test
    void reshardsBinShardsIntoSafetensorsWithinTheShardSize(@TempDir Path tmp) throws Exception {
        Path folder = ReferenceTree.models().resolve("chatglm-6b-tiny");
        Path out = tmp.resolve("out");
        long limit = 50_000;
        CliTest.Run r = CliTest.run("convert", folder.resolve("pytorch_model.bin.index.json").toString(),
                out.toString(), "--shard-size", "50KB", "--json");
        assertThat(r.code()).as(r.err()).isZero();
        assertSameTensors(out, folder.resolve("model.safetensors"));
        try (Checkpoint written = Checkpoint.open(out)) {
            assertThat(written.shards()).hasSize(r.json().get("shards").size()).hasSizeGreaterThan(1);
            assertThat(written.totalBytes()).isEqualTo(r.json().get("total_bytes").asLong());
            for (Path shard : written.shards()) {
                long bytes = 0;
                int count = 0;
                for (TensorInfo t : written.tensors()) {
                    if (t.file().equals(shard)) {
                        bytes += t.byteLength();
                        count++;
                    }
                }
                assertThat(bytes <= limit || count == 1).as(shard + " holds " + bytes + " bytes").isTrue();
            }
        }
    }

    @Test
    void refusesANonEmptyOutUnlessForcedAndReplacesTheCheckpointThen(@TempDir Path tmp) throws Exception {
        Path source = ReferenceTree.models().resolve("chatglm3-6b-tiny");
        Path out = Files.createDirectories(tmp.resolve("out"));
        Files.writeString(out.resolve("model-00009-of-00009.safetensors"), "stale");
        Files.writeString(out.resolve("notes.txt"), "mine");
        CliTest.Run refused = CliTest.run("convert", source.toString(), out.toString());
        assertThat(refused.code()).isNotZero();
        assertThat(refused.err().strip().lines().count()).isEqualTo(1);
        assertThat(refused.err()).startsWith("error: ").contains("not empty").contains("--force");
        assertThat(out.resolve(ShardedCheckpointWriter.INDEX_FILE)).doesNotExist();

        CliTest.Run forced = CliTest.run("convert", source.toString(), out.toString(), "--force", "--progress");
        assertThat(forced.code()).as(forced.err()).isZero();
        assertThat(out.resolve("model-00009-of-00009.safetensors")).as("old shards removed").doesNotExist();
        assertThat(out.resolve("notes.txt")).hasContent("mine");
        assertSameTensors(out, source.resolve("model.safetensors"));
        // --progress draws on stderr (the bar ends at 100%), never on stdout.
        assertThat(forced.err()).contains("Converting").contains("100%").contains("shard 3/3");
        assertThat(forced.out()).doesNotContain("Converting");
        assertThat(leftovers(tmp)).isEmpty();

        CliTest.Run self = CliTest.run("convert", out.toString(), out.toString(), "--force");
        assertThat(self.code()).isNotZero();
        assertThat(self.err()).contains("source's own folder");
    }

    @Test
    void jsonOutputHasNoProgressEvenWhenAskedFor(@TempDir Path tmp) throws Exception {
        Path source = ReferenceTree.models().resolve("chatglm3-6b-tiny");
        CliTest.Run r = CliTest.run("convert", source.toString(), tmp.resolve("out").toString(), "--json",
                "--progress");
        assertThat(r.code()).as(r.err()).isZero();
        assertThat(r.err()).isEmpty();
        assertThat(r.json().get("precision").asText()).isEqualTo("as stored");
    }

    /** Every failure is one line on stderr with a non-zero exit, and leaves no index or half-written folder. */
    @TestFactory
    Stream<DynamicTest> errorsAreOneLineAndLeaveNothingBehind(@TempDir Path tmp) throws Exception {
        Path good = ReferenceTree.models().resolve("chatglm3-6b-tiny");
        Path damaged = Files.createDirectories(tmp.resolve("damaged"));
        for (String f : new String[] {"config.json", "model.safetensors.index.json", "model-00001-of-00003.safetensors",
                "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"}) {
            Files.copy(good.resolve(f), damaged.resolve(f));
        }
        byte[] shard = Files.readAllBytes(damaged.resolve("model-00002-of-00003.safetensors"));
        Files.write(damaged.resolve("model-00002-of-00003.safetensors"),
                java.util.Arrays.copyOf(shard, shard.length - 100));
        Path noConfig = Files.createDirectories(tmp.resolve("no-config"));
        Files.copy(good.resolve("model.safetensors"), noConfig.resolve("model.safetensors"));
        record Case(String name, String expected, String... args) {
        }
        List<Case> cases = List.of(
                new Case("missing input", "nothing-here", tmp.resolve("nothing-here").toString(), "OUT"),
                new Case("damaged shard", "model-00002-of-00003.safetensors", damaged.toString(), "OUT"),
                new Case("bad shard size", "--shard-size", good.toString(), "OUT", "--shard-size", "2 potatoes"),
                new Case("zero shard size", "--shard-size", good.toString(), "OUT", "--shard-size", "0GB"),
                new Case("bad precision", "--precision", good.toString(), "OUT", "--precision", "int3"),
                new Case("int8 without config.json", "config.json", noConfig.toString(), "OUT", "--precision", "int8"),
                new Case("missing OUT argument", "'OUT' (see 'bigmodel convert --help')", good.toString()));
        List<DynamicTest> tests = new ArrayList<>();
        for (Case c : cases) {
            tests.add(DynamicTest.dynamicTest(c.name, () -> {
                Path workDir = Files.createDirectories(tmp.resolve("work-" + c.name.replace(' ', '-')));
                Path out = workDir.resolve("out");
                List<String> args = new ArrayList<>(List.of("convert"));
                for (String a : c.args) {
                    args.add(a.equals("OUT") ? out.toString() : a);
                }
                CliTest.Run r = CliTest.run(args.toArray(String[]::new));
                assertThat(r.code()).isNotZero();
                assertThat(r.err().strip().lines().count()).as(r.err()).isEqualTo(1);
                assertThat(r.err()).startsWith("error: ").contains(c.expected);
                assertThat(out).doesNotExist();
                assertThat(leftovers(workDir)).isEmpty();
            }));
        }
        return tests.stream();
    }

    private static void assertSameTensors(Path converted, Path reference) {
        try (PointerScope scope = new PointerScope();
             Checkpoint got = Checkpoint.open(converted);
             Checkpoint expected = Checkpoint.open(reference)) {
            assertThat(got.names()).containsExactlyInAnyOrderElementsOf(expected.names());
            for (String name : expected.names()) {
                assertThat(got.info(name).dtype()).as(name).isEqualTo(expected.info(name).dtype());
                assertThat(torch.equal(got.load(name), expected.load(name))).as(name).isTrue();
            }
        }
    }

    /** Hidden staging folders left beside OUT. */
    private static List<Path> leftovers(Path dir) throws Exception {
        try (Stream<Path> s = Files.list(dir)) {
            return s.filter(p -> p.getFileName().toString().contains(".converting-")).toList();
        }
    }

    private static long[] greedyPromptIds(Path folder) throws Exception {
        JsonNode cases = JSON.readTree(folder.resolve("expected.json").toFile()).get("cases");
        for (JsonNode c : cases) {
            if (c.get("kind").asText().equals("greedy")) {
                long[] ids = new long[c.get("prompt_ids").size()];
                for (int i = 0; i < ids.length; i++) {
                    ids[i] = c.get("prompt_ids").get(i).asLong();
                }
                return ids;
            }
        }
        throw new AssertionError("no greedy case in " + folder);
    }
}
