package io.github.bigmodel.chatglm.tokenizer;

import org.junit.jupiter.api.Test;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * Long inputs must encode in near-linear time. A quadratic merge loop needs minutes for 400,000 characters of
 * one repeated letter (the worst case for naive BPE); the priority-queue encoder takes well under a second.
 */
class EncodingScalingTest {

    private static final int LENGTH = 400_000;
    private static final long LIMIT_NANOS = 20_000_000_000L;

    @Test
    void bpeLongRepeatIsNotQuadratic() {
        SentencePieceProcessor sp = SentencePieceProcessor.load(Fixtures.dir().resolve("tokenizer.model"));
        assertFast(sp, "a".repeat(LENGTH));
        assertFast(sp, " ".repeat(LENGTH));
        assertFast(sp, "你好，世界。Hello world! ".repeat(LENGTH / 20));
    }

    @Test
    void unigramLongRepeatIsNotQuadratic() {
        SentencePieceProcessor sp = SentencePieceProcessor.load(Fixtures.dir().resolve("ice_text.model"));
        assertFast(sp, "a".repeat(LENGTH));
        assertFast(sp, "你好，世界。Hello world! ".repeat(LENGTH / 20));
    }

    private static void assertFast(SentencePieceProcessor sp, String text) {
        long start = System.nanoTime();
        int[] ids = sp.encode(text);
        long elapsed = System.nanoTime() - start;
        assertThat(ids.length).isPositive();
        // The encoding must be lossless whatever its speed.
        assertThat(sp.decode(ids)).isEqualTo(sp.normalize(text).replace('\u2581', ' ').substring(1));
        assertThat(elapsed).as("nanoseconds to encode %d chars", text.length()).isLessThan(LIMIT_NANOS);
        org.slf4j.LoggerFactory.getLogger(EncodingScalingTest.class)
                .info("encoded {} chars into {} ids in {} ms", text.length(), ids.length, elapsed / 1_000_000);
    }
}
