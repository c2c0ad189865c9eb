package io.github.bigmodel.core;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.List;
import org.bytedeco.pytorch.Tensor;
import org.junit.jupiter.api.Test;

class ModuleTest {

    /** A toy model in the shape of accelerate's docs: a block of two linears, a norm buffer, a tied head. */
    static final class Toy extends Module {
        final Module embed = registerModule("embed", new Module("Embedding"));
        final ModuleList<Block> blocks = registerModule("blocks", new ModuleList<>());
        final Linear head;

        Toy() {
            embed.registerParameter("weight", Parameter.empty(DType.FLOAT32, 16, 8));
            blocks.add(new Block());
            blocks.add(new Block());
            head = registerModule("head", new Linear(8, 16, false, DType.FLOAT32));
            registerBuffer("position_ids", Parameter.empty(DType.INT64, 1, 32), true);
            registerBuffer("cache", Parameter.empty(DType.FLOAT32, 4), false);
            tie("head.weight", "embed.weight");
        }
    }

    static final class Block extends Module {
        Block() {
            registerModule("fc1", new Linear(8, 32, true, DType.FLOAT32));
            registerModule("fc2", new Linear(32, 8, true, DType.FLOAT32));
        }

        @Override
        public String className() {
            return "GLMBlock";
        }
    }

    @Test
    void dottedNamesInPyTorchOrder() {
        Toy toy = new Toy();
        assertThat(toy.namedModules().keySet()).containsExactly("", "embed", "blocks", "blocks.0", "blocks.0.fc1",
                "blocks.0.fc2", "blocks.1", "blocks.1.fc1", "blocks.1.fc2", "head");
        // head.weight is the embedding's tensor: listed once, under its first name.
        assertThat(toy.namedParameters().keySet()).containsExactly("embed.weight", "blocks.0.fc1.weight",
                "blocks.0.fc1.bias", "blocks.0.fc2.weight", "blocks.0.fc2.bias", "blocks.1.fc1.weight",
                "blocks.1.fc1.bias", "blocks.1.fc2.weight", "blocks.1.fc2.bias");
        // state_dict: own params, own persistent buffers, then children; aliases included, non-persistent excluded.
        assertThat(toy.stateDict().keySet()).containsExactly("position_ids", "embed.weight", "blocks.0.fc1.weight",
                "blocks.0.fc1.bias", "blocks.0.fc2.weight", "blocks.0.fc2.bias", "blocks.1.fc1.weight",
                "blocks.1.fc1.bias", "blocks.1.fc2.weight", "blocks.1.fc2.bias", "head.weight");
        assertThat(toy.namedBuffers().keySet()).containsExactly("position_ids", "cache");
        assertThat(toy.isPersistentBuffer("cache")).isFalse();
    }

    @Test
    void tiedParametersReported() {
        Toy toy = new Toy();
        assertThat(toy.tiedParameters()).containsExactly(List.of("embed.weight", "head.weight"));
        assertThat(toy.tensor("head.weight")).isSameAs(toy.tensor("embed.weight"));
    }

    @Test
    void classNamesForNoSplitRules() {
        Toy toy = new Toy();
        assertThat(toy.module("blocks.0").className()).isEqualTo("GLMBlock");
        assertThat(toy.module("blocks").className()).isEqualTo("ModuleList");
        assertThat(toy.module("head").className()).isEqualTo("Linear");
        assertThat(toy.module("embed").className()).isEqualTo("Embedding");
        assertThat(toy.className()).isEqualTo("Toy");
    }

    @Test
    void sizesCountTiedTensorsOnce() {
        Toy toy = new Toy();
        long block = (8 * 32 + 32 + 32 * 8 + 8) * 4L;
        assertThat(toy.byteSize()).isEqualTo(16 * 8 * 4 + 2 * block + 32 * 8 + 4 * 4);
        assertThat(toy.parameterCount()).isEqualTo(16 * 8 + 2 * (block / 4));
    }

    @Test
    void lookupsAndErrorsNameThePath() {
        Toy toy = new Toy();
        assertThat(toy.module("")).isSameAs(toy);
        assertThat(toy.findModule("blocks.7")).isNull();
        assertThatThrownBy(() -> toy.module("blocks.7")).hasMessageContaining("'blocks.7'");
        assertThatThrownBy(() -> toy.tensor("blocks.0.fc3.weight")).hasMessageContaining("'blocks.0.fc3.weight'");
        assertThatThrownBy(() -> toy.registerModule("head", new Module("X"))).hasMessageContaining("'head'");
        assertThatThrownBy(() -> toy.registerModule("a.b", new Module("X"))).hasMessageContaining("'a.b'");
        assertThatThrownBy(() -> toy.tie("blocks.0.fc1.weight", "embed.weight")).hasMessageContaining("shapes");
    }

    @Test
    void materializeOneParameterAtATimeAndRunForward() {
        Linear fc = new Linear(3, 2, true, DType.FLOAT32);
        assertThat(fc.weight().device()).isEqualTo(Device.META);
        assertThatThrownBy(() -> fc.weight().data()).isInstanceOf(IllegalStateException.class)
                .hasMessageContaining("meta");
        try (Tensor w = Tensors.empty(DType.FLOAT32, Device.CPU, 2, 3);
             Tensor b = Tensors.empty(DType.FLOAT32, Device.CPU, 2);
             Tensor x = Tensors.empty(DType.FLOAT32, Device.CPU, 1, 3)) {
            w.fill_(new org.bytedeco.pytorch.Scalar(1.0));
            b.fill_(new org.bytedeco.pytorch.Scalar(0.5));
            x.fill_(new org.bytedeco.pytorch.Scalar(2.0));
            fc.weight().set(w.clone());
            fc.bias().set(b.clone());
            assertThat(fc.weight().device()).isEqualTo(Device.CPU);
            try (Tensor y = fc.forward(x)) {
                assertThat(Tensors.shape(y)).containsExactly(1, 2);
                assertThat(y.sum().item_double()).isEqualTo(2 * (3 * 2.0 + 0.5));
            }
            assertThatThrownBy(() -> fc.bias().set(w)).hasMessageContaining("Shape mismatch");
        }
        fc.toMeta();
        assertThat(fc.weight().isMaterialized()).isFalse();
        fc.weight().markOffloaded();
        assertThat(fc.weight().device()).isEqualTo(Device.DISK);
    }
}
