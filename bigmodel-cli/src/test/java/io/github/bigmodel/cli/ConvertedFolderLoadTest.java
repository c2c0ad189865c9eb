package io.github.bigmodel.cli;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.github.bigmodel.chatglm.ChatGLMConfig;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.chatglm.model.RandomCheckpoint;
import io.github.bigmodel.chatglm.tokenizer.ChatGLM3Tokenizer;
import io.github.bigmodel.chatglm.model.ForwardInput;
import io.github.bigmodel.chatglm.chat.ChatGLM;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Module;
import io.github.bigmodel.core.quant.Precision;
import io.github.bigmodel.core.quant.QuantizedLinear;
import io.github.bigmodel.core.testing.KernelAllowance;
import io.github.bigmodel.core.testing.ReferenceTree;
import io.github.bigmodel.dispatch.DispatchOptions;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.StringJoiner;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A folder written by {@code bigmodel convert --precision int8|int4} loads as stored through the device-map path
 * ({@code generate --precision ...}), and greedy generation from it equals quantizing the original at load time,
 * also with blocks offloaded to disk; its logits are the same bits under every placement (a CPU budget sweep, every
 * other block on disk, prefetch on and off).
 */
class ConvertedFolderLoadTest {

    @Test
    void convertedQuantizedFoldersGenerateLikeLoadTimeQuantization(@TempDir Path dir) throws Exception {
        Path source = ReferenceTree.models().resolve("chatglm3-6b-tiny");
        String ids = CliTest.firstForwardIds(source);
        // A CPU budget of a fifth of the checkpoint, so the sequential map puts blocks on disk.
        String budget = "cpu=" + java.nio.file.Files.size(source.resolve("model.safetensors")) / 5 / 1000 + "KB";
        for (String p : new String[] {"int8", "int4"}) {
            Path out = dir.resolve(p);
            CliTest.Run convert = CliTest.run("convert", source.toString(), out.toString(), "--precision", p);
            assertThat(convert.code()).as(convert.err()).isZero();
            CliTest.Run fromOriginal = CliTest.run("generate", "--model", source.toString(), "--ids", ids,
                    "--greedy", "--ignore-eos", "--max-new-tokens", "8", "--precision", p, "--json");
            assertThat(fromOriginal.code()).as(fromOriginal.err()).isZero();
            CliTest.Run fromConverted = CliTest.run("generate", "--model", out.toString(), "--ids", ids,
                    "--greedy", "--ignore-eos", "--max-new-tokens", "8", "--precision", p, "--json");
            assertThat(fromConverted.code()).as(fromConverted.err()).isZero();
            assertThat(fromConverted.json().get("output_ids")).as(p)
                    .isEqualTo(fromOriginal.json().get("output_ids"));
            CliTest.Run offloaded = CliTest.run("generate", "--model", out.toString(), "--ids", ids,
                    "--greedy", "--ignore-eos", "--max-new-tokens", "8", "--precision", p, "--json",
                    "--device-map", "sequential", "--max-memory", budget,
                    "--offload-folder", dir.resolve(p + "-offload").toString());
            assertThat(offloaded.code()).as(offloaded.err()).isZero();
            assertThat(offloaded.json().get("output_ids")).as(p + " offloaded")
                    .isEqualTo(fromOriginal.json().get("output_ids"));
        }
    }

    /**
     * Regression: a converted int8/int4 folder used to load only through {@code ChatGLM.load(dir)}; every dispatch
     * path without a precision skipped its 8 weight_scale tensors and failed with libtorch's "self and mat2 must
     * have the same dtype". Now it loads as stored through every entry point, each giving the logits (greedy ids
     * for the CLI) of quantizing the original at load time; asking a float precision dequantizes it.
     */
    @Test
    void convertedFoldersLoadAsStoredThroughEveryEntryPoint(@TempDir Path dir) throws Exception {
        // ChatGLM.load needs a tokenizer the model can embed: the reference tiny model's config with the fixture
        // tokenizer's vocabulary, random weights.
        Path source = dir.resolve("model");
        Files.createDirectories(source);
        Files.copy(ReferenceTree.tokenizer().resolve("tokenizer.model"), source.resolve("tokenizer.model"));
        int vocab = ChatGLM3Tokenizer.load(source.resolve("tokenizer.model")).vocabSize();
        ObjectNode json = (ObjectNode) new ObjectMapper().readTree(ReferenceTree.models()
                .resolve("chatglm3-6b-tiny").resolve("config.json").toFile());
        json.put("padded_vocab_size", vocab);
        Files.writeString(source.resolve("config.json"), json.toString(), StandardCharsets.UTF_8);
        ChatGLMConfig config = ChatGLMConfig.fromJson(source.resolve("config.json"));
        RandomCheckpoint.write(ChatGLMLanguageModel.create(config, DType.FLOAT32), source, DType.FLOAT32, 256 << 10,
                0.1, 5);
        // Any ids inside the tree's vocabulary: spread over it, read from its config.
        long[] ids = new long[8];
        StringJoiner cliIds = new StringJoiner(",");
        for (int i = 0; i < ids.length; i++) {
            ids[i] = (long) (i + 1) * (config.vocabSize() / 9);
            cliIds.add(Long.toString(ids[i]));
        }
        for (Precision p : new Precision[] {Precision.INT8, Precision.INT4}) {
            String name = p.name().toLowerCase(java.util.Locale.ROOT);
            Path out = dir.resolve(name);
            CliTest.Run convert = CliTest.run("convert", source.toString(), out.toString(), "--precision", name);
            assertThat(convert.code()).as(convert.err()).isZero();
            try (PointerScope scope = new PointerScope()) {
                Tensor expected;
                try (ChatGLM atLoad = ChatGLM.load(source, DispatchOptions.builder().deviceMap("{\"\": \"cpu\"}")
                        .dtype(DType.FLOAT32).cpuPrecision(p).build())) {
                    expected = logits(atLoad, ids);
                }
                try (ChatGLM plain = ChatGLM.load(out)) {
                    assertAllLinears(plain, p);
                    assertThat(torch.equal(logits(plain, ids), expected)).as(name + " ChatGLM.load(dir)").isTrue();
                }
                try (ChatGLM mapped = ChatGLM.load(out, DispatchOptions.builder().deviceMap("{\"\": \"cpu\"}")
                        .build())) {
                    assertAllLinears(mapped, p);
                    assertThat(torch.equal(logits(mapped, ids), expected)).as(name + " options, no precision")
                            .isTrue();
                }
                try (ChatGLM offloaded = ChatGLM.load(out, DispatchOptions.builder().strategy("sequential")
                        .maxMemory("cpu=100KB").offloadFolder(dir.resolve(name + "-offload")).build())) {
                    assertAllLinears(offloaded, p);
                    assertThat(offloaded.hfDeviceMap().devices()).as(name + " some blocks on disk")
                            .contains(io.github.bigmodel.core.Device.DISK);
                    assertThat(torch.equal(logits(offloaded, ids), expected)).as(name + " planned, on disk")
                            .isTrue();
                    // the stored codes and scales are read in place from the converted folder for each forward:
                    // nothing of a quantized layer is rewritten into the offload folder
                    Path folder = dir.resolve(name + "-offload");
                    if (java.nio.file.Files.isDirectory(folder)) {
                        try (java.util.stream.Stream<Path> files = java.nio.file.Files.list(folder)) {
                            assertThat(files.map(f -> f.getFileName().toString()))
                                    .noneMatch(f -> f.endsWith(".weight_scale.dat") || f.contains("dense"));
                        }
                    }
                }
                // Every placement of the stored codes computes the same bits: a CPU budget swept from nothing (all on
                // disk, read in place) to the whole folder (all mapped), prefetch on and off; between, the CPU's
                // codes are copies beside the disk's (Dispatcher's rule for maps with disk entries).
                long whole = 0;
                try (java.util.stream.Stream<Path> files = Files.list(out)) {
                    for (Path f : (Iterable<Path>) files::iterator) {
                        whole += Files.size(f);
                    }
                }
                java.util.Set<java.util.Set<io.github.bigmodel.core.Device>> kinds = new java.util.HashSet<>();
                for (int step = 0; step <= 12; step++) {
                    long budget = whole * step / 12;
                    try (ChatGLM placed = ChatGLM.load(out, DispatchOptions.builder().strategy("sequential")
                            .maxMemory("cpu=" + budget).prefetch(step % 2).build())) {
                        assertAllLinears(placed, p);
                        kinds.add(placed.hfDeviceMap().devices());
                        assertThat(torch.equal(logits(placed, ids), expected))
                                .as(name + " cpu=" + budget + " " + placed.hfDeviceMap().toJson()).isTrue();
                    }
                }
                assertThat(kinds).as(name + ": the sweep planned all-disk and all-cpu maps").contains(
                        java.util.Set.of(io.github.bigmodel.core.Device.DISK),
                        java.util.Set.of(io.github.bigmodel.core.Device.CPU));
                // The tiny model jumps from all on disk to all on the CPU between budgets: a mixed map by hand,
                // every other block on disk.
                com.fasterxml.jackson.databind.node.ObjectNode alternating = new ObjectMapper().createObjectNode();
                alternating.put("transformer.embedding", "cpu");
                alternating.put("transformer.rotary_pos_emb", "cpu");
                for (int i = 0; i < config.numLayers(); i++) {
                    alternating.put("transformer.encoder.layers." + i, i % 2 == 0 ? "disk" : "cpu");
                }
                alternating.put("transformer.encoder.final_layernorm", "cpu");
                alternating.put("transformer.output_layer", "cpu");
                for (int prefetch = 0; prefetch <= 1; prefetch++) {
                    try (ChatGLM mixed = ChatGLM.load(out, DispatchOptions.builder()
                            .deviceMap(alternating.toString()).prefetch(prefetch).build())) {
                        assertAllLinears(mixed, p);
                        assertThat(mixed.hfDeviceMap().devices()).containsExactlyInAnyOrder(
                                io.github.bigmodel.core.Device.CPU, io.github.bigmodel.core.Device.DISK);
                        assertThat(torch.equal(logits(mixed, ids), expected))
                                .as(name + " alternating blocks, prefetch " + prefetch).isTrue();
                    }
                }
                try (ChatGLM dequantized = ChatGLM.load(out, DispatchOptions.builder().deviceMap("{\"\": \"cpu\"}")
                        .cpuPrecision(Precision.FP32).build())) {
                    assertAllLinears(dequantized, Precision.FP32);
                    // codes * scales in float32 are the quantized layer's own weights: same logits up to the
                    // kernels' rounding (float32 sums in another order, and the native kernels' int16 rounding of
                    // each linear's input: KernelAllowance.logits)
                    double largest = expected.abs().max().item_double();
                    double worst = logits(dequantized, ids).sub(expected).abs().max().item_double();
                    assertThat(worst / largest).as(name + " dequantized")
                            .isLessThanOrEqualTo(2e-5 + KernelAllowance.logits(config.numLayers()));
                }
            }
            CliTest.Run fromOriginal = CliTest.run("generate", "--model", source.toString(), "--ids",
                    cliIds.toString(), "--greedy", "--ignore-eos", "--max-new-tokens", "6", "--precision", name,
                    "--json");
            assertThat(fromOriginal.code()).as(fromOriginal.err()).isZero();
            CliTest.Run asStored = CliTest.run("generate", "--model", out.toString(), "--ids", cliIds.toString(),
                    "--greedy", "--ignore-eos", "--max-new-tokens", "6", "--json");
            assertThat(asStored.code()).as(asStored.err()).isZero();
            assertThat(asStored.json().get("output_ids")).as(name + " CLI without --precision")
                    .isEqualTo(fromOriginal.json().get("output_ids"));
        }
    }

    private static Tensor logits(ChatGLM glm, long[] ids) {
        return glm.model().forward(ForwardInput.builder(new long[][] {ids}).build());
    }

    private static void assertAllLinears(ChatGLM glm, Precision p) {
        int n = 0;
        for (Module m : glm.model().namedModules().values()) {
            if (m instanceof QuantizedLinear) {
                assertThat(((QuantizedLinear) m).precision()).isEqualTo(p);
                n++;
            }
        }
        assertThat(n).isEqualTo(4 * glm.model().config().numLayers());
    }
}
