package io.github.bigmodel.chatglm.model;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.github.bigmodel.chatglm.chat.ChatGLM;
import io.github.bigmodel.chatglm.chat.ChatOptions;
import io.github.bigmodel.chatglm.chat.ChatResponse;
import io.github.bigmodel.chatglm.chat.FinishReason;
import io.github.bigmodel.chatglm.generation.GenerationConfig;
import io.github.bigmodel.chatglm.chat.AssistantReply;
import io.github.bigmodel.chatglm.chat.ChatMessage;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class ScriptedCheckpointTest {

    private static final ChatOptions GREEDY = ChatOptions.builder()
            .generation(GenerationConfig.builder().maxNewTokens(40).build()).build();

    @Test
    void greedyRepliesFollowTheScriptThroughARealToolLoop(@TempDir Path dir) throws Exception {
        ScriptedCheckpoint.builder()
                .reply("Hello from a scripted model.")
                .replyWhen("<|observation|>", "It is sunny in Beijing.")
                .toolCallWhen(ChatGLM.TOOL_SYSTEM_PROMPT, "get_weather", "tool_call(city='Beijing', days=2)")
                .loopWhen("forever", "la", " la")
                .write(dir);
        try (ChatGLM glm = ChatGLM.load(dir)) {
            ChatResponse plain = glm.chat("hi there", List.of(), GREEDY);
            assertThat(plain.text()).isEqualTo("Hello from a scripted model.");
            assertThat(plain.finishReason()).isEqualTo(FinishReason.STOP);

            JsonNode tools = new ObjectMapper().readTree("[{\"name\": \"get_weather\", \"description\": \"Weather\","
                    + " \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}}}]");
            List<ChatMessage> history = List.of(ChatGLM.toolSystemMessage(tools));
            ChatResponse call = glm.chat("Weather in Beijing?", history, GREEDY);
            assertThat(call.reply()).isEqualTo(new AssistantReply.ToolCall("get_weather",
                    Map.of("city", "Beijing", "days", 2L)));

            ChatResponse answer = glm.chat("{\"weather\": \"sunny\"}", call.history(),
                    ChatOptions.builder().role("observation").generation(GREEDY.generation()).build());
            assertThat(answer.text()).isEqualTo("It is sunny in Beijing.");

            ChatResponse loop = glm.chat("sing forever please", List.of(), GREEDY);
            assertThat(loop.finishReason()).isEqualTo(FinishReason.LENGTH);
            assertThat(loop.generatedIds()).hasSize(40);
            assertThat(loop.text()).startsWith("la la la").hasSize(2 + 3 * 39);
        }
    }

    @Test
    void aPieceWithTwoSuccessorsIsRefused(@TempDir Path dir) {
        assertThatThrownBy(() -> ScriptedCheckpoint.builder().reply("a b b c").write(dir))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("two successors");
        assertThatThrownBy(() -> ScriptedCheckpoint.builder().write(dir))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("default reply");
    }
}
