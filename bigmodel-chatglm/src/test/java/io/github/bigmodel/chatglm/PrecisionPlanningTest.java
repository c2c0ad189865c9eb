package io.github.bigmodel.chatglm;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.quant.Precision;
import io.github.bigmodel.dispatch.plan.DeviceMap;
import io.github.bigmodel.dispatch.plan.DeviceMapPlanner;
import io.github.bigmodel.dispatch.DispatchOptions;
import io.github.bigmodel.dispatch.plan.MaxMemory;
import io.github.bigmodel.dispatch.plan.ModuleSizes;
import io.github.bigmodel.dispatch.plan.PlanOptions;
import io.github.bigmodel.dispatch.plan.Strategy;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.slf4j.LoggerFactory;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;

/**
 * Planning with per-device precision on the chatglm3-6b preset (on meta, nothing allocated): a 6 GiB GPU at int4
 * takes every block, at fp16 only as many as fit next to the embedding and the reserve kept for the largest layer;
 * sizes at int4 are those of the model planned int4 on meta; mixed float types are refused by the options.
 */
class PrecisionPlanningTest {

    private static final String BLOCKS = "transformer.encoder.layers";
    private static final long GIB = 1L << 30;

    private static int blocksOn(DeviceMap map, Device device, int layers) {
        int n = 0;
        for (int i = 0; i < layers; i++) {
            if (device.equals(map.deviceOf(BLOCKS + "." + i))) {
                n++;
            }
        }
        return n;
    }

    private static DeviceMap plan(ChatGLMLanguageModel model, Precision gpu) {
        PlanOptions.Builder o = PlanOptions.builder().dtype(DType.FLOAT16);
        if (gpu != null) {
            o.gpuPrecision(gpu);
        }
        return DeviceMapPlanner.plan(model, Strategy.AUTO, MaxMemory.parse("0=6GiB,cpu=64GiB"), o.build())
                .deviceMap();
    }

    @Test
    void int4OnA6GiBGpuTakesMoreBlocksThanFp16() {
        ChatGLMLanguageModel model = ChatGLMLanguageModel.create(ChatGLMConfig.preset("chatglm3-6b"), DType.FLOAT16);
        int layers = model.config().numLayers();
        ModuleSizes fp16 = ModuleSizes.compute(model, DType.FLOAT16, Map.of());
        ModuleSizes int4 = ModuleSizes.compute(model, DType.FLOAT16, Map.of(), Precision.INT4);
        double block16 = fp16.size(BLOCKS + ".0");
        double block4 = int4.size(BLOCKS + ".0");
        // Sizes at int4 are those of the layers planned int4 on meta (what loading holds: 1/2 byte per weight and a
        // half scale per row, fp16 elsewhere).
        ChatGLMLanguageModel planned = ChatGLMLanguageModel.create(model.config(), DType.FLOAT16);
        planned.planPrecisions(name -> Device.CPU, DType.FLOAT16, d -> Precision.INT4);
        assertThat(block4).isEqualTo((double) planned.module(BLOCKS + ".0").byteSize());
        assertThat(int4.total()).isEqualTo((double) planned.byteSize());
        assertThat(block4).isLessThan(block16 / 3);
        assertThat(int4.size("transformer.output_layer")).isEqualTo(fp16.size("transformer.output_layer"));

        // Expected counts from the planner's rule (one GPU, so balancing keeps the whole 6 GiB): the GPU keeps room
        // for the largest layer (the fp16 output layer, larger than any block), the embedding goes first, then
        // blocks while they fit.
        double budget = 6.0 * GIB;
        double reserve = Math.max(fp16.size("transformer.output_layer"), block16);
        double front = fp16.size("transformer.embedding") + fp16.size("transformer.rotary_pos_emb");
        int expectedFp16 = (int) Math.min(layers, Math.floor((budget - reserve - front) / block16));
        assertThat(expectedFp16).isLessThan(layers);
        double whole4 = int4.total();
        assertThat(whole4 + Math.max(int4.size("transformer.output_layer"), block4)).as("int4 fits whole")
                .isLessThan(budget);

        DeviceMap atFp16 = plan(model, null);
        DeviceMap atFp16Explicit = plan(model, Precision.FP16);
        DeviceMap atInt4 = plan(model, Precision.INT4);
        int gpuFp16 = blocksOn(atFp16, Device.cuda(0), layers);
        int gpuInt4 = blocksOn(atInt4, Device.cuda(0), layers);
        assertThat(gpuFp16).isEqualTo(expectedFp16);
        assertThat(atFp16Explicit).isEqualTo(atFp16);
        assertThat(gpuInt4).isEqualTo(layers);
        assertThat(atInt4.devices()).containsExactly(Device.cuda(0));
        LoggerFactory.getLogger(PrecisionPlanningTest.class).info("chatglm3-6b on a 6 GiB GPU: {} of {} blocks at"
                + " fp16, {} at int4", gpuFp16, layers, gpuInt4);
        assertThat(gpuInt4).isGreaterThan(gpuFp16);
    }

    @Test
    void offloadedBlocksAreSizedAtTheMainDevicesPrecision() {
        // 2 GiB GPU at int4, CPU at int8: blocks on cpu execute on the GPU, so the cpu budget counts them at int4.
        ChatGLMLanguageModel model = ChatGLMLanguageModel.create(ChatGLMConfig.preset("chatglm3-6b"), DType.FLOAT16);
        int layers = model.config().numLayers();
        ModuleSizes int4 = ModuleSizes.compute(model, DType.FLOAT16, Map.of(), Precision.INT4);
        double block4 = int4.size(BLOCKS + ".0");
        double cpuBudget = 1.0 * GIB;
        PlanOptions o = PlanOptions.builder().dtype(DType.FLOAT16).gpuPrecision(Precision.INT4)
                .cpuPrecision(Precision.INT8).build();
        DeviceMap map = DeviceMapPlanner.plan(model, Strategy.SEQUENTIAL,
                MaxMemory.of(Map.of(0, 2 * GIB, "cpu", (long) cpuBudget)), o).deviceMap();
        int onCpu = blocksOn(map, Device.CPU, layers);
        // The cpu is a main device too: it keeps the reserve of the largest remaining layer (the output layer).
        double reserve = Math.max(int4.size("transformer.output_layer"), block4);
        assertThat(onCpu).isEqualTo((int) Math.floor((cpuBudget - reserve) / block4));
        assertThat(blocksOn(map, Device.cuda(0), layers) + onCpu + blocksOn(map, Device.DISK, layers))
                .isEqualTo(layers);
    }

    @Test
    void mixedFloatTypesAreRefusedNamingThem() {
        assertThatThrownBy(() -> DispatchOptions.builder().gpuPrecision(Precision.FP16).cpuPrecision(Precision.FP32)
                .build()).isInstanceOf(IllegalArgumentException.class).hasMessageContaining("float16")
                .hasMessageContaining("float32").hasMessageContaining("one floating-point dtype per model");
        assertThatThrownBy(() -> DispatchOptions.builder().dtype(DType.FLOAT32).cpuPrecision(Precision.BF16).build())
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("bfloat16");
        assertThatThrownBy(() -> DispatchOptions.builder().precision(Device.DISK, Precision.INT8))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("disk");
        DispatchOptions ok = DispatchOptions.builder().gpuPrecision(Precision.INT4).cpuPrecision(Precision.BF16)
                .precision(Device.cuda(1), Precision.INT8).build();
        assertThat(ok.plan().floatDtype()).isEqualTo(DType.BFLOAT16);
        assertThat(ok.plan().precisionOf(Device.cuda(0))).isEqualTo(Precision.INT4);
        assertThat(ok.plan().precisionOf(Device.cuda(1))).isEqualTo(Precision.INT8);
        assertThat(ok.plan().precisionOf(Device.CPU)).isEqualTo(Precision.BF16);
        assertThat(ok.toBuilder().build().plan().precisionOf(Device.cuda(1))).isEqualTo(Precision.INT8);
    }
}
