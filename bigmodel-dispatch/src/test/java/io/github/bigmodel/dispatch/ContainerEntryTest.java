package io.github.bigmodel.dispatch;

import static org.assertj.core.api.Assertions.assertThat;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.ForwardHook;
import io.github.bigmodel.core.Linear;
import io.github.bigmodel.core.Module;
import io.github.bigmodel.core.ModuleList;
import io.github.bigmodel.core.Parameter;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import io.github.bigmodel.dispatch.plan.DeviceMap;
import io.github.bigmodel.dispatch.plan.DeviceInventory;

/**
 * Device-map entries that name a container whose own forward the model never calls (ChatGLM runs
 * {@code transformer.encoder}'s blocks one by one): the hooks go to the modules that do run, so the weights are
 * brought in where they are used, one block at a time. Regression for {@code {"transformer": "disk"}} failing with
 * "holds no values" and a whole encoder on disk failing with a null device.
 */
class ContainerEntryTest {

    private static final int BLOCKS = 3;
    private static final int HIDDEN = 16;
    private static final DeviceInventory NO_GPU = DeviceInventory.simulated(List.of(), 8L << 30);

    /** {@code body} holds the blocks and a norm-like head; the root runs them directly, never {@code body}. */
    static final class Bypassed extends Module {
        final Module body = registerModule("body", new Module("Body"));
        final ModuleList<SyntheticStack.Block> layers = body.registerModule("layers", new ModuleList<>());
        final Linear head = body.registerModule("head", new Linear(HIDDEN, HIDDEN, true, DType.FLOAT32));
        final Linear out = registerModule("out", new Linear(HIDDEN, 4, false, DType.FLOAT32));

        Bypassed() {
            super("Bypassed");
            for (int i = 0; i < BLOCKS; i++) {
                layers.add(new SyntheticStack.Block(HIDDEN));
            }
        }

        Tensor forward(Tensor input) {
            Tensor x = input;
            for (SyntheticStack.Block b : layers.asList()) {
                x = b.forward(x);
            }
            return out.forward(head.forward(x));
        }
    }

    private static Map<String, Tensor> weights;
    private static Tensor input;
    private static Tensor expected;

    @TempDir
    Path tmp;

    @BeforeAll
    static void reference() {
        Bypassed m = new Bypassed();
        torch.manual_seed(11);
        weights = new java.util.LinkedHashMap<>();
        m.stateDict().forEach((name, p) -> weights.put(name, torch.randn(p.shape())
                .mul_(new org.bytedeco.pytorch.Scalar(0.1))));
        input = torch.randn(2, HIDDEN);
        expected = materialized().forward(input);
    }

    @AfterAll
    static void release() {
        weights.values().forEach(Tensor::close);
        input.close();
        expected.close();
    }

    private static Bypassed materialized() {
        Bypassed m = new Bypassed();
        weights.forEach((name, t) -> m.tensor(name).set(t.clone()));
        return m;
    }

    @Test
    void hookTargetsAreTheModulesThatRun() {
        Bypassed m = new Bypassed();
        assertThat(Dispatcher.hookTargets(m, DeviceMap.fromJson("{\"body\": \"disk\", \"out\": \"cpu\"}"),
                Device.CPU).keySet()).containsExactly("body.layers.0", "body.layers.1", "body.layers.2", "body.head",
                "out");
        assertThat(Dispatcher.hookTargets(m, DeviceMap.fromJson("{\"\": \"disk\"}"), Device.CPU).keySet())
                .containsExactly("body.layers.0", "body.layers.1", "body.layers.2", "body.head", "out");
        // A nested entry keeps its own targets; a tensor entry hooks the module that holds the tensor.
        assertThat(Dispatcher.hookTargets(m, DeviceMap.fromJson("{\"\": \"cpu\", \"body.layers.1.up\": \"disk\","
                + " \"body.head.weight\": \"disk\"}"), Device.CPU).keySet())
                .containsExactly("body.layers.0", "body.layers.1", "body.layers.1.up", "body.layers.2", "body.head",
                        "out");
        // An entry that is a block is one target, whatever it holds below.
        assertThat(Dispatcher.hookTargets(m, DeviceMap.fromJson("{\"body.layers\": \"disk\", \"body.head\": \"cpu\","
                + " \"out\": \"cpu\"}"), Device.CPU).keySet())
                .containsExactly("body.layers.0", "body.layers.1", "body.layers.2", "body.head", "out");
    }

    @Test
    void containerOnDiskComputesBitIdenticalOneBlockInMemoryAtATime() {
        for (String json : new String[] {"{\"body\": \"disk\", \"out\": \"cpu\"}", "{\"\": \"disk\"}",
                "{\"body.layers\": \"disk\", \"body.head\": \"cpu\", \"out\": \"disk\"}",
                "{\"\": \"cpu\", \"body.layers.1.up\": \"disk\", \"body.head.weight\": \"disk\"}"}) {
            for (int prefetch : new int[] {0, 1}) {
                Bypassed m = materialized();
                List<String> seen = new ArrayList<>();
                try (DispatchedModel<Bypassed> d = BigModel.dispatchModel(m, DeviceMap.fromJson(json),
                        DispatchOptions.builder().inventory(NO_GPU).prefetch(prefetch)
                                .offloadFolder(tmp.resolve("f" + Math.abs(json.hashCode()) + "-" + prefetch))
                                .build())) {
                    for (int i = 0; i < BLOCKS; i++) {
                        int block = i;
                        // Added after the dispatch hook, so it runs once the block's weights are in.
                        m.layers.get(i).addForwardHook(new ForwardHook() {
                            @Override
                            public void beforeForward(Module module) {
                                seen.add(block + ":" + materializedBlocks(m));
                            }
                        });
                    }
                    for (int step = 0; step < 2; step++) {
                        try (Tensor y = m.forward(input)) {
                            assertThat(torch.equal(y, expected)).as(json + " prefetch " + prefetch).isTrue();
                        }
                        if (json.contains("\"body\": \"disk\"") || json.equals("{\"\": \"disk\"}")) {
                            assertThat(m.tensor("body.layers.1.up.weight").device()).as("between forwards")
                                    .isEqualTo(Device.DISK);
                            assertThat(m.tensor("body.head.bias").device()).isEqualTo(Device.DISK);
                        }
                    }
                    if (!json.startsWith("{\"\": \"cpu\"")) {
                        // Inside block i only block i's weights are in memory, never the whole container.
                        assertThat(seen).as(json).containsExactly("0:[0]", "1:[1]", "2:[2]", "0:[0]", "1:[1]",
                                "2:[2]");
                    }
                }
            }
        }
    }

    /** The blocks whose weights all hold values now. */
    private static List<Integer> materializedBlocks(Bypassed m) {
        List<Integer> out = new ArrayList<>();
        for (int i = 0; i < BLOCKS; i++) {
            if (m.layers.get(i).namedParameters().values().stream().allMatch(Parameter::isMaterialized)) {
                out.add(i);
            }
        }
        return out;
    }
}
