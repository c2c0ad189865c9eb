package io.github.bigmodel.chatglm.chat;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.fasterxml.jackson.databind.ObjectMapper;
import io.github.bigmodel.chatglm.chat.AssistantReply;
import io.github.bigmodel.chatglm.tokenizer.ChatGLM3Tokenizer;
import io.github.bigmodel.chatglm.chat.ChatMessage;
import io.github.bigmodel.core.testing.ReferenceTree;
import java.math.BigInteger;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

class ToolCallWriterTest {

    private static final ObjectMapper JSON = new ObjectMapper();

    @Test
    void aWrittenCallParsesBackToTheSameArguments() throws Exception {
        String args = "{\"city\": \"O'Hare \\\"x\\\"\\n\\\\ 北京 \\u0001\", \"days\": 2, \"big\": 123456789012345678901234,"
                + " \"ratio\": 0.25, \"metric\": true, \"off\": false, \"none\": null, \"tags\": [1, \"a\", [true]], "
                + "\"nested\": {\"k\": {\"deep\": -3}}}";
        ChatMessage turn = ToolCallWriter.assistantCall("get_weather", JSON.readTree(args));
        assertThat(turn.role()).isEqualTo("assistant");
        assertThat(turn.metadata()).isEqualTo("get_weather");
        assertThat(turn.content()).startsWith("```python\ntool_call(city='O\\'Hare \"x\"\\n\\\\ 北京 \\x01', days=2, ")
                .endsWith(")\n```");
        ChatGLM3Tokenizer tok = ChatGLM3Tokenizer.load(ReferenceTree.tokenizer().resolve("tokenizer.model"));
        List<ChatMessage> history = List.of(ChatMessage.system("tools", JSON.readTree("[]")));
        AssistantReply reply = tok.processResponse(turn.metadata() + "\n" + turn.content(), history).reply();
        Map<String, Object> expected = new LinkedHashMap<>();
        expected.put("city", "O'Hare \"x\"\n\\ 北京 \u0001");
        expected.put("days", 2L);
        expected.put("big", new BigInteger("123456789012345678901234"));
        expected.put("ratio", 0.25);
        expected.put("metric", true);
        expected.put("off", false);
        expected.put("none", null);
        expected.put("tags", List.of(1L, "a", List.of(true)));
        expected.put("nested", Map.of("k", Map.of("deep", -3L)));
        assertThat(reply).isEqualTo(new AssistantReply.ToolCall("get_weather", expected));
    }

    @Test
    void argumentsThatPythonCannotTakeAreRefused() throws Exception {
        assertThatThrownBy(() -> ToolCallWriter.pythonCall(JSON.readTree("{\"a-b\": 1}")))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("a-b");
        assertThatThrownBy(() -> ToolCallWriter.pythonCall(JSON.readTree("[1]")))
                .isInstanceOf(IllegalArgumentException.class);
        assertThatThrownBy(() -> ToolCallWriter.assistantCall("two\nlines", JSON.readTree("{}")))
                .isInstanceOf(IllegalArgumentException.class);
        assertThat(ToolCallWriter.pythonCall(JSON.readTree("{}"))).isEqualTo("tool_call()");
    }

    @Test
    void stopStringsCutBeforeTheFirstMatchAndHoldBackPartialOnes() {
        StopStrings stop = new StopStrings(List.of("END", "xyz"));
        StringBuilder out = new StringBuilder();
        for (String d : Arrays.asList("Hello E", "N", "d and x", "y then END more")) {
            out.append(stop.push(d));
            if (stop.matched()) {
                break;
            }
        }
        assertThat(out.toString()).isEqualTo("Hello ENd and xy then ");
        assertThat(stop.matched()).isTrue();
        StopStrings none = new StopStrings(List.of("zz"));
        assertThat(none.push("abz")).isEqualTo("ab");
        assertThat(none.flush()).isEqualTo("z");
        assertThat(new StopStrings(List.of()).push("any")).isEqualTo("any");
        assertThatThrownBy(() -> new StopStrings(List.of(""))).isInstanceOf(IllegalArgumentException.class);
    }
}
