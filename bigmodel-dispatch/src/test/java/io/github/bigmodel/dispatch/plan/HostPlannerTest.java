package io.github.bigmodel.dispatch.plan;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.Linear;
import io.github.bigmodel.core.Module;
import io.github.bigmodel.core.ModuleList;
import io.github.bigmodel.core.Parameter;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/**
 * Hosts as one level above devices: consecutive runs of whole blocks per host, in pipeline order, each host planned
 * by the one-machine planner within its budgets.
 */
class HostPlannerTest {

    private static final int LAYERS = 12;

    /**
     * ChatGLM-6B's layout in float32: word embeddings [64, 8] (2048 B), a rotary module with a 64 B buffer, blocks of
     * two [16, 32] linears (4096 B each), a final norm (256 B) and lm_head [64, 8] (2048 B), optionally tied to the
     * embeddings as in some ChatGLM-6B checkpoints.
     */
    private static Module glm6b(boolean tied) {
        Module root = new Module("ChatGLMForConditionalGeneration");
        Module t = root.registerModule("transformer", new Module("ChatGLMModel"));
        t.registerModule("word_embeddings", new Linear(8, 64, false, DType.FLOAT32));
        t.registerModule("rotary_pos_emb", new Module("RotaryEmbedding"))
                .registerBuffer("inv_freq", Parameter.empty(DType.FLOAT32, 16), false);
        ModuleList<Module> layers = t.registerModule("layers", new ModuleList<>());
        for (int i = 0; i < LAYERS; i++) {
            Module block = layers.add(new Module("GLMBlock"));
            block.registerModule("attention", new Linear(32, 16, false, DType.FLOAT32));
            block.registerModule("mlp", new Linear(32, 16, false, DType.FLOAT32));
        }
        Module norm = t.registerModule("final_layernorm", new Module("LayerNorm"));
        norm.registerParameter("weight", Parameter.empty(DType.FLOAT32, 32));
        norm.registerParameter("bias", Parameter.empty(DType.FLOAT32, 32));
        root.registerModule("lm_head", new Linear(8, 64, false, DType.FLOAT32));
        if (tied) {
            root.tie("lm_head.weight", "transformer.word_embeddings.weight");
        }
        return root;
    }

    /** Bytes of a module's (or tensor's) distinct tensors, from the tree itself. */
    private static long bytes(Module model, String name) {
        Module m = model.findModule(name);
        return m != null ? m.byteSize() : model.tensor(name).byteSize();
    }

    private static PlanOptions.Builder options(String... hosts) {
        return PlanOptions.builder().noSplitModuleClasses("GLMBlock").hosts(HostBudgets.parse(List.of(hosts)));
    }

    private static String layer(int i) {
        return "transformer.layers." + i;
    }

    @Test
    void twoCpuHostsTakeConsecutiveWholeBlocksFirstHostFirst() {
        Module model = glm6b(false);
        long front = bytes(model, "transformer.word_embeddings") + bytes(model, "transformer.rotary_pos_emb");
        long block = bytes(model, layer(0));
        // Room for four and a half blocks after the embedding: the fifth block may not be cut in two.
        long budgetA = front + 4 * block + block / 2;
        PipelinePlan p = DeviceMapPlanner.planHosts(model, Strategy.SEQUENTIAL,
                options("box-a=cpu:" + budgetA, "box-b=cpu:1GiB").build());

        List<String> expectedA = new ArrayList<>(List.of("transformer.word_embeddings", "transformer.rotary_pos_emb"));
        for (int i = 0; i < 4; i++) {
            expectedA.add(layer(i));
        }
        List<String> expectedB = new ArrayList<>();
        for (int i = 4; i < LAYERS; i++) {
            expectedB.add(layer(i));
        }
        expectedB.addAll(List.of("transformer.final_layernorm", "lm_head"));
        assertThat(p.stage("box-a").modules()).isEqualTo(expectedA);
        assertThat(p.stage("box-b").modules()).isEqualTo(expectedB);
        assertThat(p.stage("box-a").weightBytes()).isEqualTo(front + 4 * block);
        assertThat(p.deviceMap().hosts()).containsExactly("box-a", "box-b");
        assertThat(p.warnings()).isEmpty();
        for (String name : model.stateDict().keySet()) {
            int index = name.startsWith("transformer.layers.") ? Integer.parseInt(name.split("\\.")[2]) : -1;
            String expected = name.startsWith("transformer.word_embeddings") || (index >= 0 && index < 4)
                    ? "box-a" : "box-b";
            assertThat(p.deviceMap().hostOf(name)).as(name).isEqualTo(expected);
        }
        // Merged where one host holds everything below a module, as accelerate's clean-up does on one machine.
        assertThat(p.deviceMap().placements().get("lm_head")).isEqualTo(HostDevice.parse("box-b/cpu"));
        assertThat(p.deviceMap().toJson()).startsWith("{\"transformer.word_embeddings\":\"box-a/cpu\"");
        // Each host's map covers the model, remote parts included.
        for (String h : p.deviceMap().hosts()) {
            assertThat(p.deviceMap().forHost(h).checkDeviceMap(model)).isEmpty();
        }
    }

    @Test
    void threeHostsWithGpusKeepTheOrderTheBlocksAndTheBudgets() {
        Module model = glm6b(false);
        long block = bytes(model, layer(0));
        PipelinePlan p = DeviceMapPlanner.planHosts(model, Strategy.AUTO, options(
                "a=cuda:0:" + (2 * block + block / 2) + ",cpu:" + 3 * block,
                "b=cpu:" + (3 * block + 100),
                "c=0:" + 4 * block + ",1:" + 4 * block + ",cpu:" + 4 * block).build());
        DeviceMap map = p.deviceMap();
        List<String> hosts = List.of("a", "b", "c");
        assertThat(map.hosts()).containsExactly("a", "b", "c");

        // Order: along the model, the host index never goes down; a block's tensors share one host.
        int last = 0;
        for (String name : model.stateDict().keySet()) {
            int h = hosts.indexOf(map.hostOf(name));
            assertThat(h).as(name).isGreaterThanOrEqualTo(last);
            last = h;
        }
        for (int i = 0; i < LAYERS; i++) {
            assertThat(map.hostOf(layer(i) + ".mlp.weight")).as("block %d", i)
                    .isEqualTo(map.hostOf(layer(i) + ".attention.weight"));
        }
        assertThat(map.hostOf("transformer.word_embeddings.weight")).isEqualTo("a");
        assertThat(map.hostOf("transformer.final_layernorm.weight")).isEqualTo("c");
        assertThat(map.hostOf("lm_head.weight")).isEqualTo("c");

        // The stages are the units in order, and no device holds more than its budget.
        List<String> all = new ArrayList<>();
        for (PipelinePlan.Stage s : p.stages()) {
            all.addAll(s.modules());
            assertThat(s.isEmpty()).as(s.host()).isFalse();
            for (DeviceMemory m : s.plan().memory().values()) {
                assertThat(m.device().isDisk()).isFalse();
                assertThat(m.weightBytes()).as(s.host() + " " + m.device()).isLessThanOrEqualTo(
                        s.budget().get(m.device()));
            }
        }
        assertThat(all).isEqualTo(HostPlanner.units(model, List.of("GLMBlock")));
        // The CPU-only host is full: one more block would pass its budget.
        PipelinePlan.Stage b = p.stage("b");
        assertThat(b.weightBytes()).isLessThanOrEqualTo(b.budget().get(Device.CPU));
        assertThat(b.weightBytes() + block).isGreaterThan(b.budget().get(Device.CPU));
    }

    @Test
    void gpusComeFirstAndAHostOffloadsToItsCpuOnlyWhenTheGpusCannotHoldTheModel() {
        Module model = glm6b(false);
        long front = bytes(model, "transformer.word_embeddings") + bytes(model, "transformer.rotary_pos_emb");
        long block = bytes(model, layer(0));
        // a's GPU holds the front and 5 blocks (the last one placed needs no reserve); its CPU memory stays unused
        // while b's CPU, which executes what it holds, can take the rest.
        PipelinePlan p = DeviceMapPlanner.planHosts(model, Strategy.SEQUENTIAL,
                options("a=cuda:0:" + (front + 5 * block) + ",cpu:1GiB", "b=cpu:1GiB").build());
        assertThat(p.stage("a").last()).isEqualTo(layer(4));
        assertThat(p.stage("a").plan().deviceMap().devices()).containsExactly(Device.cuda(0));
        assertThat(p.stage("a").plan().budget().devices()).containsExactly(Device.cuda(0));
        assertThat(p.stage("b").first()).isEqualTo(layer(5));
        // When the GPUs and CPU-only hosts cannot hold it, a's CPU memory takes offloaded blocks.
        long tail = bytes(model, "transformer.final_layernorm") + bytes(model, "lm_head");
        PipelinePlan tight = DeviceMapPlanner.planHosts(model, Strategy.SEQUENTIAL,
                options("a=cuda:0:" + (front + 5 * block) + ",cpu:" + 4 * block, "b=cpu:" + (4 * block + tail))
                        .build());
        assertThat(tight.stage("a").plan().deviceMap().asMap()).containsValue(Device.CPU);
        assertThat(tight.stage("b").modules()).containsExactly(layer(8), layer(9), layer(10), layer(11),
                "transformer.final_layernorm", "lm_head");
    }

    @Test
    void oneHostIsExactlyTheOneMachinePlan() {
        Module model = glm6b(false);
        long block = bytes(model, layer(0));
        String budget = "0=" + 3 * block + ",1=" + 5 * block + ",cpu=1GiB";
        PlanOptions plain = PlanOptions.builder().noSplitModuleClasses("GLMBlock").build();
        for (Strategy s : Strategy.values()) {
            DevicePlan one = DeviceMapPlanner.plan(model, s, MaxMemory.parse(budget,
                    DeviceInventory.simulated(List.of(0L, 0L), 0L)), plain);
            PipelinePlan p = DeviceMapPlanner.planHosts(model, s, options("solo=cuda:0:" + 3 * block + ",cuda:1:"
                    + 5 * block + ",cpu:1GiB").build());
            assertThat(p.deviceMap().forHost("solo")).as(s.name()).isEqualTo(one.deviceMap());
            assertThat(p.stage("solo").plan().budget()).as(s.name()).isEqualTo(one.budget());
        }
    }

    @Test
    void aHostTooSmallForTheNextBlockGetsNothingWithAWarning() {
        Module model = glm6b(false);
        long embedding = bytes(model, "transformer.word_embeddings");
        PipelinePlan p = DeviceMapPlanner.planHosts(model, Strategy.SEQUENTIAL,
                options("tiny=cpu:" + (embedding - 1), "big=cpu:1GiB", "spare=cpu:1GiB").build());
        assertThat(p.stage("tiny").isEmpty()).isTrue();
        assertThat(p.stage("tiny").plan()).isNull();
        assertThat(p.stage("spare").isEmpty()).isTrue();
        assertThat(p.deviceMap().hosts()).containsExactly("big");
        assertThat(p.deviceMap().asMap()).containsOnlyKeys("");
        assertThat(p.warnings()).hasSize(2);
        assertThat(p.warnings().get(0)).contains("Host tiny holds nothing")
                .contains("'transformer.word_embeddings'").contains("tiny=cpu:");
        assertThat(p.warnings().get(1)).contains("Host spare holds nothing").contains("whole model");
    }

    @Test
    void hostsThatCannotHoldTheModelFailWithTheShortfall() {
        Module model = glm6b(false);
        long front = bytes(model, "transformer.word_embeddings") + bytes(model, "transformer.rotary_pos_emb");
        long block = bytes(model, layer(0));
        long left = 4 * block + bytes(model, "transformer.final_layernorm") + bytes(model, "lm_head");
        PlanOptions o = options("a=cpu:" + (front + 4 * block + block / 2), "b=cpu:" + (5 * block - 1)).build();
        assertThatThrownBy(() -> DeviceMapPlanner.planHosts(model, Strategy.SEQUENTIAL, o))
                .isInstanceOfSatisfying(PipelineShortfallException.class, e -> {
                    assertThat(e.shortfallBytes()).isEqualTo((double) left);
                    assertThat(e.leftOver()).containsExactly(layer(8), layer(9), layer(10), layer(11),
                            "transformer.final_layernorm", "lm_head");
                })
                .hasMessageContaining("transformer.layers.8 .. lm_head")
                .hasMessageContaining("a transformer.word_embeddings .. transformer.layers.3")
                .hasMessageContaining("b transformer.layers.4 .. transformer.layers.7")
                .hasMessageContaining("disk");
    }

    @Test
    void theLastHostAllowedToUseDiskTakesWhatMemoryCannotHold() {
        Module model = glm6b(false);
        long front = bytes(model, "transformer.word_embeddings") + bytes(model, "transformer.rotary_pos_emb");
        long block = bytes(model, layer(0));
        long tail = block + bytes(model, "transformer.final_layernorm") + bytes(model, "lm_head");
        PipelinePlan p = DeviceMapPlanner.planHosts(model, Strategy.SEQUENTIAL, options(
                "a=cpu:" + (front + 4 * block), "b=cpu:" + 2 * block + ",disk", "c=cpu:" + (tail + block - 1))
                .build());
        assertThat(p.stage("a").last()).isEqualTo(layer(3));
        assertThat(p.stage("b").first()).isEqualTo(layer(4));
        assertThat(p.stage("b").last()).isEqualTo(layer(10));
        assertThat(p.stage("c").modules()).containsExactly(layer(11), "transformer.final_layernorm", "lm_head");
        DevicePlan b = p.stage("b").plan();
        assertThat(b.deviceMap().asMap()).containsValue(Device.DISK);
        assertThat(b.memory().get(Device.CPU).weightBytes()).isLessThanOrEqualTo(2.0 * block);
        assertThat(p.deviceMap().placements().get(layer(10))).isEqualTo(HostDevice.parse("b/disk"));
        // A host after the disk host too small for the model's last unit gets nothing; the disk host takes all.
        PipelinePlan first = DeviceMapPlanner.planHosts(model, Strategy.SEQUENTIAL,
                options("a=cpu:" + 3 * block + ",disk", "b=cpu:100").build());
        assertThat(first.stage("b").isEmpty()).isTrue();
        assertThat(first.warnings()).singleElement().asString().contains("Host b holds nothing").contains("'lm_head'");
        assertThat(first.stage("a").modules()).hasSize(HostPlanner.units(model, List.of("GLMBlock")).size());
        assertThat(first.deviceMap().asMap()).containsValue(Device.DISK);
        // A model that fits in memory leaves the disk unused, the hosts filled in order.
        PipelinePlan roomy = DeviceMapPlanner.planHosts(model, Strategy.SEQUENTIAL,
                options("a=cpu:1GiB,disk", "b=cpu:1GiB").build());
        assertThat(roomy.deviceMap().asMap()).isEqualTo(Map.of("", Device.CPU));
        assertThat(roomy.deviceMap().hosts()).containsExactly("a");
    }

    @Test
    void anOutputLayerTiedToTheEmbeddingIsKeptByTheLastStageAsItsOwnCopy() {
        Module model = glm6b(true);
        long front = bytes(model, "transformer.word_embeddings") + bytes(model, "transformer.rotary_pos_emb");
        long block = bytes(model, layer(0));
        long head = model.tensor("lm_head.weight").byteSize();
        PipelinePlan p = DeviceMapPlanner.planHosts(model, Strategy.SEQUENTIAL,
                options("a=cpu:" + (front + 4 * block), "b=cpu:1GiB").build());
        assertThat(p.deviceMap().hostOf("transformer.word_embeddings.weight")).isEqualTo("a");
        assertThat(p.deviceMap().hostOf("lm_head.weight")).isEqualTo("b");
        // b holds a copy of the tied tensor: sized in full there, once in the model's size.
        double bExpected = (LAYERS - 4) * block + bytes(model, "transformer.final_layernorm") + head;
        assertThat(p.stage("b").weightBytes()).isEqualTo(bExpected);
        assertThat(p.modelSize()).isEqualTo((double) model.byteSize());
        assertThat(p.stage("a").weightBytes() + p.stage("b").weightBytes()).isEqualTo(model.byteSize() + head);
        // No "tied parameters on different devices" warning for a tie across stages.
        assertThat(p.deviceMap().checkDeviceMap(model)).isEmpty();
        assertThat(p.deviceMap().forHost("b").checkDeviceMap(model)).isEmpty();
        // On one host the tie keeps both ends together, as the one-machine planner does.
        PipelinePlan one = DeviceMapPlanner.planHosts(model, Strategy.SEQUENTIAL, options("solo=cpu:1GiB").build());
        assertThat(one.deviceMap().toJson()).isEqualTo("{\"\":\"solo/cpu\"}");
    }

    @Test
    void eachHostReservesTheCacheOfItsOwnBlocksOnly() {
        Module model = glm6b(false);
        long front = bytes(model, "transformer.word_embeddings") + bytes(model, "transformer.rotary_pos_emb");
        long block = bytes(model, layer(0));
        long cache = 1000;
        long workspace = 300;
        MemoryReservation.Builder r = MemoryReservation.builder("test cache").workspace(workspace);
        for (int i = 0; i < LAYERS; i++) {
            r.module(layer(i), cache);
        }
        // Exactly four blocks with their caches and one workspace: a host counting every block's cache (12) would
        // hold fewer, one counting none would hold a fifth.
        PipelinePlan p = DeviceMapPlanner.planHosts(model, Strategy.SEQUENTIAL,
                options("a=cpu:" + (front + 4 * (block + cache) + workspace + block / 2), "b=cpu:1GiB")
                        .reservation(r.build()).build());
        assertThat(p.stage("a").last()).isEqualTo(layer(3));
        DeviceMemory a = p.stage("a").plan().memory().get(Device.CPU);
        assertThat(a.reservedBytes()).isEqualTo(4 * cache);
        assertThat(a.workspaceBytes()).isEqualTo(workspace);
        assertThat(p.stage("b").plan().memory().get(Device.CPU).reservedBytes()).isEqualTo((LAYERS - 4) * cache);
    }

    @Test
    void aThousandLayersSplitOverThreeHostsByTheirBudgets() {
        Module model = new Module("Seed");
        ModuleList<Linear> layers = model.registerModule("layers", new ModuleList<>());
        for (int i = 0; i < 1000; i++) {
            layers.add(new Linear(10000, 10000, true, DType.FLOAT32));
        }
        double layer = bytes(model, "layers.0");
        PipelinePlan p = DeviceMapPlanner.planHosts(model, Strategy.SEQUENTIAL, PlanOptions.builder()
                .hosts(HostBudgets.parse(List.of("a=cpu:100GiB", "b=cpu:30GiB", "c=cpu:300GiB"))).build());
        // CPU-only hosts execute what they hold: each takes as many whole layers as its budget holds.
        int a = (int) Math.floor(100.0 * (1L << 30) / layer);
        int b = (int) Math.floor(30.0 * (1L << 30) / layer);
        assertThat(p.stage("a").modules()).hasSize(a);
        assertThat(p.stage("b").first()).isEqualTo("layers." + a);
        assertThat(p.stage("b").modules()).hasSize(b);
        assertThat(p.stage("c").modules()).hasSize(1000 - a - b);
        assertThat(p.stage("c").last()).isEqualTo("layers.999");
        assertThat(p.deviceMap().hostOf("layers." + (a + b))).isEqualTo("c");
    }

    @Test
    void hostBudgetsParseAndRefuseBadInput() {
        HostBudgets h = HostBudgets.parse(List.of("box-a=cuda:0:6GiB,cpu:8GiB", "box-b=1:2GiB,cpu:16GiB,disk"));
        assertThat(h.hosts()).containsExactly("box-a", "box-b");
        assertThat(h.budget("box-a").asMap()).containsExactly(Map.entry(Device.cuda(0), 6.0 * (1L << 30)),
                Map.entry(Device.CPU, 8.0 * (1L << 30)));
        assertThat(h.budget("box-b").devices()).containsExactly(Device.cuda(1), Device.CPU);
        assertThat(h.mayUseDisk("box-a")).isFalse();
        assertThat(h.mayUseDisk("box-b")).isTrue();
        assertThat(h.describe("box-b")).isEqualTo("box-b=cuda:1:2.00GiB,cpu:16.00GiB,disk");
        assertThat(HostBudgets.parse(List.of(h.describe("box-a"), h.describe("box-b")))).isEqualTo(h);
        for (String[] bad : new String[][] {
                {"box a=cpu:1GiB", "Invalid host name 'box a'"},
                {"box-a", "expected NAME=DEVICE:SIZE"},
                {"box-a=cpu", "'cpu' is not DEVICE:SIZE"},
                {"box-a=gpu0:1GiB", "Unknown device 'gpu0'"},
                {"box-a=cpu:10 potatoes", "10 potatoes"},
                {"box-a=disk:10GiB", "disk takes no size"},
                {"box-a=remote:1GiB", "remote holds no budget"},
                {"box-a=cpu:1GiB,cpu:2GiB", "cpu is given twice"},
                {"box-a=disk", "at least one device budget"}}) {
            assertThatThrownBy(() -> HostBudgets.parse(List.of(bad[0]))).as(bad[0])
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining(bad[1]);
        }
        assertThatThrownBy(() -> HostBudgets.parse(List.of("a=cpu:1GiB", "a=cpu:2GiB")))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("'a' is given twice");
        assertThatThrownBy(() -> h.budget("box-c")).isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("[box-a, box-b]");
        Module model = glm6b(false);
        PlanOptions withHosts = options("a=cpu:1GiB").build();
        assertThatThrownBy(() -> DeviceMapPlanner.plan(model, Strategy.AUTO, MaxMemory.parse("cpu=1GiB"), withHosts))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("planHosts");
        assertThatThrownBy(() -> DeviceMapPlanner.planHosts(model, Strategy.AUTO, PlanOptions.defaults()))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("hosts");
    }
}
