package io.github.bigmodel.core;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.ArrayList;
import java.util.List;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;

class ForwardHookTest {

    private static Linear identityLinear() {
        Linear fc = new Linear(2, 2, false, DType.FLOAT32);
        Tensor w = Tensors.empty(DType.FLOAT32, Device.CPU, 2, 2);
        w.zero_();
        w.diagonal().fill_(new Scalar(1.0));
        fc.weight().set(w);
        return fc;
    }

    private static final class Recorder implements ForwardHook {
        final String name;
        final List<String> log;

        Recorder(String name, List<String> log) {
            this.name = name;
            this.log = log;
        }

        @Override
        public void beforeForward(Module module) {
            log.add(name + ".before");
        }

        @Override
        public Tensor onInput(Module module, Tensor input) {
            log.add(name + ".input");
            return input;
        }

        @Override
        public Tensor onOutput(Module module, Tensor output) {
            log.add(name + ".output");
            return output;
        }

        @Override
        public void afterForward(Module module) {
            log.add(name + ".after");
        }
    }

    @Test
    void hooksNestAndCanBeRemoved() {
        Linear fc = identityLinear();
        List<String> log = new ArrayList<>();
        HookHandle a = fc.addForwardHook(new Recorder("a", log));
        HookHandle b = fc.addForwardHook(new Recorder("b", log));
        try (Tensor x = Tensors.empty(DType.FLOAT32, Device.CPU, 1, 2).fill_(new Scalar(3.0));
             Tensor y = fc.forward(x)) {
            assertThat(y.sum().item_double()).isEqualTo(6.0);
        }
        assertThat(log).containsExactly("a.before", "b.before", "a.input", "b.input", "a.output", "b.output",
                "b.after", "a.after");
        a.remove();
        a.remove();
        log.clear();
        try (Tensor x = Tensors.empty(DType.FLOAT32, Device.CPU, 1, 2).fill_(new Scalar(1.0))) {
            fc.forward(x).close();
        }
        assertThat(log).containsExactly("b.before", "b.input", "b.output", "b.after");
        b.close();
        assertThat(fc.forwardHooks()).isEmpty();
    }

    @Test
    void inputHookConvertsAndTheCopyIsReleased() {
        Linear fc = identityLinear();
        List<Tensor> copies = new ArrayList<>();
        fc.addForwardHook(new ForwardHook() {
            @Override
            public Tensor onInput(Module module, Tensor input) {
                Tensor converted = input.to(ScalarType.Float);
                copies.add(converted);
                return converted;
            }
        });
        try (Tensor x = Tensors.empty(DType.FLOAT64, Device.CPU, 1, 2).fill_(new Scalar(2.5));
             Tensor y = fc.forward(x)) {
            assertThat(DType.of(y.scalar_type())).isEqualTo(DType.FLOAT32);
            assertThat(y.sum().item_double()).isEqualTo(5.0);
            assertThat(x.isNull()).isFalse();
        }
        assertThat(copies).hasSize(1);
        assertThat(copies.get(0).isNull()).as("the scope closed the copy it created").isTrue();
    }

    @Test
    void afterForwardRunsWhenForwardFails() {
        Linear fc = new Linear(2, 2, false, DType.FLOAT32); // on meta: forward fails
        List<String> log = new ArrayList<>();
        fc.addForwardHook(new Recorder("a", log));
        try (Tensor x = Tensors.empty(DType.FLOAT32, Device.CPU, 1, 2)) {
            assertThatThrownBy(() -> fc.forward(x)).isInstanceOf(IllegalStateException.class);
        }
        assertThat(log).containsExactly("a.before", "a.input", "a.after");
    }

    @Test
    void removeAllForwardHooksWalksTheTree() {
        ModuleList<Linear> list = new ModuleList<>();
        list.add(identityLinear()).addForwardHook(new ForwardHook() { });
        list.add(identityLinear()).addForwardHook(new ForwardHook() { });
        list.removeAllForwardHooks();
        assertThat(list.get(0).forwardHooks()).isEmpty();
        assertThat(list.get(1).forwardHooks()).isEmpty();
    }
}
