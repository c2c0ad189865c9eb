package io.github.bigmodel.chatglm.tokenizer;

import com.fasterxml.jackson.databind.JsonNode;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;

import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;

import static io.github.bigmodel.chatglm.tokenizer.ChatGLM3ReferenceTest.normalized;
import static io.github.bigmodel.chatglm.tokenizer.Fixtures.intList;
import static io.github.bigmodel.chatglm.tokenizer.Fixtures.ints;
import static io.github.bigmodel.chatglm.tokenizer.Fixtures.strings;
import static org.assertj.core.api.Assertions.assertThat;
import io.github.bigmodel.chatglm.chat.ChatInput;
import io.github.bigmodel.chatglm.chat.ChatRound;

/** Every case of {@code chatglm2_cases.json}. */
class ChatGLM2ReferenceTest {

    static List<ChatRound> rounds(JsonNode array) {
        List<ChatRound> out = new ArrayList<>();
        for (JsonNode pair : array) {
            out.add(new ChatRound(pair.get(0).textValue(), pair.get(1).textValue()));
        }
        return out;
    }

    static JsonNode roundsJson(List<ChatRound> rounds) {
        List<List<String>> out = new ArrayList<>();
        for (ChatRound r : rounds) {
            out.add(List.of(r.query(), r.response()));
        }
        return normalized(out);
    }

    @TestFactory
    Stream<DynamicTest> chatglm2Cases() {
        JsonNode root = Fixtures.json("chatglm2_cases.json");
        ChatGLM2Tokenizer tok = ChatGLM2Tokenizer.load(Fixtures.dir().resolve(root.get("model").textValue()));
        List<DynamicTest> tests = new ArrayList<>();
        tests.add(DynamicTest.dynamicTest("top_level", () -> {
            assertThat(normalized(tok.specialTokens())).isEqualTo(root.get("special_tokens"));
            assertThat(tok.vocabSize()).isEqualTo(root.get("n_words").intValue())
                    .isEqualTo(root.get("vocab_size").intValue());
            assertThat(intList(tok.prefixTokens())).isEqualTo(intList(root.get("prefix_tokens")));
            assertThat(tok.eosTokenId()).isEqualTo(root.get("eos_token_id").intValue());
            assertThat(tok.padTokenId()).isEqualTo(root.get("pad_token_id").intValue());
        }));
        for (JsonNode c : root.get("prompts")) {
            tests.add(DynamicTest.dynamicTest("prompts/" + c.get("name").textValue(), () -> {
                String query = c.get("query").textValue();
                List<ChatRound> history = rounds(c.get("history"));
                assertThat(tok.buildPrompt(query, history)).isEqualTo(c.get("prompt").textValue());
                ChatInput in = tok.buildInputs(query, history);
                assertThat(intList(in.inputIds())).as("input_ids").isEqualTo(intList(c.get("input_ids")));
                assertThat(intList(in.attentionMask())).isEqualTo(intList(c.get("attention_mask")));
                assertThat(intList(in.positionIds())).isEqualTo(intList(c.get("position_ids")));
                assertThat(intList(tok.buildStreamInputs(query, history).inputIds())).as("stream_input_ids")
                        .isEqualTo(intList(c.get("stream_input_ids")));
            }));
        }
        for (JsonNode c : root.get("decode")) {
            tests.add(DynamicTest.dynamicTest("decode/" + c.get("name").textValue(), () -> {
                int[] ids = ints(c.get("ids"));
                assertThat(tok.convertIdsToTokens(ids)).isEqualTo(strings(c.get("tokens")));
                String decoded = tok.decode(ids);
                assertThat(decoded).isEqualTo(c.get("hf_decode").textValue());
                assertThat(tok.processResponse(decoded)).isEqualTo(c.get("process_response").textValue());
            }));
        }
        for (JsonNode flow : root.get("chat_flows")) {
            int turnNo = 0;
            for (JsonNode t : flow.get("turns")) {
                tests.add(DynamicTest.dynamicTest("chat_flows/" + flow.get("name").textValue() + "/turn" + turnNo++,
                        () -> {
                            String query = t.get("query").textValue();
                            List<ChatRound> history = rounds(t.get("history_in"));
                            assertThat(tok.buildPrompt(query, history)).isEqualTo(t.get("prompt").textValue());
                            assertThat(intList(tok.buildInputs(query, history).inputIds()))
                                    .isEqualTo(intList(t.get("input_ids")));
                            ChatGLM2Tokenizer.Turn turn = tok.finishTurn(query, history, ints(t.get("generated_ids")));
                            assertThat(turn.decodedOutput()).isEqualTo(t.get("decoded_output").textValue());
                            assertThat(turn.response()).isEqualTo(t.get("response").textValue());
                            assertThat(roundsJson(turn.history())).isEqualTo(t.get("history_out"));
                        }));
            }
        }
        return tests.stream();
    }
}
