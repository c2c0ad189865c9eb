package io.github.bigmodel.chatglm.chat;

import static org.assertj.core.api.Assertions.assertThat;

import io.github.bigmodel.chatglm.ChatGLMConfig;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.chatglm.model.RandomCheckpoint;
import io.github.bigmodel.chatglm.generation.GenerationConfig;
import io.github.bigmodel.chatglm.tokenizer.ChatGLM3Tokenizer;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.testing.ReferenceTree;
import io.github.bigmodel.dispatch.DispatchOptions;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The user's entry point end to end: a model folder (config.json, tokenizer.model, sharded safetensors) loaded all on
 * the CPU and loaded under a CPU budget that sends blocks to disk give the same greedy chat reply.
 */
class ChatGLMDispatchLoadTest {

    @Test
    void deviceMapLoadChatsLikeTheCpuLoad(@TempDir Path dir) throws Exception {
        Path model = dir.resolve("model");
        Files.createDirectories(model);
        Files.copy(ReferenceTree.tokenizer().resolve("tokenizer.model"), model.resolve("tokenizer.model"));
        int vocab = ChatGLM3Tokenizer.load(model.resolve("tokenizer.model")).vocabSize();
        String config = String.format(Locale.ROOT, "{\"num_layers\": 4, \"hidden_size\": 64, \"ffn_hidden_size\": 128,"
                + " \"kv_channels\": 16, \"num_attention_heads\": 4, \"multi_query_attention\": true,"
                + " \"multi_query_group_num\": 2, \"padded_vocab_size\": %d, \"seq_length\": 256,"
                + " \"rmsnorm\": true, \"add_bias_linear\": false, \"add_qkv_bias\": true, \"torch_dtype\": \"float32\"}",
                vocab);
        Files.writeString(model.resolve("config.json"), config, StandardCharsets.UTF_8);
        ChatGLMLanguageModel meta = ChatGLMLanguageModel.create(ChatGLMConfig.fromJson(model.resolve("config.json")),
                DType.FLOAT32);
        RandomCheckpoint.write(meta, model, DType.FLOAT32, 256 << 10, 0.1, 7);

        ChatOptions greedy = ChatOptions.builder()
                .generation(GenerationConfig.builder().maxNewTokens(12).build()).build();
        ChatResponse onCpu;
        try (ChatGLM glm = ChatGLM.load(model)) {
            onCpu = glm.chat("你好", List.of(), greedy);
            assertThat(glm.hfDeviceMap().asMap()).containsEntry("", Device.CPU);
        }
        long budget = meta.byteSize() / 2;
        try (ChatGLM glm = ChatGLM.load(model, DispatchOptions.builder().strategy("sequential")
                .maxMemory("cpu=" + budget / 1024 + "KiB").offloadFolder(dir.resolve("offload")).build())) {
            assertThat(glm.hfDeviceMap().devices()).contains(Device.DISK);
            ChatResponse offloaded = glm.chat("你好", List.of(), greedy);
            assertThat(offloaded.generatedIds()).isEqualTo(onCpu.generatedIds());
            assertThat(offloaded.text()).isEqualTo(onCpu.text());
            ChatResponse second = glm.chat("再见", offloaded.history(), greedy);
            assertThat(second.history()).hasSize(4);
        }
    }
}
