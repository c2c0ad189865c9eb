package io.github.bigmodel.chatglm.chat;

import static io.github.bigmodel.chatglm.chat.ChatTestSupport.ints;
import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.chatglm.tokenizer.ChatGLM1Tokenizer;
import io.github.bigmodel.chatglm.tokenizer.ChatGLM2Tokenizer;
import io.github.bigmodel.chatglm.tokenizer.ChatGLM3Tokenizer;
import io.github.bigmodel.chatglm.tokenizer.ChatTokenizer;
import io.github.bigmodel.core.testing.ReferenceTree;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Function;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;

/**
 * The {@code chat()} flows THUDM's code produced with a scripted {@code generate()}, replayed through
 * {@link ChatGLM#chat} and {@link ChatGLM#streamChat} on random-weight models whose token choice is forced to the
 * fixture's ids: prompt ids, generated ids, decoded output, response and history must equal the fixture's, and the
 * streamed deltas must add up to the response without splitting a character.
 */
class ChatFlowsReferenceTest {

    private static final List<ChatGLMLanguageModel> MODELS = new ArrayList<>();

    @AfterAll
    static void release() {
        MODELS.forEach(ChatGLMLanguageModel::toMeta);
    }

    @TestFactory
    Stream<DynamicTest> chatglm3Flows() {
        JsonNode root = ChatTestSupport.fixture("chatglm3_cases.json");
        ChatGLM3Tokenizer tok = ChatGLM3Tokenizer.load(ReferenceTree.tokenizer().resolve(root.get("model").textValue()));
        ChatGLMLanguageModel model = ChatTestSupport.randomGlm2(tok.vocabSize(), 1024, 3);
        MODELS.add(model);
        return flows(root, "chatglm3", ChatGLM.of(model, tok), ChatTestSupport::messages,
                ChatTestSupport::messagesJson);
    }

    @TestFactory
    Stream<DynamicTest> chatglm2Flows() {
        JsonNode root = ChatTestSupport.fixture("chatglm2_cases.json");
        ChatGLM2Tokenizer tok = ChatGLM2Tokenizer.load(ReferenceTree.tokenizer().resolve(root.get("model").textValue()));
        ChatGLMLanguageModel model = ChatTestSupport.randomGlm2(tok.vocabSize(), 1024, 2);
        MODELS.add(model);
        return flows(root, "chatglm2", ChatGLM.of(model, tok), ChatTestSupport::pairs, ChatTestSupport::pairsJson);
    }

    @TestFactory
    Stream<DynamicTest> chatglm1Flows() {
        JsonNode root = ChatTestSupport.fixture("chatglm1_cases.json");
        ChatGLM1Tokenizer tok = ChatGLM1Tokenizer.load(ReferenceTree.tokenizer().resolve(root.get("model").textValue()),
                root.get("num_image_tokens").intValue());
        ChatGLMLanguageModel model = ChatTestSupport.randomGlm1(tok.vocabSize(), 1);
        MODELS.add(model);
        return flows(root, "chatglm1", ChatGLM.of(model, tok), ChatTestSupport::pairs, ChatTestSupport::pairsJson);
    }

    private static Stream<DynamicTest> flows(JsonNode root, String prefix, ChatGLM glm,
                                             Function<JsonNode, List<ChatMessage>> historyIn,
                                             Function<List<ChatMessage>, JsonNode> historyOut) {
        List<DynamicTest> tests = new ArrayList<>();
        for (JsonNode flow : root.get("chat_flows")) {
            int turnNo = 0;
            for (JsonNode t : flow.get("turns")) {
                String name = prefix + "/" + flow.get("name").textValue() + "/turn" + turnNo++;
                tests.add(DynamicTest.dynamicTest(name, () -> replay(glm, t, historyIn, historyOut)));
            }
        }
        return tests.stream();
    }

    private static void replay(ChatGLM glm, JsonNode t, Function<JsonNode, List<ChatMessage>> historyIn,
                               Function<List<ChatMessage>, JsonNode> historyOut) {
        String query = t.get("query").textValue();
        String role = t.has("role") ? t.get("role").textValue() : "user";
        List<ChatMessage> history = historyIn.apply(t.get("history_in"));
        int[] prompt = ints(t.get("input_ids"));
        int[] generated = ints(t.get("generated_ids"));
        ChatOptions options = ChatOptions.builder().role(role)
                .processor(ChatTestSupport.scripted(generated, prompt.length)).build();

        assertThat(glm.promptIds(query, history, role)).as("prompt ids").containsExactly(prompt);
        ChatResponse r = glm.chat(query, history, options);
        assertThat(r.promptIds()).as("ids given to generation").containsExactly(prompt);
        assertThat(r.generatedIds()).as("generated ids").containsExactly(generated);
        assertThat(r.finishReason()).isEqualTo(FinishReason.STOP);
        assertThat(r.decodedOutput()).isEqualTo(t.get("decoded_output").textValue());
        assertThat(ChatTestSupport.normalized(r.reply().toPythonValue())).as("response").isEqualTo(t.get("response"));
        assertThat(historyOut.apply(r.history())).as("history").isEqualTo(t.get("history_out"));
        assertThat(historyIn.apply(t.get("history_in"))).as("input history untouched").isEqualTo(history);

        List<String> deltas = new ArrayList<>();
        try (ChatStream stream = glm.streamChat(query, history, options)) {
            stream.forEachRemaining(deltas::add);
            assertThat(stream.response().generatedIds()).containsExactly(generated);
            assertThat(stream.holdsCache()).as("cache freed at the end").isFalse();
        }
        assertThat(String.join("", deltas)).as("concatenated deltas").isEqualTo(r.text());
        for (String d : deltas) {
            assertThat(d).isNotEmpty().doesNotContain("\uFFFD");
            assertThat(Character.isHighSurrogate(d.charAt(d.length() - 1))).as("delta ends mid-pair").isFalse();
            assertThat(Character.isLowSurrogate(d.charAt(0))).as("delta starts mid-pair").isFalse();
        }
    }
}
