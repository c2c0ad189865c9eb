package io.github.bigmodel.chatglm;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.Parameter;
import io.github.bigmodel.safetensors.Checkpoint;
import io.github.bigmodel.core.testing.ReferenceTree;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestFactory;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.chatglm.model.ForwardInput;
import io.github.bigmodel.chatglm.model.KvCache;
import io.github.bigmodel.chatglm.internal.Ops;
import io.github.bigmodel.chatglm.model.WeightLoadException;

/** The module trees match the official checkpoints name for name and shape for shape; configs parse as published. */
class ChatGLMModelStructureTest {

    @TestFactory
    Stream<DynamicTest> stateDictMatchesCheckpoint() throws IOException {
        List<Path> folders;
        try (Stream<Path> s = Files.list(ReferenceTree.models())) {
            folders = s.filter(p -> Files.isRegularFile(p.resolve("expected.json"))).sorted()
                    .collect(Collectors.toList());
        }
        List<DynamicTest> tests = new ArrayList<>();
        for (Path folder : folders) {
            tests.add(DynamicTest.dynamicTest(folder.getFileName() + "/state_dict", () -> {
                ChatGLMConfig config = ChatGLMConfig.fromJson(folder.resolve("config.json"));
                ChatGLMLanguageModel model = ChatGLMLanguageModel.create(config);
                Map<String, Parameter> sd = model.stateDict();
                try (Checkpoint st = Checkpoint.open(folder.resolve("model.safetensors"))) {
                    // Every tensor of the official checkpoint has a slot of the same name and shape, and no more.
                    assertThat(new TreeSet<>(sd.keySet())).isEqualTo(new TreeSet<>(st.names()));
                    for (String name : st.names()) {
                        try (org.bytedeco.pytorch.Tensor t = st.load(name)) {
                            assertThat(sd.get(name).shape()).as(name)
                                    .containsExactly(io.github.bigmodel.core.Tensors.shape(t));
                        }
                    }
                }
                assertThat(sd.values()).allMatch(p -> p.device() == Device.META);
                assertThat(model.namedModules().values().stream().filter(m -> m.className().equals("GLMBlock")))
                        .hasSize(config.numLayers());
                assertThat(model.className()).isEqualTo("ChatGLMForConditionalGeneration");
                if (config.version() == ChatGLMConfig.Version.CHATGLM_6B) {
                    assertThat(model.tiedParameters())
                            .containsExactly(List.of("transformer.word_embeddings.weight", "lm_head.weight"));
                } else {
                    assertThat(model.tiedParameters()).isEmpty();
                }
            }));
        }
        return tests.stream();
    }

    @Test
    void presetsCarryThePublishedSizes() {
        ChatGLMConfig glm3 = ChatGLMConfig.preset("THUDM/chatglm3-6b");
        assertThat(glm3.version()).isEqualTo(ChatGLMConfig.Version.CHATGLM2);
        assertThat(glm3.numLayers()).isEqualTo(28);
        assertThat(glm3.kvHeads()).isEqualTo(2);
        assertThat(glm3.qkvOutFeatures()).isEqualTo(4608);
        assertThat(glm3.seqLength()).isEqualTo(8192);
        assertThat(glm3.torchDtype()).isEqualTo(DType.FLOAT16);
        ChatGLMLanguageModel model = ChatGLMLanguageModel.create(glm3);
        // 6.24B parameters, as published for ChatGLM3-6B.
        assertThat(model.parameterCount()).isEqualTo(6_243_584_000L);
        assertThat(ChatGLMConfig.preset("chatglm3-6b-32k").ropeRatio()).isEqualTo(50.0);
        assertThat(ChatGLMConfig.preset("chatglm2-6b").seqLength()).isEqualTo(32768);
        ChatGLMConfig glm1 = ChatGLMConfig.preset("chatglm-6b");
        assertThat(glm1.version()).isEqualTo(ChatGLMConfig.Version.CHATGLM_6B);
        assertThat(glm1.bosTokenId()).isEqualTo(130004);
        assertThat(glm1.qkvOutFeatures()).isEqualTo(3 * 4096);
        assertThat(ChatGLMConfig.presetNames()).hasSize(5);
    }

    @Test
    void kvCacheSizesFollowTheAttentionLayout() {
        ChatGLMConfig glm3 = ChatGLMConfig.preset("chatglm3-6b");
        // Multi-query: 2 groups x 128 channels, keys and values, fp16; 28 layers at 8192 positions = 224 MiB.
        assertThat(28 * glm3.kvCacheBytesPerLayer(8192, 1, DType.FLOAT16)).isEqualTo(28L * 2 * 2 * 128 * 2 * 8192)
                .isEqualTo(224L << 20);
        ChatGLMConfig glm1 = ChatGLMConfig.preset("chatglm-6b");
        // Full heads: 32 x 128, so 448 KiB per position for the whole model.
        assertThat(28 * glm1.kvCacheBytesPerLayer(1, 1, DType.FLOAT16)).isEqualTo(448L << 10);
        assertThat(glm3.kvCacheBytesPerLayer(100, 3, DType.FLOAT32)).isEqualTo(2L * 100 * 3 * 2 * 128 * 4);
        assertThatThrownBy(() -> glm3.kvCacheBytesPerLayer(-1, 1, DType.FLOAT16))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("positions");
        assertThatThrownBy(() -> glm3.kvCacheBytesPerLayer(1, 1, DType.INT8))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("floating-point");
        // What KvCache really allocates is what the formula says.
        ChatGLMConfig tiny = ChatGLMConfig.fromJsonString("{\"num_layers\": 2, \"hidden_size\": 64,"
                + " \"num_attention_heads\": 4, \"kv_channels\": 16, \"multi_query_attention\": true,"
                + " \"multi_query_group_num\": 2, \"padded_vocab_size\": 128, \"ffn_hidden_size\": 96}");
        try (KvCache cache = new KvCache(new Device[] {Device.CPU, Device.CPU}, 2, 50, tiny.kvHeads(),
                tiny.headDim(), DType.FLOAT32)) {
            assertThat(cache.allocatedBytes()).isEqualTo(2 * tiny.kvCacheBytesPerLayer(50, 2, DType.FLOAT32));
            cache.close();
            assertThat(cache.allocatedBytes()).isZero();
        }
    }

    @Test
    void badConfigsAreNamed() {
        assertThatThrownBy(() -> ChatGLMConfig.preset("chatglm9"))
                .isInstanceOf(ChatGLMConfigException.class).hasMessageContaining("chatglm9");
        String sizes = "\"num_layers\": 2, \"hidden_size\": 64, \"ffn_hidden_size\": 96, ";
        assertThatThrownBy(() -> ChatGLMConfig.fromJsonString("{" + sizes + "\"kv_channels\": 16,"
                + " \"num_attention_heads\": 4, \"padded_vocab_size\": 0}"))
                .isInstanceOf(ChatGLMConfigException.class).hasMessageContaining("padded_vocab_size must be > 0");
        assertThatThrownBy(() -> ChatGLMConfig.fromJsonString("{" + sizes + "\"kv_channels\": 128,"
                + " \"num_attention_heads\": 32, \"padded_vocab_size\": 128,"
                + " \"multi_query_attention\": true, \"multi_query_group_num\": 3}"))
                .isInstanceOf(ChatGLMConfigException.class).hasMessageContaining("multi_query_group_num");
        assertThatThrownBy(() -> ChatGLMConfig.fromJsonString("{\"hidden_size\": 64}"))
                .isInstanceOf(ChatGLMConfigException.class).hasMessageContaining("cannot tell");
        assertThatThrownBy(() -> ChatGLMConfig.fromJsonString("[1, 2"))
                .isInstanceOf(ChatGLMConfigException.class);
    }

    @Test
    void missingWeightsAndOutOfVocabularyIdsAreNamed() throws IOException {
        Path folder = ReferenceTree.models().resolve("chatglm3-6b-tiny");
        ChatGLMLanguageModel model = ChatGLMLanguageModel.create(ChatGLMConfig.fromJson(folder.resolve("config.json")));
        assertThatThrownBy(() -> model.loadWeights(name -> null, Device.CPU, DType.FLOAT32))
                .isInstanceOf(WeightLoadException.class)
                .hasMessageContaining("transformer.embedding.word_embeddings.weight");
        try (Checkpoint st = Checkpoint.open(folder.resolve("model.safetensors"))) {
            model.loadWeights(st::load, Device.CPU, DType.FLOAT32);
        }
        int vocab = model.config().vocabSize();
        assertThatThrownBy(() -> model.forward(ForwardInput.builder(new long[][] {{1, vocab}}).build()))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining(Integer.toString(vocab));
        long beyond = model.config().seqLength();
        try (org.bytedeco.pytorch.Tensor pos = Ops.longTensor(new long[] {0, beyond}, 1, 2)) {
            assertThatThrownBy(() -> model.forward(ForwardInput.builder(new long[][] {{1, 2}}).positionIds(pos).build()))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("seq_length");
        }
        try (KvCache cache = model.newCache(1, 2)) {
            assertThatThrownBy(() -> model.forward(ForwardInput.builder(new long[][] {{1, 2, 3}}).cache(cache).build()))
                    .isInstanceOf(IllegalStateException.class).hasMessageContaining("capacity 2");
        }
        model.toMeta();
    }
}
