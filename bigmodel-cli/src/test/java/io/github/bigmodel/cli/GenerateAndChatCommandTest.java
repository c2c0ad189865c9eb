package io.github.bigmodel.cli;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.github.bigmodel.core.testing.ReferenceTree;
import io.github.bigmodel.safetensors.SafetensorsFile;
import java.io.BufferedReader;
import java.io.PrintWriter;
import java.io.StringReader;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestFactory;
import org.junit.jupiter.api.io.TempDir;

class GenerateAndChatCommandTest {

    private static final ObjectMapper JSON = new ObjectMapper();

    /** For every reference model: --dump-logits gives the official logits and greedy --json the official ids. */
    @TestFactory
    Stream<DynamicTest> generateReproducesTheOfficialNumbers(@TempDir Path dir) throws Exception {
        List<DynamicTest> tests = new ArrayList<>();
        for (String name : new String[] {"chatglm3-6b-tiny", "chatglm-6b-tiny"}) {
            Path folder = ReferenceTree.models().resolve(name);
            tests.add(DynamicTest.dynamicTest(name, () -> check(folder, dir.resolve(name + ".safetensors"))));
        }
        return tests.stream();
    }

    private static void check(Path folder, Path dump) throws Exception {
        JsonNode cases = JSON.readTree(folder.resolve("expected.json").toFile()).get("cases");
        JsonNode greedy = null;
        for (JsonNode c : cases) {
            if (c.get("kind").asText().equals("greedy")) {
                greedy = c;
                break;
            }
        }
        String ids = csv(greedy.get("prompt_ids"));
        CliTest.Run forward = CliTest.run("generate", "--model", folder.toString(), "--ids", ids,
                "--max-new-tokens", "0", "--dump-logits", dump.toString(), "--json");
        assertThat(forward.code()).as(forward.err()).isZero();
        assertThat(forward.json().get("output_ids")).isEmpty();
        assertThat(forward.json().get("text").isNull()).as("no tokenizer in the folder").isTrue();
        double tol = folder.getFileName().toString().startsWith("chatglm-6b") ? 2e-4 : 1e-4;
        try (SafetensorsFile got = SafetensorsFile.open(dump);
             SafetensorsFile expected = SafetensorsFile.open(folder.resolve("expected.safetensors"));
             PointerScope scope = new PointerScope()) {
            Tensor logits = got.load("logits");
            assertThat(logits.size(0)).isEqualTo(greedy.get("prompt_ids").size());
            // The first greedy step's logits are the last row of the prompt's forward pass.
            Tensor want = expected.load(greedy.get("tensors").get("step_logits").asText()).select(1, 0).squeeze(0);
            Tensor last = logits.select(0, logits.size(0) - 1);
            assertThat(last.sub(want).abs().max().item_double()).isLessThanOrEqualTo(tol);
        }
        int n = greedy.get("new_ids").size();
        CliTest.Run gen = CliTest.run("generate", "--model", folder.toString(), "--ids", ids, "--greedy",
                "--ignore-eos", "--max-new-tokens", Integer.toString(n), "--json",
                "--max-memory", "cpu=100KB", "--device-map", "sequential",
                "--offload-folder", dump.resolveSibling(dump.getFileName() + "-offload").toString());
        assertThat(gen.code()).as(gen.err()).isZero();
        assertThat(gen.json().get("output_ids")).isEqualTo(greedy.get("new_ids"));
    }

    private static String csv(JsonNode array) {
        List<String> out = new ArrayList<>();
        array.forEach(n -> out.add(n.asText()));
        return String.join(",", out);
    }

    @Test
    void badIdsAndMissingTokenizerAreOneLineErrors() {
        Path folder = ReferenceTree.models().resolve("chatglm3-6b-tiny");
        CliTest.Run outside = CliTest.run("generate", "--model", folder.toString(), "--ids", "1,99999");
        assertThat(outside.code()).isNotZero();
        assertThat(outside.err()).contains("99999");
        CliTest.Run prompt = CliTest.run("generate", "--model", folder.toString(), "--prompt", "hi");
        assertThat(prompt.code()).isNotZero();
        assertThat(prompt.err()).contains("no tokenizer");
    }

    @Test
    void chatLoopStreamsClearsAndStops(@TempDir Path dir) throws Exception {
        Path model = dir.resolve("demo");
        assertThat(CliTest.run("demo", "--dir", model.toString(), "--keep").code()).isZero();
        ChatCommand chat = new ChatCommand();
        chat.maxNewTokens = 8;
        StringWriter sink = new StringWriter();
        String script = "你好\nclear\n\n再见\nstop\nnot read\n";
        try (io.github.bigmodel.chatglm.chat.ChatGLM glm = io.github.bigmodel.chatglm.chat.ChatGLM.load(model)) {
            int code = chat.converse(glm, new BufferedReader(new StringReader(script)), new PrintWriter(sink, true));
            assertThat(code).isZero();
        }
        String out = sink.toString();
        assertThat(out.lines().filter(l -> l.startsWith("Assistant: ")).count()).isEqualTo(2);
        assertThat(out).contains("(history cleared)").doesNotContain("not read");
        assertThat(Files.list(model).map(p -> p.getFileName().toString()).collect(Collectors.toSet()))
                .contains("config.json", "tokenizer.model", "model.safetensors.index.json");
    }
}
