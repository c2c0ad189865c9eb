package io.github.bigmodel.chatglm.tokenizer;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import java.io.IOException;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * Seeded random runs of {@link TokenizerOracle} for the normal build (Jazzer only replays the corpus there): the
 * reference texts of {@code sp_cases.json} mutated at the character level (lone surrogates, controls, special-token
 * text spliced in), random id arrays, and mutated bytes of the two real {@code .model} files.
 */
class TokenizerMutationTest {

    private static final long NANOS = 6_000_000_000L;
    private static final String[] SPLICES = {"<|user|>", "<|assistant|>", "<|system|>", "<|observation|>", "[gMASK]",
        "[MASK]", "sop", "eop", "<sop>", "<eop>", "<pad>", "<unk>", "<n>", "<|tab|>", "<|blank_4|>", "<image_12>",
        "<image_99999999999>", "<0x0A>", "\u2581", " ", "   ", "\n", "\t", "\r\n", "\u0000", "\u001b", "\u3000",
        "\u00a0", "\u200b", "\ufeff", "\ufffd", "\ud800", "\udc00", "\ud83d\udc4b", "\ud83c\uddfa\ud83c\uddf3",
        "\uff21", "\u2026", "\u00b2", "e\u0301", "\u0085", "\u2028", "你好", "한국어", "\"", "\\"};

    private static List<String> referenceTexts() {
        List<String> out = new ArrayList<>();
        for (String file : List.of("sp_cases.json", "sp_cases_ice_text.json")) {
            for (JsonNode c : Fixtures.json(file).get("encode")) {
                out.add(c.get("text").textValue());
            }
        }
        return out;
    }

    private static String mutate(String s, Random r) {
        StringBuilder b = new StringBuilder(s);
        for (int k = 1 + r.nextInt(4); k > 0; k--) {
            int at = r.nextInt(b.length() + 1);
            switch (r.nextInt(4)) {
                case 0 -> b.insert(at, SPLICES[r.nextInt(SPLICES.length)]);
                case 1 -> b.insert(at, (char) r.nextInt(0x10000));
                case 2 -> b.delete(at, Math.min(b.length(), at + 1 + r.nextInt(8)));
                default -> b.insert(at, b.substring(at, Math.min(b.length(), at + r.nextInt(16))));
            }
        }
        return b.toString();
    }

    @Test
    void anyTextEncodesWithinTheVocabularyOrIsRefusedForALoneSurrogate() {
        List<String> texts = referenceTexts();
        assertThat(texts).hasSizeGreaterThan(100);
        for (String t : texts) {
            TokenizerOracle.encode(t); // every reference text is well formed and must round-trip as the oracle says
        }
        Random random = new Random(20240703L);
        long deadline = System.nanoTime() + NANOS;
        int runs = 0;
        while (System.nanoTime() < deadline) {
            String text = mutate(texts.get(random.nextInt(texts.size())), random);
            try {
                TokenizerOracle.encode(text);
            } catch (AssertionError | RuntimeException e) {
                throw new AssertionError("text " + text.chars().mapToObj(c -> String.format("\\u%04x", c)).toList(), e);
            }
            runs++;
        }
        org.slf4j.LoggerFactory.getLogger(TokenizerMutationTest.class).info("{} mutated texts encoded", runs);
        assertThat(runs).isGreaterThan(200);
    }

    /** Found by this test: an image token past int gave a NumberFormatException. */
    @Test
    void imageTokenPastIntIsIdOutOfRange() {
        assertThat(TokenizerOracle.GLM1.convertTokenToId("<image_12>")).isEqualTo(12);
        org.assertj.core.api.Assertions.assertThatThrownBy(
                () -> TokenizerOracle.GLM1.convertTokenToId("<image_99999999999>"))
                .isInstanceOfSatisfying(TokenizerException.class,
                        e -> assertThat(e.reason()).isEqualTo(TokenizerException.Reason.ID_OUT_OF_RANGE));
    }

    @Test
    void anyIdsDecodeOrGiveIdOutOfRange() {
        Random random = new Random(20240704L);
        int vocab = TokenizerOracle.GLM3.vocabSize();
        long deadline = System.nanoTime() + NANOS / 2;
        int runs = 0;
        while (System.nanoTime() < deadline) {
            int[] ids = new int[random.nextInt(24)];
            for (int i = 0; i < ids.length; i++) {
                int kind = random.nextInt(10);
                ids[i] = kind == 0 ? random.nextInt() : kind == 1 ? vocab - 12 + random.nextInt(24)
                        : kind == 2 ? -2 + random.nextInt(4) : random.nextInt(vocab);
            }
            try {
                TokenizerOracle.decode(ids);
            } catch (AssertionError | RuntimeException e) {
                throw new AssertionError("ids " + Arrays.toString(ids), e);
            }
            runs++;
        }
        org.slf4j.LoggerFactory.getLogger(TokenizerMutationTest.class).info("{} random id arrays decoded", runs);
        assertThat(runs).isGreaterThan(1000);
    }

    @Test
    void mutatedModelFilesParseOrGiveTokenizerException() throws IOException {
        List<byte[]> models = List.of(Files.readAllBytes(Fixtures.dir().resolve("tokenizer.model")),
                Files.readAllBytes(Fixtures.dir().resolve("ice_text.model")));
        for (byte[] m : models) {
            assertThat(TokenizerOracle.model(m)).isTrue();
        }
        Random random = new Random(20240705L);
        long deadline = System.nanoTime() + NANOS;
        int runs = 0;
        int parsed = 0;
        while (System.nanoTime() < deadline) {
            byte[] b = models.get(random.nextInt(models.size())).clone();
            int edits = 1 + random.nextInt(3);
            for (int e = 0; e < edits; e++) {
                int at = random.nextInt(b.length);
                switch (random.nextInt(4)) {
                    case 0 -> b[at] = (byte) random.nextInt(256);
                    case 1 -> b[at] ^= (byte) (1 << random.nextInt(8));
                    case 2 -> b = Arrays.copyOf(b, at + 1);
                    default -> { // a varint-like run: lengths and tags that point anywhere
                        for (int i = at; i < Math.min(b.length, at + 1 + random.nextInt(5)); i++) {
                            b[i] = (byte) (0x80 | random.nextInt(256));
                        }
                    }
                }
            }
            final byte[] input = b;
            try {
                if (TokenizerOracle.model(input)) {
                    parsed++;
                }
            } catch (AssertionError | RuntimeException e) {
                Files.write(java.nio.file.Path.of("target", "model-finding.bin"), input);
                throw new AssertionError("mutated model written to target/model-finding.bin", e);
            }
            runs++;
        }
        org.slf4j.LoggerFactory.getLogger(TokenizerMutationTest.class)
                .info("{} mutated models checked, {} parsed", runs, parsed);
        assertThat(runs).isGreaterThan(50);
        assertThat(parsed).isPositive();
    }
}
