package io.github.bigmodel.chatglm.chat;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.github.bigmodel.chatglm.ChatGLMConfig;
import io.github.bigmodel.core.testing.ReferenceTree;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@link ChatGLM#load} reads config, tokenizer and checkpoint, and refuses a tokenizer the model cannot embed. */
class ChatGLMLoadTest {

    @Test
    void loadChecksTheTokenizerAgainstTheModel(@TempDir Path dir) throws IOException {
        Path tiny = ReferenceTree.models().resolve("chatglm3-6b-tiny");
        Files.copy(tiny.resolve("config.json"), dir.resolve("config.json"));
        Files.copy(tiny.resolve("model.safetensors"), dir.resolve("model.safetensors"));
        Files.copy(ReferenceTree.tokenizer().resolve("tokenizer.model"), dir.resolve("tokenizer.model"));
        // The tiny model embeds fewer ids than the fixture tokenizer makes (both read from the tree).
        int modelVocab = ChatGLMConfig.fromJson(tiny.resolve("config.json")).vocabSize();
        int tokenizerVocab = ChatTestSupport.fixture("chatglm3_cases.json").get("vocab_size").asInt();
        assertThat(modelVocab).isLessThan(tokenizerVocab);
        assertThatThrownBy(() -> ChatGLM.load(dir))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining(Integer.toString(tokenizerVocab))
                .hasMessageContaining(Integer.toString(modelVocab));
    }
}
