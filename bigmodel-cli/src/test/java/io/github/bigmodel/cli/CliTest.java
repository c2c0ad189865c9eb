package io.github.bigmodel.cli;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.github.bigmodel.core.testing.ReferenceTree;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestFactory;
import org.junit.jupiter.api.io.TempDir;

class CliTest {

    private static final ObjectMapper JSON = new ObjectMapper();

    record Run(int code, String out, String err) {
        JsonNode json() throws Exception {
            return JSON.readTree(out);
        }
    }

    static Run run(String... args) {
        StringWriter out = new StringWriter();
        StringWriter err = new StringWriter();
        int code = BigModelCli.execute(new PrintWriter(out), new PrintWriter(err), args);
        return new Run(code, out.toString(), err.toString());
    }

    /** The input ids of a reference model's first forward case (expected.json), as {@code --ids} takes them. */
    static String firstForwardIds(Path folder) {
        try {
            for (JsonNode c : JSON.readTree(folder.resolve("expected.json").toFile()).get("cases")) {
                if (c.get("kind").asText().equals("forward")) {
                    List<String> ids = new ArrayList<>();
                    c.get("input_ids").forEach(id -> ids.add(id.asText()));
                    return String.join(",", ids);
                }
            }
        } catch (java.io.IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
        throw new IllegalStateException("no forward case in " + folder);
    }

    /** "shard n/n", the last shard of a folder's safetensors checkpoint as the progress bars name it. */
    static String lastShard(Path folder) {
        int n = ReferenceTree.shards(folder, "model", ".safetensors").size();
        return "shard " + n + "/" + n;
    }

    @Test
    void planJsonHasExactlyTheDocumentedShape() throws Exception {
        Run r = run("plan", "--preset", "chatglm3-6b", "--dtype", "float16", "--max-memory", "0=10GiB,cpu=30GiB",
                "--json");
        assertThat(r.code()).as(r.err()).isZero();
        JsonNode root = r.json();
        List<String> fields = new ArrayList<>();
        root.fieldNames().forEachRemaining(fields::add);
        assertThat(fields).containsExactly("device_map", "max_memory", "device_bytes");
        JsonNode map = root.get("device_map");
        // Module order of the model, GPU written as its integer index.
        Iterator<String> names = map.fieldNames();
        assertThat(names.next()).isEqualTo("transformer.embedding");
        assertThat(map.get("transformer.embedding").isInt()).isTrue();
        assertThat(map.get("transformer.embedding").asInt()).isZero();
        assertThat(map.get("transformer.output_layer").asText()).isEqualTo("cpu");
        // 28 blocks of 2 x 204 MB in fp16 do not fit in 10 GiB next to embeddings: some go to the CPU.
        long gpuBytes = root.get("device_bytes").get("0").asLong();
        long cpuBytes = root.get("device_bytes").get("cpu").asLong();
        assertThat(gpuBytes + cpuBytes).isEqualTo(2L * 6_243_584_032L);
        assertThat(root.get("max_memory").get("cpu").asLong()).isEqualTo(30L << 30);
    }

    @Test
    void planTableAndSequentialStrategy() {
        Run r = run("plan", "--preset", "chatglm-6b", "--max-memory", "0=6GiB,cpu=30GiB", "--strategy", "sequential");
        assertThat(r.code()).as(r.err()).isZero();
        assertThat(r.out()).contains("cuda:0").contains("cpu").contains("transformer.layers.");
    }

    @TestFactory
    Stream<DynamicTest> tokenizeMatchesBuildChatInputCases() throws Exception {
        Path dir = ReferenceTree.tokenizer();
        JsonNode cases = JSON.readTree(dir.resolve("chatglm3_cases.json").toFile()).get("build_chat_input");
        List<DynamicTest> tests = new ArrayList<>();
        for (JsonNode c : cases) {
            tests.add(DynamicTest.dynamicTest(c.get("name").asText(), () -> {
                Path messages = Files.createTempFile("messages", ".json");
                try {
                    List<Object> list = new ArrayList<>();
                    for (JsonNode h : c.get("history")) {
                        list.add(h);
                    }
                    var last = JSON.createObjectNode().put("role", c.get("role").asText())
                            .put("content", c.get("query").asText());
                    list.add(last);
                    Files.writeString(messages, JSON.writeValueAsString(list), StandardCharsets.UTF_8);
                    Run r = run("tokenize", "--tokenizer", dir.resolve("tokenizer.model").toString(), "--chat",
                            messages.toString(), "--json");
                    assertThat(r.code()).as(r.err()).isZero();
                    assertThat(r.json().get("ids")).isEqualTo(c.get("input_ids"));
                } finally {
                    Files.deleteIfExists(messages);
                }
            }));
        }
        return tests.stream();
    }

    @Test
    void tokenizeTextAndDecode() throws Exception {
        Path model = ReferenceTree.tokenizer().resolve("tokenizer.model");
        Run enc = run("tokenize", "--tokenizer", model.toString(), "--text", "你好", "--json");
        assertThat(enc.code()).as(enc.err()).isZero();
        JsonNode ids = enc.json().get("ids");
        assertThat(ids.get(0).asInt()).isEqualTo(4001); // [gMASK]
        assertThat(ids.get(1).asInt()).isEqualTo(4003); // sop
        assertThat(enc.json().get("pieces").size()).isEqualTo(ids.size());
        StringBuilder csv = new StringBuilder();
        for (int i = 2; i < ids.size(); i++) {
            csv.append(i == 2 ? "" : ",").append(ids.get(i).asInt());
        }
        Run dec = run("tokenize", "--tokenizer", model.toString(), "--decode", csv.toString(), "--json");
        assertThat(dec.json().get("text").asText()).isEqualTo("你好");
        Run raw = run("tokenize", "--tokenizer", model.toString(), "--text", "你好", "--raw", "--json");
        assertThat(raw.json().get("ids").size()).isEqualTo(ids.size() - 2);
    }

    @Test
    void inspectJsonListsEveryTensorWithoutReadingData() throws Exception {
        Path folder = ReferenceTree.models().resolve("chatglm-6b-tiny");
        Run r = run("inspect", folder.resolve("pytorch_model.bin.index.json").toString(), "--json");
        assertThat(r.code()).as(r.err()).isZero();
        JsonNode index = JSON.readTree(folder.resolve("pytorch_model.bin.index.json").toFile());
        assertThat(r.json().get("tensors").size()).isEqualTo(index.get("weight_map").size());
        assertThat(r.json().get("total_bytes").asLong())
                .isEqualTo(index.get("metadata").get("total_size").asLong());
        JsonNode first = r.json().get("tensors").get(0);
        assertThat(first.get("dtype").asText()).isEqualTo("F32");
        assertThat(first.get("file").asText()).startsWith("pytorch_model-0000");
    }

    @Test
    void damagedFileGivesOneLineAndNonZeroExit(@TempDir Path dir) throws Exception {
        Path bad = dir.resolve("bad.safetensors");
        Files.write(bad, new byte[] {1, 2, 3});
        Run r = run("inspect", bad.toString());
        assertThat(r.code()).isNotZero();
        assertThat(r.err().strip().lines().count()).isEqualTo(1);
        assertThat(r.err()).startsWith("error: ").contains("bad.safetensors");
        Run missing = run("inspect", dir.resolve("nothing-here").toString());
        assertThat(missing.code()).isNotZero();
        assertThat(missing.err()).startsWith("error: ");
        Run badBudget = run("plan", "--preset", "chatglm3-6b", "--max-memory", "0=10 potatoes");
        assertThat(badBudget.code()).isNotZero();
        assertThat(badBudget.err()).contains("10 potatoes");
        Run badDevice = run("plan", "--preset", "chatglm3-6b", "--max-memory", "cuda:x=10GiB");
        assertThat(badDevice.code()).isNotZero();
        assertThat(badDevice.err()).contains("cuda:x");
    }

    @Test
    void demoRunsEndToEnd(@TempDir Path dir) {
        Run r = run("demo", "--dir", dir.resolve("demo").toString(), "--keep");
        assertThat(r.code()).as(r.err()).isZero();
        assertThat(r.out()).contains("disk").contains("assistant (random weights, so gibberish)")
                .contains("chatglm3-6b");
        assertThat(dir.resolve("demo/model.safetensors.index.json")).exists();
    }
}
