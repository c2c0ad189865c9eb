package io.github.bigmodel.chatglm.model;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.github.bigmodel.chatglm.ChatGLMConfig;
import io.github.bigmodel.chatglm.internal.Ops;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.testing.ReferenceTree;
import io.github.bigmodel.safetensors.Checkpoint;
import java.nio.file.Path;
import org.bytedeco.javacpp.PointerScope;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The rotary tables a model computes after loading live outside its state dict; {@link ChatGLMLanguageModel#toMeta()}
 * frees them with the weights (a released model holds no native memory), and a reload builds them again: the same
 * logits, bit for bit, as before the release.
 */
// The PointerScope block is used for what it releases on close, not referenced by name.
@SuppressWarnings("try")
class ComputedBuffersTest {

    @ParameterizedTest
    @ValueSource(strings = {"chatglm-6b-tiny", "chatglm3-6b-tiny"})
    void toMetaFreesTheRotaryTablesAndAReloadRebuildsThem(String tree) {
        Path folder = ReferenceTree.models().resolve(tree);
        ChatGLMConfig config = ChatGLMConfig.fromJson(folder.resolve("config.json"));
        ChatGLMLanguageModel model = ChatGLMLanguageModel.create(config, DType.FLOAT32);
        // Any ids below the vocabulary; ChatGLM-6B's positions need its [gMASK] and <sop> ids, so use a real prompt.
        long[][] ids = {config.version() == ChatGLMConfig.Version.CHATGLM_6B
                ? new long[] {5, 6, config.gmaskTokenId(), config.bosTokenId()} : new long[] {5, 6, 7, 8}};
        float[][] logits = new float[2][];
        for (int load = 0; load < 2; load++) {
            try (Checkpoint st = Checkpoint.open(folder); PointerScope scope = new PointerScope()) {
                model.loadWeights(st::load, Device.CPU, DType.FLOAT32);
                assertThat(model.computedBufferBytes()).as("rotary tables after load %d", load).isPositive();
                logits[load] = Ops.floats(model.forward(ForwardInput.builder(ids).build()));
            }
            model.toMeta();
            assertThat(model.computedBufferBytes()).as("rotary tables after toMeta").isZero();
            assertThatThrownBy(() -> model.forward(ForwardInput.builder(ids).build()))
                    .isInstanceOf(RuntimeException.class);
        }
        assertThat(logits[1]).containsExactly(logits[0]);
    }
}
