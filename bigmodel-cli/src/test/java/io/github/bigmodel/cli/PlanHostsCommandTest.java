package io.github.bigmodel.cli;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import io.github.bigmodel.chatglm.ChatGLMConfig;
import io.github.bigmodel.chatglm.ChatGLMFamily;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.MemorySize;
import io.github.bigmodel.core.Module;
import io.github.bigmodel.dispatch.plan.ModuleSizes;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * {@code bigmodel plan --host ...}: a pipeline over hosts, printed per host and per device. The expected split is
 * derived from the model's own sizes: a CPU-only host holds the longest run of whole units whose bytes fit its
 * budget, in module order.
 */
class PlanHostsCommandTest {

    private static final long GIB = 1L << 30;
    private static final String[] BASE = {"plan", "--preset", "chatglm-6b", "--dtype", "float16", "--strategy",
        "sequential", "--host", "box-a=cpu:6GiB", "--host", "box-b=cpu:8GiB"};

    private static CliTest.Run plan(String... extra) {
        String[] args = new String[BASE.length + extra.length];
        System.arraycopy(BASE, 0, args, 0, BASE.length);
        System.arraycopy(extra, 0, args, BASE.length, extra.length);
        return CliTest.run(args);
    }

    /** ChatGLM-6B's planning units in module order: embeddings, each block, the final norm, the output layer. */
    private static List<String> units(ChatGLMConfig config) {
        List<String> out = new ArrayList<>(List.of("transformer.word_embeddings"));
        for (int i = 0; i < config.numLayers(); i++) {
            out.add("transformer.layers." + i);
        }
        out.addAll(List.of("transformer.final_layernorm", "lm_head"));
        return out;
    }

    @Test
    void jsonSplitsTheModelIntoConsecutiveRunsThatFitEachHost() throws Exception {
        ChatGLMFamily family = ChatGLMFamily.ofPreset("chatglm-6b");
        Module model = family.createModel(DType.FLOAT16);
        ModuleSizes sizes = ModuleSizes.compute(model, DType.FLOAT16, null);
        List<String> units = units(family.config());
        int split = 0;
        double held = 0;
        while (held + sizes.size(units.get(split)) <= 6 * GIB) {
            held += sizes.size(units.get(split++));
        }
        CliTest.Run r = plan("--json");
        assertThat(r.code()).as(r.err()).isZero();
        JsonNode hosts = r.json().get("hosts");
        assertThat(hosts.size()).isEqualTo(2);
        assertThat(hosts.get(0).get("host").asText()).isEqualTo("box-a");
        List<String> a = new ArrayList<>();
        hosts.get(0).get("modules").forEach(n -> a.add(n.asText()));
        List<String> b = new ArrayList<>();
        hosts.get(1).get("modules").forEach(n -> b.add(n.asText()));
        assertThat(a).isEqualTo(units.subList(0, split));
        assertThat(b).isEqualTo(units.subList(split, units.size()));
        assertThat(hosts.get(0).get("weights").asDouble()).isEqualTo(held);
        // lm_head is tied to the word embeddings: box-b keeps its own copy, sized in full there.
        double bHeld = sizes.size("transformer.word_embeddings");
        for (String u : b) {
            bHeld += sizes.size(u);
        }
        assertThat(hosts.get(1).get("weights").asDouble()).isEqualTo(bHeld);
        assertThat(hosts.get(1).get("last").asText()).isEqualTo("lm_head");
        assertThat(hosts.get(0).get("max_memory").get("cpu").asLong()).isEqualTo(6 * GIB);
        JsonNode map = r.json().get("device_map");
        assertThat(map.get("transformer.word_embeddings").asText()).isEqualTo("box-a/cpu");
        assertThat(map.get("lm_head").asText()).isEqualTo("box-b/cpu");
        assertThat(map.get(units.get(split - 1)).asText()).isEqualTo("box-a/cpu");
        assertThat(map.get(units.get(split)).asText()).isEqualTo("box-b/cpu");
    }

    @Test
    void theTableShowsEachHostItsBlockRangeAndItsDevices() throws Exception {
        CliTest.Run json = plan("--json");
        JsonNode a = json.json().get("hosts").get(0);
        int lastA = Integer.parseInt(a.get("last").asText().substring("transformer.layers.".length()));
        int layers = ChatGLMConfig.preset("chatglm-6b").numLayers();
        CliTest.Run r = plan();
        assertThat(r.code()).as(r.err()).isZero();
        assertThat(r.out()).contains("pipeline: box-a -> box-b (2 of 2 hosts hold a stage)");
        assertThat(r.out()).contains("host box-a: weights " + MemorySize.format(a.get("weights").asDouble())
                + ", holds transformer.word_embeddings, transformer.layers.0.." + lastA);
        assertThat(r.out()).contains("host box-b: weights").contains("holds transformer.layers." + (lastA + 1) + ".."
                + (layers - 1) + ", transformer.final_layernorm, lm_head");
        List<String> cpuRows = r.out().lines().filter(l -> l.startsWith("  cpu")).toList();
        assertThat(cpuRows).hasSize(2);
        assertThat(cpuRows.get(0)).contains("6.00 GiB").contains("transformer.layers.0.." + lastA);
        assertThat(cpuRows.get(1)).contains("8.00 GiB").contains("lm_head");
    }

    @Test
    void withContextEachHostKeepsTheCacheOfItsOwnBlocks() throws Exception {
        ChatGLMConfig config = ChatGLMConfig.preset("chatglm-6b");
        CliTest.Run json = plan("--json", "--context", "2048");
        assertThat(json.code()).as(json.err()).isZero();
        JsonNode hosts = json.json().get("hosts");
        long perLayer = config.kvCacheBytesPerLayer(2048, 1, DType.FLOAT16);
        for (JsonNode h : hosts) {
            long blocks = 0;
            for (JsonNode m : h.get("modules")) {
                blocks += m.asText().startsWith("transformer.layers.") ? 1 : 0;
            }
            assertThat(blocks).isPositive();
            assertThat(h.get("device_memory").get("cpu").get("kv_cache").asLong()).as(h.get("host").asText())
                    .isEqualTo(blocks * perLayer);
        }
        CliTest.Run table = plan("--context", "2048");
        assertThat(table.code()).as(table.err()).isZero();
        assertThat(table.out()).contains("KV cache").contains("room for generation");
    }

    @Test
    void badHostsAndShortBudgetsAreRefusedInOneLine() {
        CliTest.Run small = CliTest.run("plan", "--preset", "chatglm-6b", "--dtype", "float16", "--host",
                "a=cpu:2GiB", "--host", "b=cpu:2GiB");
        assertThat(small.code()).isNotZero();
        assertThat(small.err()).startsWith("error: ").contains("cannot hold").contains("lm_head");
        assertThat(small.err().lines().count()).isEqualTo(1);
        CliTest.Run badName = CliTest.run("plan", "--preset", "chatglm-6b", "--host", "box a=cpu:8GiB");
        assertThat(badName.code()).isNotZero();
        assertThat(badName.err()).contains("Invalid host name 'box a'");
        CliTest.Run both = plan("--max-memory", "cpu=8GiB");
        assertThat(both.code()).isNotZero();
        assertThat(both.err()).contains("--host and --max-memory exclude each other");
    }
}
