package io.github.bigmodel.chatglm.tokenizer;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.stream.Stream;

import static io.github.bigmodel.chatglm.tokenizer.Fixtures.MAPPER;
import static io.github.bigmodel.chatglm.tokenizer.Fixtures.intList;
import static io.github.bigmodel.chatglm.tokenizer.Fixtures.ints;
import static io.github.bigmodel.chatglm.tokenizer.Fixtures.strings;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import io.github.bigmodel.chatglm.chat.ChatInput;
import io.github.bigmodel.chatglm.chat.ChatMessage;

/** Every case of {@code chatglm3_cases.json}. */
class ChatGLM3ReferenceTest {

    static List<ChatMessage> history(JsonNode array) {
        List<ChatMessage> out = new ArrayList<>();
        for (JsonNode item : array) {
            out.add(new ChatMessage(item.get("role").textValue(), item.get("content").textValue(),
                    item.has("metadata") ? item.get("metadata").textValue() : null, item.get("tools")));
        }
        return out;
    }

    static JsonNode historyJson(List<ChatMessage> history) {
        List<Object> out = new ArrayList<>();
        for (ChatMessage m : history) {
            ObjectNode node = MAPPER.createObjectNode();
            node.put("role", m.role());
            if (m.metadata() != null) {
                node.put("metadata", m.metadata());
            }
            node.put("content", m.content());
            if (m.tools() != null) {
                node.set("tools", m.tools());
            }
            out.add(node);
        }
        return normalized(out);
    }

    /** A Jackson tree of a Java value with numbers normalised through text (IntNode vs LongNode). */
    static JsonNode normalized(Object value) {
        try {
            return MAPPER.readTree(MAPPER.writeValueAsString(value));
        } catch (JsonProcessingException e) {
            throw new IllegalStateException(e);
        }
    }

    @TestFactory
    Stream<DynamicTest> chatglm3Cases() {
        JsonNode root = Fixtures.json("chatglm3_cases.json");
        ChatGLM3Tokenizer tok = ChatGLM3Tokenizer.load(Fixtures.dir().resolve(root.get("model").textValue()));
        ChatGLM3Tokenizer tokSpecial = new ChatGLM3Tokenizer(tok.sentencePiece(), true);
        List<DynamicTest> tests = new ArrayList<>();
        tests.add(DynamicTest.dynamicTest("top_level", () -> {
            assertThat(normalized(tok.specialTokens())).isEqualTo(root.get("special_tokens"));
            assertThat(tok.sentencePiece().vocabSize()).isEqualTo(root.get("sp_vocab_size").intValue());
            assertThat(tok.vocabSize()).isEqualTo(root.get("n_words").intValue())
                    .isEqualTo(root.get("vocab_size").intValue());
            assertThat(intList(tok.prefixTokens())).isEqualTo(intList(root.get("prefix_tokens")));
            assertThat(tok.eosTokenId()).isEqualTo(root.get("eos_token_id").intValue());
            assertThat(tok.padTokenId()).isEqualTo(root.get("pad_token_id").intValue());
            assertThat(tok.command("<bos>")).isEqualTo(root.get("bos_id").intValue());
            assertThat(intList(tok.stopTokenIds())).isEqualTo(intList(root.get("stop_token_ids_used_by_chat")));
        }));
        for (JsonNode c : root.get("encode")) {
            tests.add(DynamicTest.dynamicTest("encode/" + c.get("name").textValue(), () -> {
                String text = c.get("text").textValue();
                assertThat(intList(tok.spEncode(text))).as("sp_tokenizer_encode")
                        .isEqualTo(intList(c.get("sp_tokenizer_encode")));
                assertThat(tok.tokenize(text)).as("tokenize_default").isEqualTo(strings(c.get("tokenize_default")));
                assertThat(intList(tok.encode(text))).as("encode_default")
                        .isEqualTo(intList(c.get("encode_default")));
                assertThat(intList(tok.encode(text, false))).as("encode_default_no_special")
                        .isEqualTo(intList(c.get("encode_default_no_special")));
                assertThat(tokSpecial.tokenize(text)).as("tokenize_encode_special_tokens")
                        .isEqualTo(strings(c.get("tokenize_encode_special_tokens")));
                assertThat(intList(tokSpecial.encode(text))).as("encode_encode_special_tokens")
                        .isEqualTo(intList(c.get("encode_encode_special_tokens")));
            }));
        }
        for (JsonNode c : root.get("call")) {
            tests.add(DynamicTest.dynamicTest("call/" + c.get("text").textValue(), () -> {
                ChatInput in = tok.call(c.get("text").textValue());
                assertThat(intList(in.inputIds())).isEqualTo(intList(c.get("input_ids")));
                assertThat(intList(in.attentionMask())).isEqualTo(intList(c.get("attention_mask")));
                assertThat(intList(in.positionIds())).isEqualTo(intList(c.get("position_ids")));
            }));
        }
        for (JsonNode c : root.get("build_chat_input")) {
            tests.add(DynamicTest.dynamicTest("build_chat_input/" + c.get("name").textValue(), () -> {
                List<ChatMessage> history = history(c.get("history"));
                ChatInput in = tok.buildChatInput(c.get("query").textValue(), history, c.get("role").textValue());
                assertThat(intList(in.inputIds())).as("input_ids").isEqualTo(intList(c.get("input_ids")));
                assertThat(intList(in.attentionMask())).isEqualTo(intList(c.get("attention_mask")));
                assertThat(intList(in.positionIds())).isEqualTo(intList(c.get("position_ids")));
                List<ChatMessage> all = new ArrayList<>(history);
                all.add(new ChatMessage(c.get("role").textValue(), c.get("query").textValue(), "", null));
                JsonNode messages = c.get("messages");
                assertThat(messages.size()).isEqualTo(all.size());
                for (int i = 0; i < all.size(); i++) {
                    ChatMessage m = all.get(i);
                    JsonNode expected = messages.get(i);
                    assertThat(ChatGLM3Tokenizer.renderedContent(m)).as("rendered_content " + i)
                            .isEqualTo(expected.get("rendered_content").textValue());
                    assertThat(m.metadataOrEmpty()).isEqualTo(expected.get("metadata").textValue());
                    assertThat(intList(tok.buildSingleMessage(m.role(), m.metadataOrEmpty(),
                            ChatGLM3Tokenizer.renderedContent(m)))).as("message ids " + i)
                            .isEqualTo(intList(expected.get("ids")));
                }
                assertThat(tok.decode(in.inputIds())).isEqualTo(c.get("hf_decode_of_input_ids").textValue());
            }));
        }
        for (JsonNode c : root.get("responses")) {
            tests.add(DynamicTest.dynamicTest("responses/" + c.get("name").textValue(), () -> {
                int[] generated = ints(c.get("generated_ids"));
                int[] output = Arrays.copyOf(generated, generated.length - 1);
                assertThat(c.get("chat_drops_last_token").booleanValue()).isTrue();
                assertThat(tok.decode(output)).as("hf_decode").isEqualTo(c.get("hf_decode").textValue());
                assertThat(tok.spDecode(output)).as("sp_tokenizer_decode")
                        .isEqualTo(c.get("sp_tokenizer_decode").textValue());
                assertThat(tok.convertIdsToTokens(output)).as("tokens").isEqualTo(strings(c.get("tokens")));
                ChatGLM3Tokenizer.ProcessedResponse pr =
                        tok.processResponse(c.get("hf_decode").textValue(), history(c.get("history_before")));
                JsonNode expected = c.get("process_response");
                assertThat(normalized(pr.reply().toPythonValue())).as("response")
                        .isEqualTo(expected.get("response"));
                assertThat(historyJson(pr.history())).as("history").isEqualTo(expected.get("history"));
            }));
        }
        for (JsonNode c : root.get("decode")) {
            tests.add(DynamicTest.dynamicTest("decode/" + c.get("name").textValue(), () -> {
                int[] ids = ints(c.get("ids"));
                assertThat(tok.convertIdsToTokens(ids)).as("tokens").isEqualTo(strings(c.get("tokens")));
                assertThat(tok.decode(ids)).as("hf_decode").isEqualTo(c.get("hf_decode").textValue());
                if (c.has("sp_tokenizer_decode")) {
                    assertThat(tok.spDecode(ids)).as("sp_tokenizer_decode")
                            .isEqualTo(c.get("sp_tokenizer_decode").textValue());
                } else {
                    assertThat(c.get("sp_tokenizer_decode_error").textValue()).contains("out of range");
                    assertThatThrownBy(() -> tok.spDecode(ids)).isInstanceOf(TokenizerException.class)
                            .extracting(e -> ((TokenizerException) e).reason())
                            .isEqualTo(TokenizerException.Reason.ID_OUT_OF_RANGE);
                }
                int[] withoutSpecials = Arrays.stream(ids)
                        .filter(id -> !tok.specialTokens().containsValue(id) && id != 0 && id != 1 && id != 2)
                        .toArray();
                assertThat(tok.decode(ids, true)).as("skip_special_tokens")
                        .isEqualTo(tok.decode(withoutSpecials));
            }));
        }
        for (JsonNode flow : root.get("chat_flows")) {
            int turnNo = 0;
            for (JsonNode t : flow.get("turns")) {
                String name = "chat_flows/" + flow.get("name").textValue() + "/turn" + turnNo++;
                tests.add(DynamicTest.dynamicTest(name, () -> {
                    List<ChatMessage> historyIn = history(t.get("history_in"));
                    String query = t.get("query").textValue();
                    String role = t.get("role").textValue();
                    ChatInput in = tok.buildChatInput(query, historyIn, role);
                    assertThat(intList(in.inputIds())).as("input_ids").isEqualTo(intList(t.get("input_ids")));
                    assertThat(intList(in.attentionMask())).isEqualTo(intList(t.get("attention_mask")));
                    assertThat(intList(in.positionIds())).isEqualTo(intList(t.get("position_ids")));
                    assertThat(intList(tok.stopTokenIds())).isEqualTo(intList(t.get("eos_token_id")));
                    ChatGLM3Tokenizer.Turn turn = tok.finishTurn(query, role, historyIn, ints(t.get("generated_ids")));
                    assertThat(turn.decodedOutput()).isEqualTo(t.get("decoded_output").textValue());
                    assertThat(normalized(turn.reply().toPythonValue())).isEqualTo(t.get("response"));
                    assertThat(historyJson(turn.history())).isEqualTo(t.get("history_out"));
                }));
            }
        }
        tests.add(DynamicTest.dynamicTest("process_response/malformed_tool_call", () -> {
            List<ChatMessage> withTools = history(root.get("responses").get(1).get("history_before"));
            assertThat(withTools.get(0).tools()).isNotNull();
            assertThatThrownBy(() -> tok.processResponse("get_weather\n```python\nprint(1)\n```", withTools))
                    .isInstanceOf(TokenizerException.class)
                    .extracting(e -> ((TokenizerException) e).reason())
                    .isEqualTo(TokenizerException.Reason.MALFORMED_TOOL_CALL);
        }));
        return tests.stream();
    }

}
