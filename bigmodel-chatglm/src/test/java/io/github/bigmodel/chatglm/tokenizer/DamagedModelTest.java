package io.github.bigmodel.chatglm.tokenizer;

import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.stream.Stream;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.fail;

/** Damaged model files must give a typed {@link TokenizerException}, never an index or other runtime error. */
class DamagedModelTest {

    private static final String SAMPLE = "Hello 你好 ＡＢＣ\t\n  x👋 <n> <|blank_4|>";

    @TestFactory
    Stream<DynamicTest> damagedModels() throws IOException {
        List<DynamicTest> tests = new ArrayList<>();
        for (String file : List.of("tokenizer.model", "ice_text.model")) {
            byte[] good = Files.readAllBytes(Fixtures.dir().resolve(file));
            tests.add(DynamicTest.dynamicTest(file + "/truncated", () -> {
                int step = Math.max(1, good.length / 300);
                for (int len = 0; len < good.length; len += step) {
                    byte[] cut = new byte[len];
                    System.arraycopy(good, 0, cut, 0, len);
                    loadAndUseOrTypedFailure(cut, "truncated to " + len);
                }
            }));
            tests.add(DynamicTest.dynamicTest(file + "/corrupted_bytes", () -> {
                Random random = new Random(20240601L);
                for (int trial = 0; trial < 400; trial++) {
                    byte[] bad = good.clone();
                    int flips = 1 + random.nextInt(4);
                    StringBuilder what = new StringBuilder();
                    for (int f = 0; f < flips; f++) {
                        int at = random.nextInt(bad.length);
                        bad[at] = (byte) random.nextInt(256);
                        what.append(at).append(' ');
                    }
                    loadAndUseOrTypedFailure(bad, "corrupted at " + what);
                }
            }));
        }
        tests.add(DynamicTest.dynamicTest("empty_file", () ->
                assertThatThrownBy(() -> SentencePieceModel.parse(new byte[0]))
                        .isInstanceOf(TokenizerException.class)
                        .extracting(e -> ((TokenizerException) e).reason())
                        .isEqualTo(TokenizerException.Reason.MALFORMED_MODEL)));
        tests.add(DynamicTest.dynamicTest("missing_file", () ->
                assertThatThrownBy(() -> SentencePieceModel.load(Path.of("does-not-exist.model")))
                        .isInstanceOf(TokenizerException.class)
                        .extracting(e -> ((TokenizerException) e).reason())
                        .isEqualTo(TokenizerException.Reason.IO_ERROR)));
        tests.add(DynamicTest.dynamicTest("lone_surrogate_input", () -> {
            SentencePieceProcessor sp = SentencePieceProcessor.load(Fixtures.dir().resolve("tokenizer.model"));
            assertThatThrownBy(() -> sp.encode("a\uD800b"))
                    .isInstanceOf(TokenizerException.class)
                    .extracting(e -> ((TokenizerException) e).reason())
                    .isEqualTo(TokenizerException.Reason.INVALID_INPUT);
        }));
        return tests.stream();
    }

    private static void loadAndUseOrTypedFailure(byte[] data, String what) {
        try {
            SentencePieceProcessor sp = new SentencePieceProcessor(SentencePieceModel.parse(data));
            int[] ids = sp.encode(SAMPLE);
            sp.encodeAsPieces(SAMPLE);
            sp.decode(ids);
            assertThat(ids).isNotNull();
        } catch (TokenizerException expected) {
            assertThat(expected.getMessage()).isNotBlank();
        } catch (RuntimeException | StackOverflowError e) {
            fail("model " + what + " gave an untyped " + e, e);
        }
    }
}
