package io.github.bigmodel.benchmarks.decode;

import static org.assertj.core.api.Assertions.assertThat;

import io.github.bigmodel.chatglm.ChatGLMConfig;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.chatglm.generation.GenerationResult;
import io.github.bigmodel.chatglm.generation.Generator;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.Parameter;
import io.github.bigmodel.safetensors.Checkpoint;
import io.github.bigmodel.safetensors.TensorInfo;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Collectors;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The decode benchmark end to end on a tiny model of chatglm3-6b's architecture (2 layers, hidden 256): the
 * generated checkpoint has the model's names and shapes in bf16 shards, every row produces every column, and the
 * greedy ids equal a plain {@link Generator} run on the same weights loaded without dispatch.
 */
class DecodeProgramTest {

    @TempDir
    static Path dir;

    static Path model;
    static GenerateCheckpoint.Options written;

    @BeforeAll
    static void writeTinyCheckpoint() {
        model = dir.resolve("tiny");
        written = GenerateCheckpoint.Options.parse("--out", model.toString(), "--preset", "chatglm3-6b",
                "--shard-size", "256KB", "--chunk", "64KiB", "--seed", "5", "--set", "num_layers=2",
                "--set", "hidden_size=256", "--set", "ffn_hidden_size=512", "--set", "num_attention_heads=4",
                "--set", "kv_channels=64", "--set", "padded_vocab_size=1024", "--set", "seq_length=512");
        GenerateCheckpoint.write(written);
    }

    @Test
    void checkpointHasTheModelsNamesShapesAndShardSize() throws Exception {
        ChatGLMConfig config = ChatGLMConfig.fromJson(model.resolve("config.json"));
        assertThat(config.numLayers()).isEqualTo(2);
        assertThat(config.hiddenSize()).isEqualTo(256);
        // Fields not overridden come from the preset.
        ChatGLMConfig preset = ChatGLMConfig.preset("chatglm3-6b");
        assertThat(config.kvHeads()).isEqualTo(preset.kvHeads());
        assertThat(config.rmsnorm()).isEqualTo(preset.rmsnorm());
        assertThat(config.eosTokenIds()).isEqualTo(preset.eosTokenIds());
        assertThat(config.torchDtype()).isEqualTo(DType.BFLOAT16);

        Map<String, Parameter> expected = ChatGLMLanguageModel.create(config, DType.BFLOAT16).stateDict();
        try (Checkpoint ckpt = Checkpoint.open(model)) {
            Map<String, long[]> shapes = new LinkedHashMap<>();
            for (TensorInfo t : ckpt.tensors()) {
                shapes.put(t.name(), t.shape());
                assertThat(t.dtype()).as(t.name()).isEqualTo(DType.BFLOAT16);
            }
            assertThat(shapes.keySet()).containsExactlyInAnyOrderElementsOf(expected.keySet());
            expected.forEach((name, p) -> assertThat(shapes.get(name)).as(name).containsExactly(p.shape()));
            // A shard holds at most --shard-size bytes of data, or a single tensor larger than that.
            Map<Path, List<TensorInfo>> byShard = ckpt.tensors().stream()
                    .collect(Collectors.groupingBy(TensorInfo::file));
            assertThat(byShard).hasSizeGreaterThan(1);
            byShard.forEach((file, tensors) -> {
                long data = tensors.stream().mapToLong(TensorInfo::byteLength).sum();
                if (tensors.size() > 1) {
                    assertThat(data).as(file.toString()).isLessThanOrEqualTo(written.shardBytes);
                }
            });
            assertThat(byShard.keySet()).hasSameSizeAs(DecodeProgram.shards(model));
        }
    }

    @Test
    void everyRowHasEveryColumnAndTheIdsOfAPlainGenerator() {
        DecodeProgram.Options o = DecodeProgram.Options.parse("--model", model.toString(), "--row",
                "a,b-prefetch,d", "--prompt", "16", "--tokens", "6", "--threads", "1", "--budget", "1500000",
                "--in-process", "--mem-bytes", "32MiB", "--disk-bytes", "1MiB");
        ByteArrayOutputStream buffer = new ByteArrayOutputStream();
        List<RowResult> results;
        try (PrintStream out = new PrintStream(buffer, true, StandardCharsets.UTF_8)) {
            results = DecodeProgram.run(o, out);
        }
        String text = buffer.toString(StandardCharsets.UTF_8);

        List<String> table = text.lines().filter(l -> l.startsWith("| (")).collect(Collectors.toList());
        assertThat(table).hasSize(3);
        for (String row : table) {
            String[] cells = row.substring(1, row.length() - 1).split("\\|");
            assertThat(cells).as(row).hasSize(11);
            // load, TTFT, ms/token, floor, ratio: positive numbers.
            for (int c : new int[] {2, 3, 4, 9, 10}) {
                assertThat(Double.parseDouble(cells[c].replace("x", "").trim())).as(row + " cell " + c).isPositive();
            }
        }
        List<String> csv = text.lines().filter(l -> l.matches("^(a|b-prefetch|d),.*")).collect(Collectors.toList());
        assertThat(csv).hasSize(3);
        for (String line : csv) {
            String[] f = line.split(",");
            assertThat(f).hasSize(DecodeProgram.csvHeader().split(",").length);
            for (int c : new int[] {2, 3, 4, 5, 6, 7, 8, 12, 13, 14, 15}) {
                assertThat(Double.parseDouble(f[c])).as(line + " field " + c).isPositive();
            }
        }
        RowResult a = results.get(0);
        RowResult b = results.get(1);
        RowResult d = results.get(2);
        assertThat(a.ramBytesPerToken).isPositive();
        assertThat(a.diskBytesPerToken).isZero();
        assertThat(b.diskBytesPerToken).as("the 300 kB budget puts blocks on disk").isPositive();
        assertThat(b.diskModules).isPositive();
        assertThat(d.ramBytesPerToken).as("int4 blocks read fewer bytes").isLessThan(a.ramBytesPerToken);
        assertThat(text).contains("# greedy ids of the bf16 rows: b-prefetch = (a)");

        long[] plain = plainGreedyIds(16, 6);
        assertThat(a.ids).hasSize(16 + 7);
        assertThat(Arrays.copyOfRange(a.ids, 16, a.ids.length)).containsExactly(plain);
        assertThat(b.ids).containsExactly(a.ids);
        // The side-by-side script's time to first token from process start: this JVM's start, then the first token.
        assertThat(a.jvmStartEpochMs).isPositive();
        assertThat(a.firstTokenEpochMs).isGreaterThanOrEqualTo(a.jvmStartEpochMs)
                .isLessThanOrEqualTo(System.currentTimeMillis());
    }

    @Test
    void allIsTheFourSettingsOfTheTableAndFp16IsNamedAlone() {
        assertThat(DecodeRow.parseList("all")).containsExactly(DecodeRow.A, DecodeRow.B_NOPREFETCH,
                DecodeRow.B_PREFETCH, DecodeRow.C, DecodeRow.D);
        assertThat(DecodeRow.parseList("a,fp16")).containsExactly(DecodeRow.A, DecodeRow.FP16);
        assertThat(DecodeRow.FP16.options(1L << 30, null).plan().dtype()).isEqualTo(DType.FLOAT16);
    }

    @Test
    void quantizedDiskRowsReadFewerBytesFromDiskAndDecodeLikeTheirInMemoryRows() {
        // From the bf16 checkpoint the int8/int4 disk rows quantize while loading and write the offloaded blocks'
        // codes to the offload folder; each token then reads those codes from disk.
        DecodeProgram.Options o = DecodeProgram.Options.parse("--model", model.toString(), "--row",
                "b-prefetch,c,b-int8,d,b-int4", "--prompt", "8", "--tokens", "4", "--threads", "1", "--budget",
                "1500000", "--in-process", "--mem-bytes", "32MiB", "--disk-bytes", "1MiB", "--offload",
                dir.resolve("offload").toString());
        ByteArrayOutputStream buffer = new ByteArrayOutputStream();
        List<RowResult> results;
        try (PrintStream out = new PrintStream(buffer, true, StandardCharsets.UTF_8)) {
            results = DecodeProgram.run(o, out);
        }
        String text = buffer.toString(StandardCharsets.UTF_8);
        RowResult bf16 = results.get(0);
        RowResult c = results.get(1);
        RowResult bInt8 = results.get(2);
        RowResult d = results.get(3);
        RowResult bInt4 = results.get(4);
        for (RowResult q : List.of(bInt8, bInt4)) {
            assertThat(q.diskModules).as(q.row).isPositive();
            assertThat(q.diskBytesPerToken).as(q.row).isPositive().isLessThan(bf16.diskBytesPerToken);
            assertThat(q.ramBytesPerToken + q.diskBytesPerToken).as(q.row)
                    .isLessThan(bf16.ramBytesPerToken + bf16.diskBytesPerToken);
        }
        assertThat(bInt4.ramBytesPerToken + bInt4.diskBytesPerToken)
                .isLessThan(bInt8.ramBytesPerToken + bInt8.diskBytesPerToken);
        // Offloading changes where the codes live, not the arithmetic: the same greedy ids as the in-memory rows.
        assertThat(bInt8.ids).containsExactly(c.ids);
        assertThat(bInt4.ids).containsExactly(d.ids);
        assertThat(text).contains("# target (b-int8) faster than (b-prefetch) in proportion to the bytes read")
                .contains("# target (b-int4) within 1.2x of the disk floor")
                .contains("# row b-int8 read ");
    }

    @Test
    void fp16RowConvertsEveryWeightAndDecodesLikeTheBf16Row() {
        DecodeProgram.Options o = DecodeProgram.Options.parse("--model", model.toString(), "--row", "a,fp16",
                "--prompt", "8", "--tokens", "3", "--threads", "1", "--in-process", "--mem-bytes", "32MiB",
                "--disk-bytes", "1MiB");
        List<RowResult> results;
        try (PrintStream out = new PrintStream(new ByteArrayOutputStream(), true, StandardCharsets.UTF_8)) {
            results = DecodeProgram.run(o, out);
        }
        RowResult a = results.get(0);
        RowResult fp16 = results.get(1);
        // Same weights in 2 bytes each: the same bytes per token; the ids are a run of 8 + 4 tokens.
        assertThat(fp16.ramBytesPerToken).isEqualTo(a.ramBytesPerToken);
        assertThat(fp16.ids).hasSize(8 + 4);
        assertThat(fp16.msPerToken).isPositive();
    }

    @Test
    void memoryOnlyPrintsTheBandwidthsAsAJsonLine() throws Exception {
        DecodeProgram.Options o = DecodeProgram.Options.parse("--model", model.toString(), "--memory-only",
                "--threads", "1", "--mem-bytes", "32MiB");
        ByteArrayOutputStream buffer = new ByteArrayOutputStream();
        try (PrintStream out = new PrintStream(buffer, true, StandardCharsets.UTF_8)) {
            DecodeProgram.measureMemory(o, out);
        }
        String line = buffer.toString(StandardCharsets.UTF_8).lines()
                .filter(l -> l.startsWith(DecodeProgram.MEMORY_PREFIX)).findFirst().orElseThrow();
        com.fasterxml.jackson.databind.JsonNode json = new com.fasterxml.jackson.databind.ObjectMapper()
                .readTree(line.substring(DecodeProgram.MEMORY_PREFIX.length()));
        assertThat(json.get("torch").asDouble()).isGreaterThan(1e8);
        assertThat(json.get("java").asDouble()).isGreaterThan(1e8);
        assertThat(json.get("threads").asInt()).isEqualTo(1);
    }

    /** The same request through a model loaded onto the CPU with no dispatch, hooks or offload. */
    private static long[] plainGreedyIds(int prompt, int tokens) {
        ChatGLMConfig config = ChatGLMConfig.fromJson(model.resolve("config.json"));
        ChatGLMLanguageModel plain = ChatGLMLanguageModel.create(config, DType.BFLOAT16);
        try (Checkpoint ckpt = Checkpoint.open(model)) {
            plain.loadWeights(ckpt::load, Device.CPU, DType.BFLOAT16);
        }
        try {
            GenerationResult r = new Generator(plain).generate(DecodeProgram.request(prompt, tokens,
                    config.vocabSize()));
            return r.newIds()[0];
        } finally {
            plain.toMeta();
        }
    }
}
