package io.github.bigmodel.safetensors;

import static org.assertj.core.api.Assertions.assertThat;

import io.github.bigmodel.core.testing.ReferenceTree;
import java.nio.file.Path;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;

/**
 * Callers scope their temporaries with {@code PointerScope}; a load inside such a scope must not hand the file's
 * shared mapping to the scope (it would be freed when the scope closes and the next load would fail).
 */
class ScopedLoadTest {

    @Test
    void loadsInsideCallerScopesKeepTheMappingAlive() {
        Path folder = ReferenceTree.models().resolve("chatglm3-6b-tiny");
        for (String file : new String[] {"model.safetensors", "pytorch_model.bin.index.json"}) {
            try (Checkpoint ckpt = Checkpoint.open(folder.resolve(file));
                 Checkpoint reference = Checkpoint.open(folder.resolve("model.safetensors"))) {
                for (int round = 0; round < 3; round++) {
                    for (String name : ckpt.names()) {
                        try (PointerScope scope = new PointerScope()) {
                            Tensor a = ckpt.load(name);
                            Tensor b = reference.load(name);
                            assertThat(torch.equal(a, b)).as(file + " " + name + " round " + round).isTrue();
                        }
                    }
                }
            }
        }
    }
}
