package io.github.bigmodel.dispatch;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.Linear;
import io.github.bigmodel.core.Module;
import io.github.bigmodel.core.Parameter;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import io.github.bigmodel.dispatch.plan.DeviceInventory;
import io.github.bigmodel.dispatch.plan.DeviceMap;
import io.github.bigmodel.dispatch.plan.DeviceMapException;

/**
 * A pipeline stage loads only its own part: modules placed {@code remote} stay on meta, none of their tensors is
 * read (the stage's checkpoint may lack them), they get no hooks and count 0 bytes, and the stage's own modules hold
 * exactly the checkpoint's values.
 */
class RemotePlacementTest {

    private static final int BLOCKS = 6;
    private static final int HIDDEN = 16;
    private static final DeviceInventory NO_GPU = DeviceInventory.simulated(List.of(), 8L << 30);
    /** Blocks 0..2 on box-a, 3..5 on box-b (block 5 on box-b's disk). */
    private static final DeviceMap PIPELINE = DeviceMap.fromJson("{\"layers.0\":\"box-a/cpu\","
            + "\"layers.1\":\"box-a/cpu\","
            + "\"layers.2\":\"box-a/cpu\",\"layers.3\":\"box-b/cpu\",\"layers.4\":\"box-b/cpu\","
            + "\"layers.5\":\"box-b/disk\"}");

    private static Map<String, Tensor> weights;

    @TempDir
    Path tmp;

    @BeforeAll
    static void weights() {
        weights = new SyntheticStack(BLOCKS, HIDDEN).randomWeights(11);
    }

    @AfterAll
    static void release() {
        weights.values().forEach(Tensor::close);
    }

    /** The tensors of blocks {@code first..last} only. */
    private static Map<String, Tensor> blocks(int first, int last) {
        Map<String, Tensor> out = new LinkedHashMap<>();
        weights.forEach((k, v) -> {
            int block = Integer.parseInt(k.split("\\.")[1]);
            if (block >= first && block <= last) {
                out.put(k, v);
            }
        });
        return out;
    }

    private static Tensor input() {
        torch.manual_seed(5);
        return torch.randn(2, HIDDEN);
    }

    /** Blocks {@code first..last} of a stack holding every weight directly, on the CPU. */
    private static Tensor directRun(int first, int last, Tensor x) {
        SyntheticStack m = new SyntheticStack(BLOCKS, HIDDEN);
        weights.forEach((name, t) -> m.tensor(name).set(t.clone()));
        Tensor h = x;
        for (int i = first; i <= last; i++) {
            Tensor next = m.layers.get(i).forward(h);
            if (h != x) {
                h.close();
            }
            h = next;
        }
        m.toMeta();
        return h;
    }

    @Test
    void eachStageReadsOnlyItsOwnTensorsFromACheckpointLackingTheOthers() throws Exception {
        Path stageA = Checkpoints.singleFile(tmp.resolve("a"), blocks(0, 2));
        Path stageB = Checkpoints.singleFile(tmp.resolve("b"), blocks(3, 5));
        DeviceMap forA = PIPELINE.forHost("box-a");
        DeviceMap forB = PIPELINE.forHost("box-b");
        assertThat(forA.get("layers.4")).isEqualTo(Device.REMOTE);
        assertThat(forB.get("layers.4")).isEqualTo(Device.CPU);

        try (Tensor x = input();
                DispatchedModel<SyntheticStack> a = BigModel.loadCheckpointAndDispatch(new SyntheticStack(BLOCKS,
                        HIDDEN), stageA, DispatchOptions.builder().inventory(NO_GPU).deviceMap(forA).build());
                DispatchedModel<SyntheticStack> b = BigModel.loadCheckpointAndDispatch(new SyntheticStack(BLOCKS,
                        HIDDEN), stageB, DispatchOptions.builder().inventory(NO_GPU).deviceMap(forB)
                        .offloadFolder(tmp.resolve("offload")).build())) {
            for (Map.Entry<String, Tensor> e : weights.entrySet()) {
                int block = Integer.parseInt(e.getKey().split("\\.")[1]);
                Parameter inA = a.model().tensor(e.getKey());
                Parameter inB = b.model().tensor(e.getKey());
                Parameter own = block <= 2 ? inA : inB;
                Parameter remote = block <= 2 ? inB : inA;
                assertThat(remote.isMaterialized()).as("%s is remote: no values", e.getKey()).isFalse();
                assertThat(remote.device()).as(e.getKey()).isEqualTo(Device.META);
                if (block <= 4) {
                    assertThat(torch.equal(own.data(), e.getValue())).as("%s holds the checkpoint's values",
                            e.getKey()).isTrue();
                } else {
                    assertThat(own.device()).as("%s is offloaded to disk", e.getKey()).isEqualTo(Device.DISK);
                }
            }
            // One device on box-a: no hooks at all; box-b hooks its three blocks (one is offloaded), none remote.
            assertThat(a.hookCount()).isZero();
            assertThat(b.hookCount()).isEqualTo(3);
            for (int i = 0; i < 3; i++) {
                assertThat(b.model().layers.get(i).forwardHooks()).as("remote block %d", i).isEmpty();
            }
            assertThat(a.executionDevice("layers.4")).isEqualTo(Device.REMOTE);
            assertThat(a.executionDevice("layers.1")).isEqualTo(Device.CPU);

            long blockBytes = 0;
            for (Map.Entry<String, Tensor> e : blocks(0, 0).entrySet()) {
                blockBytes += e.getValue().nbytes();
            }
            assertThat(a.memoryReport().weightBytes()).containsOnlyKeys(Device.CPU);
            assertThat(a.memoryReport().weightBytes(Device.CPU)).isEqualTo(3 * blockBytes);
            assertThat(b.memoryReport().weightBytes(Device.CPU)).isEqualTo(2 * blockBytes);
            assertThat(b.memoryReport().weightBytes(Device.DISK)).isEqualTo(blockBytes);

            // The two stages run one after the other give the whole stack's answer, bit for bit.
            try (Tensor expected = directRun(0, 5, x); Tensor h = runBlocks(a.model(), 0, 2, x);
                    Tensor y = runBlocks(b.model(), 3, 5, h)) {
                assertThat(torch.equal(y, expected)).isTrue();
            }
        }
    }

    private static Tensor runBlocks(SyntheticStack m, int first, int last, Tensor x) {
        Tensor h = x;
        for (int i = first; i <= last; i++) {
            Tensor next = m.layers.get(i).forward(h);
            if (h != x) {
                h.close();
            }
            h = next;
        }
        return h;
    }

    @Test
    void aStageStillNamesItsOwnMissingTensors() throws Exception {
        Path onlyFirst = Checkpoints.singleFile(tmp.resolve("first"), blocks(0, 1));
        assertThatThrownBy(() -> BigModel.loadCheckpointAndDispatch(new SyntheticStack(BLOCKS, HIDDEN), onlyFirst,
                DispatchOptions.builder().inventory(NO_GPU).deviceMap(PIPELINE.forHost("box-a")).build()))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("lacks 4 tensor(s)")
                .hasMessageContaining("layers.2.up.weight")
                .hasMessageNotContaining("layers.3");
    }

    @Test
    void aMapNamingHostsIsNotLoadedAsIs() throws Exception {
        Path all = Checkpoints.singleFile(tmp.resolve("all"), weights);
        assertThatThrownBy(() -> BigModel.loadCheckpointAndDispatch(new SyntheticStack(BLOCKS, HIDDEN), all,
                DispatchOptions.builder().inventory(NO_GPU).deviceMap(PIPELINE).build()))
                .isInstanceOf(DeviceMapException.class)
                .hasMessageContaining("[box-a, box-b]")
                .hasMessageContaining("forHost");
    }

    /** An embedding and an output layer sharing one tensor, as ChatGLM-6B ties lm_head to the word embeddings. */
    static final class Tied extends Module {
        final Linear embed = registerModule("embed", new Linear(HIDDEN, 8, false, DType.FLOAT32));
        final Linear middle = registerModule("middle", new Linear(HIDDEN, HIDDEN, false, DType.FLOAT32));
        final Linear head = registerModule("head", new Linear(HIDDEN, 8, false, DType.FLOAT32));

        Tied() {
            super("Tied");
            tie("head.weight", "embed.weight");
        }
    }

    @Test
    void theLastStageLoadsItsOwnCopyOfATensorTiedToTheFirstStage() throws Exception {
        torch.manual_seed(3);
        Map<String, Tensor> w = new LinkedHashMap<>();
        w.put("embed.weight", torch.randn(8, HIDDEN));
        w.put("middle.weight", torch.randn(HIDDEN, HIDDEN));
        DeviceMap pipeline = DeviceMap.fromJson("{\"embed\":\"box-a/cpu\",\"middle\":\"box-a/cpu\","
                + "\"head\":\"box-b/cpu\"}");
        Path ckpt = Checkpoints.singleFile(tmp.resolve("tied"), Map.of("embed.weight", w.get("embed.weight")));
        try (DispatchedModel<Tied> last = BigModel.loadCheckpointAndDispatch(new Tied(), ckpt,
                DispatchOptions.builder().inventory(NO_GPU).deviceMap(pipeline.forHost("box-b")).build())) {
            // Linear keeps its own field; the tied name resolves through the module tree.
            assertThat(torch.equal(last.model().tensor("head.weight").data(), w.get("embed.weight"))).isTrue();
            assertThat(last.model().tensor("embed.weight")).isSameAs(last.model().tensor("head.weight"));
            assertThat(last.model().middle.weight().isMaterialized()).isFalse();
            assertThat(last.memoryReport().weightBytes(Device.CPU)).isEqualTo(w.get("embed.weight").nbytes());
        } finally {
            w.values().forEach(Tensor::close);
        }
    }
}
