package io.github.bigmodel.cli;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import io.github.bigmodel.chatglm.ChatGLMConfig;
import io.github.bigmodel.chatglm.model.ContextReservation;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.MemorySize;
import io.github.bigmodel.core.testing.ReferenceTree;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;

/**
 * {@code bigmodel plan --context N --batch B}: the human table shows per device weights / KV cache / workspace /
 * free; JSON gives the figures; bad values are refused with one clear line; without --context the output is the
 * usual one.
 */
class PlanContextCommandTest {

    private static final String[] BASE = {"plan", "--preset", "chatglm3-6b", "--dtype", "float16", "--max-memory",
        "0=10GiB,cpu=64GiB"};

    private static CliTest.Run plan(String... extra) {
        String[] args = new String[BASE.length + extra.length];
        System.arraycopy(BASE, 0, args, 0, BASE.length);
        System.arraycopy(extra, 0, args, BASE.length, extra.length);
        return CliTest.run(args);
    }

    @Test
    void tableShowsKvCacheWorkspaceAndFreePerDevice() {
        CliTest.Run r = plan("--context", "8192", "--batch", "1");
        assertThat(r.code()).as(r.err()).isZero();
        ChatGLMConfig config = ChatGLMConfig.preset("chatglm3-6b");
        long workspace = ContextReservation.of(config, 8192, 1, DType.FLOAT16).workspaceBytes();
        String header = r.out().lines().filter(l -> l.startsWith("device")).findFirst().orElseThrow();
        assertThat(header).contains("weights").contains("KV cache").contains("workspace").contains("free");
        String gpu = r.out().lines().filter(l -> l.startsWith("cuda:0")).findFirst().orElseThrow();
        assertThat(gpu).contains("224.00 MiB").contains(MemorySize.format(workspace))
                .contains("transformer.encoder.layers.0..21");
        String cpu = r.out().lines().filter(l -> l.startsWith("cpu")).findFirst().orElseThrow();
        assertThat(cpu).contains("transformer.encoder.layers.22..27");
        assertThat(r.out()).contains("KV cache for 8192 positions x batch 1 in float16");
    }

    @Test
    void jsonGivesTheFigures() throws Exception {
        CliTest.Run r = plan("--context", "8192", "--json");
        assertThat(r.code()).as(r.err()).isZero();
        JsonNode gpu = r.json().get("device_memory").get("0");
        assertThat(gpu.get("kv_cache").asLong()).isEqualTo(28L * 2 * 2 * 128 * 2 * 8192);
        double free = gpu.get("free").asDouble();
        double used = gpu.get("weights").asDouble() + gpu.get("kv_cache").asDouble()
                + gpu.get("workspace").asDouble() + gpu.get("offload_buffer").asDouble();
        assertThat(free + used).isEqualTo(10.0 * (1L << 30));
        assertThat(r.json().get("device_memory").get("cpu").get("kv_cache").asLong()).isZero();
    }

    @Test
    void withoutContextTheOutputIsUnchanged() throws Exception {
        CliTest.Run r = plan("--json");
        assertThat(r.code()).as(r.err()).isZero();
        assertThat(r.json().has("device_memory")).isFalse();
        assertThat(plan().out()).doesNotContain("KV cache");
    }

    @Test
    void badValuesAreRefusedInOneLine() {
        CliTest.Run zero = plan("--context", "0");
        assertThat(zero.code()).isNotZero();
        assertThat(zero.err()).startsWith("error: ").contains("context length must be positive");
        CliTest.Run negativeBatch = plan("--context", "1024", "--batch", "-1");
        assertThat(negativeBatch.code()).isNotZero();
        assertThat(negativeBatch.err()).contains("batch size must be positive");
        CliTest.Run tooLong = plan("--context", "8193");
        assertThat(tooLong.code()).isNotZero();
        assertThat(tooLong.err()).contains("8193").contains("maximum of 8192 positions");
        CliTest.Run batchAlone = plan("--batch", "2");
        assertThat(batchAlone.code()).isNotZero();
        assertThat(batchAlone.err()).contains("--batch needs --context");
        CliTest.Run promptAlone = plan("--prompt-tokens", "100");
        assertThat(promptAlone.err()).contains("--prompt-tokens needs --context");
        CliTest.Run promptTooLong = plan("--context", "1024", "--prompt-tokens", "2000");
        assertThat(promptTooLong.code()).isNotZero();
        assertThat(promptTooLong.err()).contains("--prompt-tokens 2000").contains("prompt step must be in 1..1024");
        CliTest.Run notANumber = plan("--context", "lots");
        assertThat(notANumber.code()).isNotZero();
        assertThat(notANumber.err()).contains("lots");
        for (CliTest.Run run : new CliTest.Run[] {zero, negativeBatch, tooLong, batchAlone, promptAlone,
                promptTooLong}) {
            assertThat(run.err().strip().lines().count()).isEqualTo(1);
        }
    }

    @Test
    void generateAndChatPlanWithAContextOrRefuseIt() throws Exception {
        Path folder = ReferenceTree.models().resolve("chatglm3-6b-tiny");
        int max = ChatGLMConfig.fromJson(folder.resolve("config.json")).maxPositions();
        String[] common = {"generate", "--model", folder.toString(), "--ids", "5,17,42",
            "--max-new-tokens", "3", "--max-memory", "cpu=2GiB", "--json"};
        CliTest.Run plain = CliTest.run(common);
        assertThat(plain.code()).as(plain.err()).isZero();
        CliTest.Run withContext = CliTest.run(concat(common, "--context", Integer.toString(max), "--batch", "1"));
        assertThat(withContext.code()).as(withContext.err()).isZero();
        // Everything fits on the CPU either way: the same tokens come out.
        assertThat(withContext.json().get("output_ids")).isEqualTo(plain.json().get("output_ids"));
        CliTest.Run tooLong = CliTest.run(concat(common, "--context", Integer.toString(max + 1)));
        assertThat(tooLong.code()).isNotZero();
        assertThat(tooLong.err()).startsWith("error: ").contains("maximum of " + max + " positions");
        CliTest.Run chat = CliTest.run("chat", "--model", folder.toString(), "--context", "-5");
        assertThat(chat.code()).isNotZero();
        assertThat(chat.err()).contains("context length must be positive");
    }

    private static String[] concat(String[] a, String... b) {
        String[] out = new String[a.length + b.length];
        System.arraycopy(a, 0, out, 0, a.length);
        System.arraycopy(b, 0, out, a.length, b.length);
        return out;
    }
}
