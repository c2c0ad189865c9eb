package io.github.bigmodel.chatglm.tokenizer;

import com.fasterxml.jackson.databind.JsonNode;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;

import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;

import static io.github.bigmodel.chatglm.tokenizer.Fixtures.intList;
import static io.github.bigmodel.chatglm.tokenizer.Fixtures.ints;
import static io.github.bigmodel.chatglm.tokenizer.Fixtures.strings;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** Every case of {@code sp_cases.json} (BPE) and {@code sp_cases_ice_text.json} (unigram, nmt_nfkc). */
class SentencePieceReferenceTest {

    @TestFactory
    Stream<DynamicTest> spCasesBpe() {
        return cases("sp_cases.json");
    }

    @TestFactory
    Stream<DynamicTest> spCasesIceText() {
        return cases("sp_cases_ice_text.json");
    }

    private static Stream<DynamicTest> cases(String file) {
        JsonNode root = Fixtures.json(file);
        SentencePieceProcessor sp = SentencePieceProcessor.load(Fixtures.dir().resolve(root.get("model").textValue()));
        List<DynamicTest> tests = new ArrayList<>();
        for (JsonNode c : root.get("encode")) {
            tests.add(DynamicTest.dynamicTest("encode/" + c.get("name").textValue(), () -> {
                String text = c.get("text").textValue();
                assertThat(intList(sp.encode(text))).as("ids").isEqualTo(intList(c.get("ids")));
                assertThat(sp.encodeAsPieces(text)).as("pieces").isEqualTo(strings(c.get("pieces")));
                assertThat(sp.decode(ints(c.get("ids")))).as("decoded").isEqualTo(c.get("decoded").textValue());
                assertThat(sp.decodePieces(strings(c.get("pieces")))).as("decode_pieces")
                        .isEqualTo(c.get("decode_pieces").textValue());
            }));
        }
        for (JsonNode c : root.get("decode")) {
            tests.add(DynamicTest.dynamicTest("decode/" + c.get("name").textValue(), () -> {
                int[] ids = ints(c.get("ids"));
                List<String> pieces = new ArrayList<>();
                for (int id : ids) {
                    pieces.add(sp.idToPiece(id));
                }
                assertThat(pieces).as("pieces").isEqualTo(strings(c.get("pieces")));
                assertThat(sp.decode(ids)).isEqualTo(c.get("decoded").textValue());
            }));
        }
        JsonNode lookup = root.get("lookup");
        for (JsonNode c : lookup.get("piece_to_id")) {
            tests.add(DynamicTest.dynamicTest("piece_to_id/" + c.get("piece").textValue(), () ->
                    assertThat(sp.pieceToId(c.get("piece").textValue())).isEqualTo(c.get("id").intValue())));
        }
        for (JsonNode c : lookup.get("id_to_piece")) {
            tests.add(DynamicTest.dynamicTest("id_to_piece/" + c.get("id").intValue(), () -> {
                int id = c.get("id").intValue();
                assertThat(sp.idToPiece(id)).isEqualTo(c.get("piece").textValue());
                assertThat(sp.isControl(id)).as("is_control").isEqualTo(c.get("is_control").booleanValue());
                assertThat(sp.isUnknown(id)).as("is_unknown").isEqualTo(c.get("is_unknown").booleanValue());
                assertThat(sp.isByte(id)).as("is_byte").isEqualTo(c.get("is_byte").booleanValue());
                assertThat(sp.isUnused(id)).as("is_unused").isEqualTo(c.get("is_unused").booleanValue());
                assertThat(sp.score(id)).as("score").isEqualTo((float) c.get("score").doubleValue());
            }));
        }
        tests.add(DynamicTest.dynamicTest("lookup/special_ids", () -> {
            assertThat(sp.vocabSize()).isEqualTo(lookup.get("vocab_size").intValue());
            assertThat(sp.bosId()).isEqualTo(lookup.get("bos_id").intValue());
            assertThat(sp.eosId()).isEqualTo(lookup.get("eos_id").intValue());
            assertThat(sp.unkId()).isEqualTo(lookup.get("unk_id").intValue());
            assertThat(sp.padId()).isEqualTo(lookup.get("pad_id").intValue());
        }));
        tests.add(DynamicTest.dynamicTest("decode/out_of_range_id", () ->
                assertThatThrownBy(() -> sp.decode(new int[]{sp.vocabSize()}))
                        .isInstanceOf(TokenizerException.class)
                        .extracting(e -> ((TokenizerException) e).reason())
                        .isEqualTo(TokenizerException.Reason.ID_OUT_OF_RANGE)));
        return tests.stream();
    }
}
