package io.github.bigmodel.chatglm.model;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.github.bigmodel.chatglm.ChatGLMConfig;
import io.github.bigmodel.chatglm.generation.GenerationRequest;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.testing.ReferenceTree;
import java.nio.file.Path;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The tensors a {@link ChatGLMLanguageModel.Decoding} builds for a step belong to it, not to the pointer scope the
 * step ran in: a session closed from another thread closes its decoding while the stepping thread closes its own
 * scope, and if both held the same tensor the two releases could free it twice (a heap corruption that aborted a
 * test JVM with {@code malloc_consolidate(): invalid chunk size}). So: the caller's scope closing leaves them alive,
 * and {@link ChatGLMLanguageModel.Decoding#close()} frees them.
 */
// The PointerScope block is used for what it releases on close, not referenced by name.
@SuppressWarnings("try")
class DecodingOwnershipTest {

    @ParameterizedTest
    @ValueSource(strings = {"chatglm-6b-tiny", "chatglm3-6b-tiny"})
    void aStepsTensorsOutliveTheCallersScopeAndDieWithTheDecoding(String tree) throws Exception {
        Path folder = ReferenceTree.models().resolve(tree);
        ChatGLMLanguageModel model = ChatGLMLanguageModel.create(ChatGLMConfig.fromJson(folder.resolve("config.json")),
                DType.FLOAT32);
        long[] prompt = null;
        for (JsonNode c : new ObjectMapper().readTree(folder.resolve("expected.json").toFile()).get("cases")) {
            if (c.get("name").asText().equals("greedy/prompt_short")) {
                prompt = new long[c.get("prompt_ids").size()];
                for (int i = 0; i < prompt.length; i++) {
                    prompt[i] = c.get("prompt_ids").get(i).asLong();
                }
            }
        }
        assertThat(prompt).as("greedy/prompt_short in %s", tree).isNotNull();
        GenerationRequest request = GenerationRequest.builder(new long[][] {prompt}).maxNewTokens(4).build();
        ChatGLMLanguageModel.Decoding decoding = model.startDecoding(request);
        Tensor positions;
        try (PointerScope callers = new PointerScope()) {
            decoding.first(null);
            positions = decoding.next(new long[] {prompt[prompt.length - 1]}, null).positionIds();
        }
        assertThat(positions).isNotNull();
        assertThat(positions.isNull()).as("alive after the caller's scope closed").isFalse();
        assertThat(positions.numel()).isPositive();
        decoding.close();
        assertThat(positions.isNull()).as("freed by the decoding's close").isTrue();
        decoding.close(); // idempotent
    }
}
