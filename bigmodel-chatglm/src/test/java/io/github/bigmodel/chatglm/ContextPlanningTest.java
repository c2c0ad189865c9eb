package io.github.bigmodel.chatglm;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.dispatch.plan.DeviceMap;
import io.github.bigmodel.dispatch.plan.DeviceMapPlanner;
import io.github.bigmodel.dispatch.plan.DeviceMemory;
import io.github.bigmodel.dispatch.plan.DevicePlan;
import io.github.bigmodel.dispatch.plan.MaxMemory;
import io.github.bigmodel.dispatch.plan.MemoryReservation;
import io.github.bigmodel.dispatch.plan.ModuleSizes;
import io.github.bigmodel.dispatch.plan.PlanOptions;
import io.github.bigmodel.dispatch.plan.Strategy;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.slf4j.LoggerFactory;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.chatglm.model.ContextReservation;

/**
 * Planning the real presets (on meta, nothing allocated) for one 10 GiB GPU with room for generation: the KV cache
 * of every block lands on GPU 0 (blocks offloaded to the cpu execute there, and {@link ChatGLMLanguageModel#newCache}
 * puts a layer's buffers where it runs), so GPU 0 keeps it together with one step's workspace and takes fewer
 * blocks. Expected block counts are derived from the module sizes with the planner's rule.
 */
class ContextPlanningTest {

    private static final long GIB = 1L << 30;
    private static final long MIB = 1L << 20;
    private static final MaxMemory BUDGET = MaxMemory.parse("0=10GiB,cpu=64GiB");

    private static int blocksOn(DeviceMap map, String prefix, Device device, int layers) {
        int n = 0;
        for (int i = 0; i < layers; i++) {
            n += device.equals(map.deviceOf(prefix + "." + i)) ? 1 : 0;
        }
        return n;
    }

    private static PlanOptions.Builder options() {
        return PlanOptions.builder().dtype(DType.FLOAT16);
    }

    private static DevicePlan plan(ChatGLMLanguageModel model, MemoryReservation reservation) {
        PlanOptions.Builder o = options();
        if (reservation != null) {
            o.reservation(reservation);
        }
        return DeviceMapPlanner.plan(model, Strategy.AUTO, BUDGET, o.build());
    }

    /** Blocks that fit after {@code front}, next to the reserve for the largest layer and {@code kept} bytes. */
    private static int fitting(double front, double largest, double kept, double block, int layers) {
        return (int) Math.min(layers, Math.floor((10.0 * GIB - largest - front - kept) / block));
    }

    @Test
    void chatglm3At8192KeepsTheWholeKvCacheOnGpu0AndOffloadsMoreBlocks() {
        ChatGLMConfig config = ChatGLMConfig.preset("chatglm3-6b");
        ChatGLMLanguageModel model = ChatGLMLanguageModel.create(config, DType.FLOAT16);
        int layers = config.numLayers();
        // Multi-query attention: 2 groups of 128 channels cached per layer, keys and values, 2 bytes each.
        assertThat(config.kvHeads()).isEqualTo(config.multiQueryGroupNum()).isEqualTo(2);
        assertThat(config.headDim()).isEqualTo(128);
        MemoryReservation r = ContextReservation.of(config, 8192, 1, DType.FLOAT16);
        long kv = (long) layers * 2 * 2 * 128 * 2 * 8192;
        assertThat(kv).isEqualTo(224 * MIB);
        assertThat(r.totalModuleBytes()).isEqualTo(kv);
        String prefix = ContextReservation.blockPrefix(config);
        assertThat(prefix).isEqualTo("transformer.encoder.layers");
        r.moduleBytes().keySet().forEach(name -> assertThat(model.findModule(name)).as(name).isNotNull());
        // The larger of a 512-token prompt step and one decoding step at 8192 positions: the prompt's scores.
        long workspace = ContextReservation.workspaceBytes(config, 512, 1, DType.FLOAT16, 512);
        assertThat(workspace).isGreaterThan(ContextReservation.workspaceBytes(config, 8192, 1, DType.FLOAT16, 1));
        assertThat(r.workspaceBytes()).isEqualTo(workspace);

        DevicePlan plain = plan(model, null);
        DevicePlan withContext = plan(model, r);
        ModuleSizes sizes = ModuleSizes.compute(model, DType.FLOAT16, Map.of());
        double block = sizes.size(prefix + ".0");
        double largest = Math.max(sizes.size("transformer.output_layer"), block);
        double front = sizes.size("transformer.embedding") + sizes.size("transformer.rotary_pos_emb");
        int plainOnGpu = blocksOn(plain.deviceMap(), prefix, Device.cuda(0), layers);
        int contextOnGpu = blocksOn(withContext.deviceMap(), prefix, Device.cuda(0), layers);
        assertThat(plainOnGpu).isEqualTo(fitting(front, largest, 0, block, layers));
        assertThat(contextOnGpu).isEqualTo(fitting(front, largest, kv + workspace, block, layers))
                .isLessThan(plainOnGpu);

        DeviceMemory gpu = withContext.memory().get(Device.cuda(0));
        assertThat(gpu.reservedBytes()).isEqualTo(kv);
        assertThat(gpu.workspaceBytes()).isEqualTo(workspace);
        assertThat(gpu.weightBytes()).isEqualTo(front + contextOnGpu * block);
        assertThat(gpu.freeBytes()).isGreaterThanOrEqualTo(0);
        assertThat(withContext.memory().get(Device.CPU).reservedBytes()).isZero();
        LoggerFactory.getLogger(ContextPlanningTest.class).info("chatglm3-6b fp16 on 10 GiB: {} blocks on GPU 0"
                + " without context, {} with 8192 positions (KV {} bytes, workspace {} bytes)", plainOnGpu,
                contextOnGpu, kv, workspace);
    }

    @Test
    void chatglm6bCaches448KibPerPositionAndOffloadsMoreBlocks() {
        ChatGLMConfig config = ChatGLMConfig.preset("chatglm-6b");
        ChatGLMLanguageModel model = ChatGLMLanguageModel.create(config, DType.FLOAT16);
        int layers = config.numLayers();
        // Every head is cached: 32 heads x 128 channels, keys and values, 2 bytes, 28 layers.
        assertThat(config.kvHeads()).isEqualTo(config.numAttentionHeads()).isEqualTo(32);
        assertThat(ContextReservation.of(config, 1, 1, DType.FLOAT16).totalModuleBytes()).isEqualTo(448 * 1024);
        int context = config.maxPositions();
        MemoryReservation r = ContextReservation.of(config, context, 1, DType.FLOAT16);
        long kv = 448L * 1024 * context;
        assertThat(r.totalModuleBytes()).isEqualTo(kv);
        String prefix = ContextReservation.blockPrefix(config);
        assertThat(prefix).isEqualTo("transformer.layers");
        r.moduleBytes().keySet().forEach(name -> assertThat(model.findModule(name)).as(name).isNotNull());

        DevicePlan plain = plan(model, null);
        DevicePlan withContext = plan(model, r);
        ModuleSizes sizes = ModuleSizes.compute(model, DType.FLOAT16, Map.of());
        double block = sizes.size(prefix + ".0");
        // The word embeddings go first (with lm_head, tied to them); then the largest layer left is a block.
        double front = sizes.size("transformer.word_embeddings");
        int plainOnGpu = blocksOn(plain.deviceMap(), prefix, Device.cuda(0), layers);
        int contextOnGpu = blocksOn(withContext.deviceMap(), prefix, Device.cuda(0), layers);
        assertThat(plainOnGpu).isEqualTo(fitting(front, block, 0, block, layers));
        assertThat(contextOnGpu).isEqualTo(fitting(front, block, kv + r.workspaceBytes(), block, layers))
                .isLessThan(plainOnGpu);
        assertThat(withContext.memory().get(Device.cuda(0)).reservedBytes()).isEqualTo(kv);
    }

    @Test
    void withoutAContextThePlanIsTheUsualOne() {
        ChatGLMLanguageModel model = ChatGLMLanguageModel.create(ChatGLMConfig.preset("chatglm3-6b"), DType.FLOAT16);
        DevicePlan plain = plan(model, null);
        DevicePlan none = plan(model, MemoryReservation.NONE);
        assertThat(none.deviceMap()).isEqualTo(plain.deviceMap());
        assertThat(none.memory()).isEqualTo(plain.memory());
        assertThat(plain.memory().get(Device.cuda(0)).reservedBytes()).isZero();
    }

    @Test
    void int4BlocksKeepAFloatCache() {
        // With int4 weights on the GPU, the cache stays in the model's float dtype: same KV figure as fp16.
        ChatGLMConfig config = ChatGLMConfig.preset("chatglm3-6b");
        ChatGLMLanguageModel model = ChatGLMLanguageModel.create(config, DType.FLOAT16);
        MemoryReservation r = ContextReservation.of(model, 8192, 1);
        DevicePlan p = DeviceMapPlanner.plan(model, Strategy.AUTO, BUDGET, options()
                .gpuPrecision(io.github.bigmodel.core.quant.Precision.INT4).reservation(r).build());
        assertThat(p.deviceMap().devices()).containsExactly(Device.cuda(0));
        assertThat(p.memory().get(Device.cuda(0)).reservedBytes()).isEqualTo(224 * MIB);
    }

    @Test
    void badContextsAreRefusedNamingTheValue() {
        ChatGLMConfig glm3 = ChatGLMConfig.preset("chatglm3-6b");
        assertThatThrownBy(() -> ContextReservation.of(glm3, 0, 1, DType.FLOAT16))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("context length must be positive");
        assertThatThrownBy(() -> ContextReservation.of(glm3, 8192, -2, DType.FLOAT16))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("batch size must be positive");
        assertThatThrownBy(() -> ContextReservation.of(glm3, glm3.maxPositions() + 1L, 1, DType.FLOAT16))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining(Integer.toString(glm3.maxPositions()));
        assertThatThrownBy(() -> ContextReservation.of(glm3, 8192, 1, DType.INT8))
                .isInstanceOf(IllegalArgumentException.class);
    }
}
