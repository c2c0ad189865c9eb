package io.github.bigmodel.chatglm;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.github.bigmodel.chatglm.chat.ChatFormat;
import io.github.bigmodel.chatglm.tokenizer.ChatGLM1Tokenizer;
import io.github.bigmodel.chatglm.tokenizer.ChatGLM2Tokenizer;
import io.github.bigmodel.chatglm.tokenizer.ChatGLM3Tokenizer;
import io.github.bigmodel.chatglm.tokenizer.ChatTokenizer;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.testing.ReferenceTree;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;

/** The family descriptor: member, tokenizer, model factory, from folders, configs and presets. */
class ChatGLMFamilyTest {

    @Test
    void everyReferenceFolderIsReadAsTheMemberItsConfigDescribes() throws IOException {
        try (Stream<Path> folders = Files.list(ReferenceTree.models())) {
            folders.filter(d -> Files.isRegularFile(d.resolve("config.json"))).forEach(dir -> {
                ChatGLMFamily f = ChatGLMFamily.ofFolder(dir);
                boolean v1 = f.config().version() == ChatGLMConfig.Version.CHATGLM_6B;
                assertThat(f.member()).as(dir.toString()).isEqualTo(v1 ? ChatFormat.CHATGLM_6B : ChatFormat.CHATGLM3);
                assertThat(f.tokenizerFileName()).isEqualTo(v1 ? "ice_text.model" : "tokenizer.model");
                ChatGLMLanguageModel model = f.createModel(DType.FLOAT32);
                assertThat(model.config()).isSameAs(f.config());
                assertThat(model.noSplitModuleClasses()).containsExactly(ChatGLMLanguageModel.BLOCK_CLASS);
                // The model's own block class is the one it builds: the planner's default keeps every block whole.
                assertThat(model.module("transformer").namedModules().values().stream()
                        .filter(m -> m.className().equals(ChatGLMLanguageModel.BLOCK_CLASS)).count())
                        .isEqualTo(f.config().numLayers());
            });
        }
    }

    @Test
    void presetsNameTheirMember() {
        assertThat(ChatGLMFamily.ofPreset("chatglm-6b").member()).isEqualTo(ChatFormat.CHATGLM_6B);
        assertThat(ChatGLMFamily.ofPreset("chatglm2-6b").member()).isEqualTo(ChatFormat.CHATGLM2);
        assertThat(ChatGLMFamily.ofPreset("THUDM/chatglm3-6b").displayName()).isEqualTo("ChatGLM3-6B");
        assertThat(ChatGLMFamily.ofPreset("chatglm3-6b-32k").member()).isEqualTo(ChatFormat.CHATGLM3);
        for (String name : ChatGLMConfig.presetNames()) {
            ChatGLMFamily f = ChatGLMFamily.ofPreset(name);
            assertThat(f.createModel(DType.FLOAT16).parameterCount()).as(name).isGreaterThan(6_000_000_000L);
        }
    }

    /** The weight sizes a config must state (ChatGLMConfig refuses to take the 6B model's defaults for them). */
    private static final String SIZES = "\"hidden_size\": 64, \"num_attention_heads\": 4, \"kv_channels\": 16, "
            + "\"ffn_hidden_size\": 128";

    @Test
    void nameOrPathTellsChatGLM2FromChatGLM3AndAnExplicitMemberMustFitTheArchitecture() {
        ChatGLMConfig glm2 = ChatGLMConfig.fromJsonString(
                "{\"_name_or_path\": \"THUDM/chatglm2-6b\", \"num_layers\": 2, \"padded_vocab_size\": 64, " + SIZES + "}");
        assertThat(ChatGLMFamily.of(glm2).member()).isEqualTo(ChatFormat.CHATGLM2);
        assertThat(ChatGLMFamily.of(glm2, ChatFormat.CHATGLM3).member()).isEqualTo(ChatFormat.CHATGLM3);
        assertThatThrownBy(() -> ChatGLMFamily.of(glm2, ChatFormat.CHATGLM_6B))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("ChatGLM-6B");
        ChatGLMConfig v1 = ChatGLMFamily.ofPreset("chatglm-6b").config();
        assertThatThrownBy(() -> ChatGLMFamily.of(v1, ChatFormat.CHATGLM3))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("ChatGLM3-6B");
    }

    @Test
    void tokenizersByMember(@TempDir Path dir) throws IOException {
        Path sp = ReferenceTree.tokenizer().resolve("tokenizer.model");
        Path ice = ReferenceTree.tokenizer().resolve("ice_text.model");
        assertThat(ChatGLMFamily.tokenizer(ChatFormat.CHATGLM3, sp, 0)).isInstanceOf(ChatGLM3Tokenizer.class);
        assertThat(ChatGLMFamily.tokenizer(ChatFormat.CHATGLM2, sp, 0)).isInstanceOf(ChatGLM2Tokenizer.class);
        assertThat(ChatGLMFamily.tokenizer(ChatFormat.CHATGLM_6B, ice, 0)).isInstanceOf(ChatGLM1Tokenizer.class);

        // A folder: its config names the member, its tokenizer file is found by the member's file name.
        ChatTokenizer fromFile = ChatGLMFamily.tokenizer(ChatFormat.CHATGLM3, sp, 0);
        Files.copy(sp, dir.resolve("tokenizer.model"));
        Files.writeString(dir.resolve("config.json"), "{\"num_layers\": 2, \"padded_vocab_size\": "
                + fromFile.vocabSize() + ", " + SIZES + "}");
        ChatTokenizer fromFolder = ChatGLMFamily.ofFolder(dir).tokenizer(dir);
        assertThat(fromFolder).isInstanceOf(ChatGLM3Tokenizer.class);
        assertThat(fromFolder.encode("你好 hello", true)).containsExactly(fromFile.encode("你好 hello", true));
    }
}
