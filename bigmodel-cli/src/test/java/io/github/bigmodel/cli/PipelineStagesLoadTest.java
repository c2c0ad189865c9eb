package io.github.bigmodel.cli;

import static org.assertj.core.api.Assertions.assertThat;

import io.github.bigmodel.chatglm.ChatGLMFamily;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.Parameter;
import io.github.bigmodel.core.testing.ReferenceTree;
import io.github.bigmodel.dispatch.BigModel;
import io.github.bigmodel.dispatch.DispatchOptions;
import io.github.bigmodel.dispatch.DispatchedModel;
import io.github.bigmodel.dispatch.plan.DeviceMapPlanner;
import io.github.bigmodel.dispatch.plan.HostBudgets;
import io.github.bigmodel.dispatch.plan.ModuleSizes;
import io.github.bigmodel.dispatch.plan.PipelinePlan;
import io.github.bigmodel.dispatch.plan.PlanOptions;
import io.github.bigmodel.dispatch.plan.Strategy;
import io.github.bigmodel.safetensors.Checkpoint;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;

/**
 * Planning a reference model over two hosts, then loading each host's part from the reference checkpoint: each
 * stage holds exactly its own tensors with the checkpoint's values, the rest stays on meta. For ChatGLM-6B the last
 * stage holds its own copy of the output layer tied to the first stage's word embeddings. Layer counts and names
 * come from the tree's config.json.
 */
class PipelineStagesLoadTest {

    @Test
    void chatglm6bStagesLoadTheirOwnTensorsAndTheTiedHead() {
        check("chatglm-6b-tiny", "transformer.word_embeddings", "transformer.layers", "lm_head");
    }

    @Test
    void chatglm3StagesLoadTheirOwnTensors() {
        check("chatglm3-6b-tiny", "transformer.embedding.word_embeddings", "transformer.encoder.layers",
                "transformer.output_layer");
    }

    private static void check(String name, String embedding, String layers, String head) {
        Path dir = ReferenceTree.model(name);
        ChatGLMFamily family = ChatGLMFamily.ofFolder(dir);
        int numLayers = family.config().numLayers();
        ChatGLMLanguageModel meta = family.createModel(DType.FLOAT32);
        ModuleSizes sizes = ModuleSizes.compute(meta, DType.FLOAT32, null);
        // box-a: exactly the units up to and including the first block (whatever sits before it, e.g. rotary).
        double front = 0;
        for (String unit : meta.stateDict().keySet().stream().map(n -> n.substring(0, n.lastIndexOf('.')))
                .distinct().toList()) {
            if (unit.startsWith(layers + ".")) {
                break;
            }
            front += sizes.size(unit);
        }
        front += sizes.size(layers + ".0");
        PipelinePlan plan = DeviceMapPlanner.planHosts(meta, Strategy.SEQUENTIAL, PlanOptions.builder()
                .dtype(DType.FLOAT32)
                .hosts(HostBudgets.parse(List.of("box-a=cpu:" + (long) front, "box-b=cpu:1GiB"))).build());
        assertThat(plan.stage("box-a").first()).isEqualTo(embedding);
        assertThat(plan.stage("box-a").last()).isEqualTo(layers + ".0");
        assertThat(plan.stage("box-b").first()).isEqualTo(layers + ".1");
        assertThat(plan.stage("box-b").modules()).contains(layers + "." + (numLayers - 1));
        assertThat(plan.stage("box-b").last()).isEqualTo(head);

        try (Checkpoint checkpoint = Checkpoint.open(dir)) {
            for (String host : plan.deviceMap().hosts()) {
                ChatGLMLanguageModel model = family.createModel(DType.FLOAT32);
                try (DispatchedModel<ChatGLMLanguageModel> stage = BigModel.loadCheckpointAndDispatch(model, dir,
                        DispatchOptions.builder().dtype(DType.FLOAT32).deviceMap(plan.deviceMap().forHost(host))
                                .build())) {
                    List<String> local = new ArrayList<>();
                    Map<Parameter, String> stored = new IdentityHashMap<>();
                    for (Map.Entry<String, Parameter> e : model.stateDict().entrySet()) {
                        if (checkpoint.contains(e.getKey())) {
                            stored.putIfAbsent(e.getValue(), e.getKey());
                        }
                    }
                    for (Map.Entry<String, Parameter> e : model.stateDict().entrySet()) {
                        boolean mine = host.equals(plan.deviceMap().hostOf(e.getKey()));
                        if (!mine) {
                            assertThat(stage.executionDevice(e.getKey())).as(e.getKey()).isEqualTo(Device.REMOTE);
                            continue;
                        }
                        local.add(e.getKey());
                        Parameter p = e.getValue();
                        assertThat(p.isMaterialized()).as("%s on %s", e.getKey(), host).isTrue();
                        try (Tensor expected = checkpoint.load(stored.get(p))) {
                            assertThat(torch.equal(p.data(), expected)).as(e.getKey()).isTrue();
                        }
                    }
                    assertThat(local).isNotEmpty();
                    if (host.equals("box-a")) {
                        // Blocks after the first are not box-a's: no values here.
                        assertThat(model.tensor(layers + ".1." + anyTensorOf(model, layers + ".1")).isMaterialized())
                                .isFalse();
                    }
                }
            }
        }
    }

    private static String anyTensorOf(ChatGLMLanguageModel model, String module) {
        return model.module(module).namedParameters().keySet().iterator().next();
    }
}
