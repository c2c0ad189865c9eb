package io.github.bigmodel.dispatch;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.Linear;
import io.github.bigmodel.core.Module;
import io.github.bigmodel.core.ModuleList;
import io.github.bigmodel.core.Parameter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import io.github.bigmodel.dispatch.plan.DeviceInventory;
import io.github.bigmodel.dispatch.plan.DeviceMap;
import io.github.bigmodel.dispatch.plan.DeviceMapException;
import io.github.bigmodel.dispatch.plan.DeviceMapPlanner;
import io.github.bigmodel.dispatch.plan.DevicePlan;
import io.github.bigmodel.dispatch.plan.MaxMemory;
import io.github.bigmodel.dispatch.plan.ModuleSizes;
import io.github.bigmodel.dispatch.offload.OffloadFolder;
import io.github.bigmodel.dispatch.plan.PlanOptions;
import io.github.bigmodel.dispatch.plan.Strategy;

/** The seed examples and the public API around the planner: budgets, hand-written maps, JSON, offload index. */
class DeviceMapApiTest {

    private static final DeviceInventory TWO_GPUS = DeviceInventory.simulated(List.of(0L, 0L), 0L);

    @TempDir
    Path temp;

    private static Module twoBlocks(long features) {
        Module root = new Module("TwoBlockModel");
        for (String block : List.of("block1", "block2")) {
            Module b = root.registerModule(block, new Module("Block"));
            for (String linear : List.of("linear1", "linear2", "linear3")) {
                b.registerModule(linear, new Linear(features, features, true, DType.FLOAT32));
            }
        }
        return root;
    }

    /** A ChatGLM2-shaped tree: embedding, rotary, 28 encoder layers, final norm, output layer. */
    private static Module glmLike() {
        Module root = new Module("ChatGLMForConditionalGeneration");
        Module t = root.registerModule("transformer", new Module("ChatGLMModel"));
        Module emb = t.registerModule("embedding", new Module("Embedding"));
        emb.registerModule("word_embeddings", new Linear(8, 16, false, DType.FLOAT16));
        t.registerModule("rotary_pos_emb", new Module("RotaryEmbedding"))
                .registerBuffer("inv_freq", Parameter.empty(DType.FLOAT16, 4), false);
        Module enc = t.registerModule("encoder", new Module("GLMTransformer"));
        ModuleList<Module> layers = enc.registerModule("layers", new ModuleList<>());
        for (int i = 0; i < 28; i++) {
            Module block = layers.add(new Module("GLMBlock"));
            block.registerModule("mlp", new Linear(8, 8, false, DType.FLOAT16));
        }
        enc.registerModule("final_layernorm", new Linear(8, 8, false, DType.FLOAT16));
        t.registerModule("output_layer", new Linear(16, 8, false, DType.FLOAT16));
        return root;
    }

    @Test
    void thousandLinearsOfTenThousandPlanOnMetaQuicklyAndSequentially() {
        Module model = new Module("Seed");
        ModuleList<Linear> layers = model.registerModule("layers", new ModuleList<>());
        for (int i = 0; i < 1000; i++) {
            layers.add(new Linear(10000, 10000, true, DType.FLOAT32));
        }
        MaxMemory budget = MaxMemory.parse("0=10GiB,1=10GiB,cpu=30GiB", TWO_GPUS);
        long start = System.nanoTime();
        DevicePlan plan = DeviceMapPlanner.plan(model, Strategy.SEQUENTIAL, budget,
                PlanOptions.builder().inventory(TWO_GPUS).build());
        double seconds = (System.nanoTime() - start) / 1e9;

        // Rule 6.3: main devices (GPU 0, cpu) keep one layer free, GPU 1 does not, disk takes the rest.
        double layer = 10000.0 * 10000 * 4 + 10000 * 4;
        int gpu0 = (int) Math.floor((budget.get(Device.cuda(0)) - layer) / layer);
        int gpu1 = (int) Math.floor(budget.get(Device.cuda(1)) / layer);
        int cpu = (int) Math.floor((budget.get(Device.CPU) - layer) / layer);
        Map<Device, Integer> counts = new LinkedHashMap<>();
        plan.deviceMap().asMap().values().forEach(d -> counts.merge(d, 1, Integer::sum));
        assertThat(counts).containsExactly(Map.entry(Device.cuda(0), gpu0), Map.entry(Device.cuda(1), gpu1),
                Map.entry(Device.CPU, cpu), Map.entry(Device.DISK, 1000 - gpu0 - gpu1 - cpu));
        assertThat(plan.deviceMap().get("layers.0")).isEqualTo(Device.cuda(0));
        assertThat(plan.deviceMap().get("layers.999")).isEqualTo(Device.DISK);
        assertThat(plan.modelSize()).isEqualTo(1000 * layer);
        assertThat(model.namedParameters().values()).allMatch(p -> p.device().isMeta() && !p.isMaterialized());
        plan.deviceMap().checkDeviceMap(model);
        assertThat(seconds).as("planning 1000 layers on meta").isLessThan(10.0);
    }

    @Test
    void seedCheckErrorNamesTheUncoveredLinear3() {
        Module model = twoBlocks(10);
        DeviceMap map = DeviceMap.fromJson("{\"block1\": 0, \"block2.linear1\": 1, \"block2.linear2\": 1}");
        assertThatThrownBy(() -> map.checkDeviceMap(model))
                .isInstanceOf(DeviceMapException.class)
                .hasMessage("The device_map provided does not give any device to 2 parameter(s), in the module(s):"
                        + " block2.linear3")
                .satisfies(e -> assertThat(((DeviceMapException) e).accelerateMessage()).isEqualTo(
                        "The device_map provided does not give any device for the following parameters:"
                                + " block2.linear3.weight, block2.linear3.bias"));
    }

    @Test
    void jsonRoundTripKeepsOrderAndWritesGpusAsIntegers() {
        DeviceMap map = DeviceMap.fromJson("{\"b\": 1, \"a\": \"cpu\", \"c\": \"disk\", \"d\": \"cuda:0\"}");
        assertThat(map.asMap().keySet()).containsExactly("b", "a", "c", "d");
        assertThat(map.get("d")).isEqualTo(Device.cuda(0));
        String json = map.toJson();
        assertThat(json).isEqualTo("{\"b\":1,\"a\":\"cpu\",\"c\":\"disk\",\"d\":0}");
        assertThat(DeviceMap.fromJson(json)).isEqualTo(map);
        assertThat(DeviceMap.fromJson("{\"\": \"disk\"}").deviceOf("any.thing")).isEqualTo(Device.DISK);
    }

    @Test
    void badJsonMapsAreClearErrors() {
        assertThatThrownBy(() -> DeviceMap.fromJson("[1, 2]")).isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("JSON object");
        assertThatThrownBy(() -> DeviceMap.fromJson("{\"x\": \"cuda:x\"}"))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("'x'").hasMessageContaining("cuda:x");
        assertThatThrownBy(() -> DeviceMap.fromJson("{\"x\": 1.5}")).isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("'x'");
        assertThatThrownBy(() -> DeviceMap.fromJson("{\"x\": \"meta\"}")).isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("meta");
        assertThatThrownBy(() -> DeviceMap.fromJson("{\"x\": ")).isInstanceOf(IllegalArgumentException.class);
    }

    @Test
    void builderLayerRangesAreOneBasedAndInclusive() {
        Module model = glmLike();
        DeviceMap.Builder b = DeviceMap.builder(model)
                .layers("transformer.encoder.layers", 1, 12, Device.cuda(1))
                .layers("transformer.encoder.layers", 13, 24, Device.cuda(0))
                .layers("transformer.encoder.layers", 25, 28, Device.CPU)
                .put("transformer.embedding", 1)
                .put("transformer.rotary_pos_emb", "cuda:1")
                .put("transformer.encoder.final_layernorm", "cpu")
                .put("transformer.output_layer", Device.CPU);
        DeviceMap map = b.build();
        assertThat(map.size()).isEqualTo(32);
        assertThat(map.get("transformer.encoder.layers.0")).isEqualTo(Device.cuda(1));
        assertThat(map.get("transformer.encoder.layers.11")).isEqualTo(Device.cuda(1));
        assertThat(map.get("transformer.encoder.layers.12")).isEqualTo(Device.cuda(0));
        assertThat(map.get("transformer.encoder.layers.23")).isEqualTo(Device.cuda(0));
        assertThat(map.get("transformer.encoder.layers.24")).isEqualTo(Device.CPU);
        assertThat(map.get("transformer.encoder.layers.27")).isEqualTo(Device.CPU);
        assertThat(b.warnings()).isEmpty();
    }

    @Test
    void builderWarnsWhenTheMapReturnsToADeviceItLeft() {
        Module model = glmLike();
        DeviceMap.Builder b = DeviceMap.builder(model)
                .put("transformer.embedding", 0)
                .put("transformer.rotary_pos_emb", 0)
                .layers("transformer.encoder.layers", 1, 14, 0)
                .layers("transformer.encoder.layers", 15, 28, 1)
                .put("transformer.encoder.final_layernorm", 1)
                .put("transformer.output_layer", 0);
        b.build();
        assertThat(b.warnings()).hasSize(1);
        assertThat(b.warnings().get(0)).contains("returns to cuda:0").contains("transformer.output_layer")
                .contains("cuda:0 -> cuda:1 -> cuda:0");
    }

    @Test
    void builderRejectsOverlapsUnknownNamesDevicesRangesAndGaps() {
        Module model = glmLike();
        assertThatThrownBy(() -> DeviceMap.builder(model)
                .layers("transformer.encoder.layers", 1, 12, 0)
                .layers("transformer.encoder.layers", 12, 28, 1))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("transformer.encoder.layers.11")
                .hasMessageContaining("overlaps");
        assertThatThrownBy(() -> DeviceMap.builder(model).put("transformer.encoder", 0)
                .put("transformer.encoder.layers.3", 1))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("overlaps");
        assertThatThrownBy(() -> DeviceMap.builder(model).put("transformer.encoderr", 0))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("transformer.encoderr");
        assertThatThrownBy(() -> DeviceMap.builder(model).put("transformer.encoder", "cuda:x"))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("cuda:x");
        assertThatThrownBy(() -> DeviceMap.builder(model).put("transformer.encoder", Device.META))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("meta");
        assertThatThrownBy(() -> DeviceMap.builder(model).layers("transformer.encoder.layers", 0, 3, 0))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("1..28");
        assertThatThrownBy(() -> DeviceMap.builder(model).layers("transformer.encoder.layers", 20, 29, 0))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("1..28");
        assertThatThrownBy(() -> DeviceMap.builder(model).layers("transformer.decoder.layers", 1, 2, 0))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("transformer.decoder.layers");
        assertThatThrownBy(() -> DeviceMap.builder(model).put("transformer.embedding", 0)
                .layers("transformer.encoder.layers", 1, 28, 0).build())
                .isInstanceOf(DeviceMapException.class)
                .hasMessage("The device_map provided does not give any device to 2 parameter(s), in the module(s):"
                        + " transformer.encoder.final_layernorm, transformer.output_layer");
    }

    @Test
    void budgetsParseFromTextAndMapsInAccelerateOrder() {
        MaxMemory m = MaxMemory.parse("disk=1GB, cpu=30GiB, 1=10GiB, cuda:0=1.5GiB", TWO_GPUS);
        assertThat(m.devices()).containsExactly(Device.cuda(0), Device.cuda(1), Device.CPU, Device.DISK);
        assertThat(m.get(Device.cuda(0))).isEqualTo(1.5 * (1L << 30));
        assertThat(m.get(Device.DISK)).isEqualTo(1e9);
        Map<Object, Object> given = new LinkedHashMap<>();
        given.put("cpu", "2GB");
        given.put(1, 1000);
        given.put(Device.cuda(0), 5000L);
        MaxMemory fromMap = MaxMemory.of(given, TWO_GPUS);
        assertThat(fromMap.devices()).containsExactly(Device.cuda(0), Device.cuda(1), Device.CPU);
        assertThat(fromMap.toString()).isEqualTo("cuda:0=5000,cuda:1=1000,cpu=2000000000");
        MaxMemory defaults = MaxMemory.defaults(DeviceInventory.simulated(List.of(7L, 9L), 11L));
        assertThat(defaults.toString()).isEqualTo("cuda:0=7,cuda:1=9,cpu=11");
    }

    @Test
    void badBudgetsAndUnknownDevicesAreClearErrors() {
        assertThatThrownBy(() -> MaxMemory.parse("0=10 potatoes", TWO_GPUS))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("10 potatoes");
        assertThatThrownBy(() -> MaxMemory.parse("0=-1GB", TWO_GPUS))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("-1GB");
        assertThatThrownBy(() -> MaxMemory.of(Map.of("cpu", -5), TWO_GPUS))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("-5");
        assertThatThrownBy(() -> MaxMemory.parse("cuda:x=1GB", TWO_GPUS))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("cuda:x");
        assertThatThrownBy(() -> MaxMemory.of(Map.of("gpu0", "1GB"), TWO_GPUS))
                .isInstanceOf(DeviceMapException.class)
                .hasMessage("Device gpu0 is not recognized, available devices are integers(for GPU/XPU), 'mps',"
                        + " 'cpu' and 'disk'");
        assertThatThrownBy(() -> MaxMemory.parse("0:10GiB", TWO_GPUS))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("0:10GiB");
        assertThatThrownBy(() -> Strategy.parse("fastest")).isInstanceOf(DeviceMapException.class)
                .hasMessageContaining("'balanced_low_0'");
    }

    @Test
    void balancingFailsLikeAccelerateOnDiskKeysAndOddGpuIdsUnderLowZero() {
        Module model = twoBlocks(100);
        PlanOptions o = PlanOptions.builder().inventory(TWO_GPUS).build();
        assertThatThrownBy(() -> DeviceMapPlanner.plan(model, Strategy.AUTO,
                MaxMemory.parse("0=1MB,1=1MB,cpu=1GB,disk=1GB", TWO_GPUS), o))
                .isInstanceOf(DeviceMapException.class)
                .satisfies(e -> assertThat(((DeviceMapException) e).accelerateType()).isEqualTo("RuntimeError"));
        assertThatThrownBy(() -> DeviceMapPlanner.plan(model, Strategy.BALANCED_LOW_0,
                MaxMemory.parse("1=1MB,3=1MB,cpu=1GB", TWO_GPUS), o))
                .isInstanceOf(DeviceMapException.class)
                .satisfies(e -> assertThat(((DeviceMapException) e).accelerateMessage()).isEqualTo("0"));
        // Sequential accepts a disk budget.
        DevicePlan plan = DeviceMapPlanner.plan(model, Strategy.SEQUENTIAL,
                MaxMemory.parse("0=1MB,1=1MB,cpu=1GB,disk=1GB", TWO_GPUS), o);
        assertThat(plan.deviceMap().asMap()).isNotEmpty();
    }

    @Test
    void boolBuffersCountAnEighthOfAByteAndIntegerTensorsAreNotConverted() {
        Module m = new Module("M");
        m.registerBuffer("mask", Parameter.empty(DType.BOOL, 8), true);
        m.registerBuffer("ids", Parameter.empty(DType.INT64, 2), true);
        m.registerParameter("w", Parameter.empty(DType.FLOAT32, 4));
        ModuleSizes sizes = ModuleSizes.compute(m, DType.FLOAT16, Map.of());
        assertThat(sizes.size("mask")).isEqualTo(8 * 0.125);
        assertThat(sizes.size("ids")).isEqualTo(2 * 8.0);
        assertThat(sizes.size("w")).isEqualTo(4 * 2.0);
        assertThat(ModuleSizes.compute(m, null, Map.of("w", DType.FLOAT64)).size("w")).isEqualTo(4 * 8.0);
        assertThat(ModuleSizes.bytesPerElement("int2")).isEqualTo(0.25);
        assertThat(ModuleSizes.bytesPerElement("int4")).isEqualTo(0.5);
    }

    @Test
    void offloadIndexMergesIntoTheExistingOne() throws Exception {
        OffloadFolder first = new OffloadFolder(temp);
        first.write("a", DType.FLOAT32, new long[] {1}, new byte[4]);
        first.write("b", DType.INT8, new long[] {2}, new byte[2]);
        first.saveIndex();
        OffloadFolder second = new OffloadFolder(temp);
        second.write("c", DType.BOOL, new long[] {}, new byte[1]);
        second.write("a", DType.FLOAT16, new long[] {2}, new byte[4]);
        String text = second.saveIndex();
        assertThat(text).isEqualTo(Files.readString(temp.resolve("index.json")));
        assertThat(text.indexOf("\"a\"")).isLessThan(text.indexOf("\"b\""));
        assertThat(text.indexOf("\"b\"")).isLessThan(text.indexOf("\"c\""));
        assertThat(text).contains("\"a\": {\n    \"dtype\": \"float16\"").contains("\"shape\": []");
        assertThatThrownBy(() -> second.write("d", DType.FLOAT32, new long[] {3}, new byte[4]))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("12 bytes");
        assertThatThrownBy(() -> second.write("../x", DType.FLOAT32, new long[] {1}, new byte[4]))
                .isInstanceOf(IllegalArgumentException.class);
    }

    @Test
    void systemInventoryAnswersWithoutCuda() {
        DeviceInventory here = DeviceInventory.system();
        assertThat(here.cpuAvailableBytes()).isPositive();
        assertThat(here.gpuFreeBytes()).allMatch(free -> free >= 0);
    }
}
