package io.github.bigmodel.chatglm;

import static org.assertj.core.api.Assertions.assertThat;

import io.github.bigmodel.core.Parameter;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;

/**
 * The only outcomes a {@code config.json} text may have: a {@link ChatGLMConfigException}, or a config whose fields
 * are in range and from which a model can be built on meta, every parameter's element and byte count fitting a
 * {@code long} with no overflow. Anything else (NullPointerException, ClassCastException, NumberFormatException,
 * ArithmeticException, OutOfMemoryError, ...) is a finding.
 */
final class ChatGLMConfigOracle {

    private ChatGLMConfigOracle() {
    }

    /** Returns whether {@code json} was accepted; throws (an AssertionError or the unexpected exception) otherwise. */
    static boolean check(String json) {
        ChatGLMConfig c;
        try {
            c = ChatGLMConfig.fromJsonString(json);
        } catch (ChatGLMConfigException e) {
            assertThat(e.getMessage()).isNotBlank();
            return false;
        }
        assertThat(c.numLayers()).isPositive();
        assertThat(c.hiddenSize()).isPositive();
        assertThat(c.numAttentionHeads()).isPositive();
        assertThat(c.vocabSize()).isPositive();
        assertThat(c.headDim()).isPositive();
        assertThat(c.kvHeads()).isPositive();
        assertThat(c.maxPositions()).isPositive();
        assertThat(Double.isFinite(c.layernormEpsilon()) && c.layernormEpsilon() > 0)
                .as("layernorm_epsilon %s", c.layernormEpsilon()).isTrue();
        assertThat(Double.isFinite(c.ropeRatio()) && c.ropeRatio() > 0).as("rope_ratio %s", c.ropeRatio()).isTrue();
        assertThat(c.qkvOutFeatures()).isPositive();
        ChatGLMLanguageModel model = ChatGLMLanguageModel.create(c);
        long total = 0;
        for (Parameter p : model.namedParameters().values()) {
            long numel = p.numel();
            assertThat(numel).isPositive();
            assertThat(p.byteSize()).as("bytes of %s", p).isPositive();
            total = Math.addExact(total, p.byteSize());
        }
        assertThat(total).isPositive();
        assertThat(model.namedModules().values().stream().filter(m -> m.className().equals("GLMBlock")).count())
                .isEqualTo(c.numLayers());
        return true;
    }
}
