package io.github.bigmodel.chatglm.tokenizer;

import com.fasterxml.jackson.databind.JsonNode;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;

import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;

import static io.github.bigmodel.chatglm.tokenizer.ChatGLM2ReferenceTest.rounds;
import static io.github.bigmodel.chatglm.tokenizer.ChatGLM2ReferenceTest.roundsJson;
import static io.github.bigmodel.chatglm.tokenizer.Fixtures.intList;
import static io.github.bigmodel.chatglm.tokenizer.Fixtures.ints;
import static io.github.bigmodel.chatglm.tokenizer.Fixtures.strings;
import static org.assertj.core.api.Assertions.assertThat;
import io.github.bigmodel.chatglm.chat.ChatRound;

/** Every case of {@code chatglm1_cases.json}. */
class ChatGLM1ReferenceTest {

    @TestFactory
    Stream<DynamicTest> chatglm1Cases() {
        JsonNode root = Fixtures.json("chatglm1_cases.json");
        ChatGLM1Tokenizer tok = ChatGLM1Tokenizer.load(Fixtures.dir().resolve(root.get("model").textValue()),
                root.get("num_image_tokens").intValue());
        List<DynamicTest> tests = new ArrayList<>();
        tests.add(DynamicTest.dynamicTest("top_level", () -> {
            assertThat(root.get("tokenizer_config").get("num_image_tokens").intValue()).isEqualTo(tok.numImageTokens());
            assertThat(tok.vocabSize()).isEqualTo(root.get("vocab_size").intValue());
            root.get("ids").fields().forEachRemaining(e ->
                    assertThat(tok.convertTokenToId(e.getKey())).as(e.getKey()).isEqualTo(e.getValue().intValue()));
            assertThat(tok.bosTokenId()).isEqualTo(root.get("bos_token_id").intValue());
            assertThat(tok.eosTokenId()).isEqualTo(root.get("eos_token_id").intValue());
            assertThat(tok.padTokenId()).isEqualTo(root.get("pad_token_id").intValue());
            assertThat(tok.gmaskTokenId()).isEqualTo(root.get("gmask_token_id").intValue());
            assertThat(tok.maskTokenId()).isEqualTo(root.get("mask_token_id").intValue());
            assertThat(tok.endTokenId()).isEqualTo(root.get("end_token_id").intValue());
            assertThat(ChatGLM1Tokenizer.noSplitTokens())
                    .containsExactlyInAnyOrderElementsOf(strings(root.get("unique_no_split_tokens")));
            assertThat(intList(tok.allSpecialIds())).isEqualTo(intList(root.get("all_special_ids")));
        }));
        for (JsonNode c : root.get("encode")) {
            tests.add(DynamicTest.dynamicTest("encode/" + c.get("name").textValue(), () -> {
                String text = c.get("text").textValue();
                assertThat(ChatGLM1Tokenizer.preprocess(text)).as("preprocessed")
                        .isEqualTo(c.get("preprocessed").textValue());
                assertThat(intList(tok.spEncode(text, true))).as("sp_tokenizer_encode")
                        .isEqualTo(intList(c.get("sp_tokenizer_encode")));
                assertThat(intList(tok.spEncode(text, false))).as("sp_tokenizer_encode_no_dummy_prefix")
                        .isEqualTo(intList(c.get("sp_tokenizer_encode_no_dummy_prefix")));
                assertThat(tok.spTokenize(text, true)).as("sp_tokenizer_tokenize")
                        .isEqualTo(strings(c.get("sp_tokenizer_tokenize")));
                assertThat(tok.tokenize(text)).as("tokenize").isEqualTo(strings(c.get("tokenize")));
                int[] inputIds = tok.encode(text);
                assertThat(intList(inputIds)).as("input_ids").isEqualTo(intList(c.get("input_ids")));
                assertThat(intList(tok.encode(text, false))).as("encode_no_special")
                        .isEqualTo(intList(c.get("encode_no_special")));
                assertThat(tok.decode(inputIds)).as("decode").isEqualTo(c.get("decode").textValue());
                assertThat(tok.decode(inputIds, true, true)).as("decode_skip_special")
                        .isEqualTo(c.get("decode_skip_special").textValue());
                assertThat(tok.spDecode(ints(c.get("sp_tokenizer_encode")))).as("sp_tokenizer_decode of sp_tokenizer_encode")
                        .isEqualTo(c.get("sp_tokenizer_decode").textValue());
            }));
        }
        for (JsonNode c : root.get("prompts")) {
            tests.add(DynamicTest.dynamicTest("prompts/" + c.get("name").textValue(), () -> {
                String prompt = tok.buildPrompt(c.get("query").textValue(), rounds(c.get("history")));
                assertThat(prompt).isEqualTo(c.get("prompt").textValue());
                assertThat(intList(tok.encode(prompt))).isEqualTo(intList(c.get("input_ids")));
                // tokenizer([prompt]) gives only input_ids: no mask or positions reach generate().
                assertThat(c.get("generate_kwargs_from_tokenizer").isEmpty()).isTrue();
            }));
        }
        for (JsonNode flow : root.get("chat_flows")) {
            int turnNo = 0;
            for (JsonNode t : flow.get("turns")) {
                tests.add(DynamicTest.dynamicTest("chat_flows/" + flow.get("name").textValue() + "/turn" + turnNo++,
                        () -> {
                            String query = t.get("query").textValue();
                            List<ChatRound> history = rounds(t.get("history_in"));
                            String prompt = tok.buildPrompt(query, history);
                            assertThat(prompt).isEqualTo(t.get("prompt").textValue());
                            assertThat(intList(tok.encode(prompt))).isEqualTo(intList(t.get("input_ids")));
                            ChatGLM1Tokenizer.Turn turn = tok.finishTurn(query, history, ints(t.get("generated_ids")));
                            assertThat(turn.decodedOutput()).isEqualTo(t.get("decoded_output").textValue());
                            assertThat(turn.response()).isEqualTo(t.get("response").textValue());
                            assertThat(roundsJson(turn.history())).isEqualTo(t.get("history_out"));
                        }));
            }
        }
        for (JsonNode c : root.get("decode")) {
            tests.add(DynamicTest.dynamicTest("decode/" + c.get("name").textValue(), () -> {
                int[] ids = ints(c.get("ids"));
                List<String> tokens = new ArrayList<>();
                for (int id : ids) {
                    tokens.add(tok.convertIdToToken(id));
                }
                assertThat(tokens).isEqualTo(strings(c.get("tokens")));
                assertThat(tok.decode(ids)).isEqualTo(c.get("decode").textValue());
                assertThat(tok.decode(ids, false, false)).isEqualTo(c.get("decode_no_cleanup").textValue());
                assertThat(tok.processResponse(tok.decode(ids))).isEqualTo(c.get("process_response").textValue());
            }));
        }
        return tests.stream();
    }
}
