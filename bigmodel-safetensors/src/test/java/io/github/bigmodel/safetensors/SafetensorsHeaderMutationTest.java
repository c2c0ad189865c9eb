package io.github.bigmodel.safetensors;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * A seeded random-mutation run over the fuzz seed corpus, for the normal build (Jazzer only replays the corpus
 * there): bytes flipped, ranges cut and duplicated, JSON tokens spliced in, length prefixes and sizes bent.
 * Every input must give a valid header or a CheckpointException.
 */
class SafetensorsHeaderMutationTest {

    private static final String[] SEEDS = {"valid_two_f32", "valid_scalar_and_empty", "valid_empty_header",
        "valid_all_dtypes", "overlap", "duplicate", "truncated", "huge_shape", "short", "header_too_large"};
    private static final String[] TOKENS = {"{", "}", "[", "]", ",", ":", "\"", "-", "0", "1", "9", "1e5", "-0",
        "18446744073709551616", "9223372036854775807", "\"__metadata__\"", "\"dtype\"", "\"shape\"",
        "\"data_offsets\"", "\"F32\"", "\"BF16\"", "\"I4\"", "null", "true", "\\u0000", "\\ud800", "\u00e9",
        "\"a\"", "[0,0]", "[]", "{}"};
    private static final long SECONDS = 10;

    private static byte[] seed(String name) throws IOException {
        try (InputStream in = SafetensorsHeaderMutationTest.class.getResourceAsStream(
                "SafetensorsHeaderFuzzTestInputs/header/" + name)) {
            assertThat(in).as("seed " + name).isNotNull();
            return in.readAllBytes();
        }
    }

    private static byte[] mutate(byte[] in, Random r) {
        byte[] b = in;
        int rounds = 1 + r.nextInt(4);
        for (int k = 0; k < rounds; k++) {
            int op = r.nextInt(7);
            int at = b.length == 0 ? 0 : r.nextInt(b.length + 1);
            switch (op) {
                case 0: // flip a byte
                    if (b.length > 0) {
                        b = b.clone();
                        b[Math.min(at, b.length - 1)] ^= (byte) (1 << r.nextInt(8));
                    }
                    break;
                case 1: { // cut a range
                    int len = r.nextInt(Math.max(1, b.length - at + 1));
                    byte[] out = new byte[b.length - len];
                    System.arraycopy(b, 0, out, 0, at);
                    System.arraycopy(b, at + len, out, at, b.length - at - len);
                    b = out;
                    break;
                }
                case 2: { // splice a JSON token (bytes after the prefix: the header or data)
                    byte[] tok = TOKENS[r.nextInt(TOKENS.length)].getBytes(StandardCharsets.UTF_8);
                    byte[] out = new byte[b.length + tok.length];
                    System.arraycopy(b, 0, out, 0, at);
                    System.arraycopy(tok, 0, out, at, tok.length);
                    System.arraycopy(b, at, out, at + tok.length, b.length - at);
                    b = out;
                    break;
                }
                case 3: // rewrite the length prefix to stay consistent with a grown/shrunk header
                    if (b.length >= 8) {
                        b = b.clone();
                        long n = r.nextInt(4) == 0 ? r.nextLong() : r.nextInt(b.length);
                        ByteBuffer.wrap(b).order(ByteOrder.LITTLE_ENDIAN).putLong(0, n);
                    }
                    break;
                case 4: // append data bytes
                    b = Arrays.copyOf(b, b.length + r.nextInt(64));
                    break;
                case 5: { // duplicate a range
                    int len = r.nextInt(Math.max(1, Math.min(64, b.length - at + 1)));
                    byte[] out = new byte[b.length + len];
                    System.arraycopy(b, 0, out, 0, at + len);
                    System.arraycopy(b, at, out, at + len, b.length - at);
                    b = out;
                    break;
                }
                default: // replace a digit with another
                    for (int i = 0; i < b.length; i++) {
                        int j = (at + i) % b.length;
                        if (b[j] >= '0' && b[j] <= '9') {
                            b = b.clone();
                            b[j] = (byte) ('0' + r.nextInt(10));
                            break;
                        }
                    }
            }
        }
        // Keep mutated headers reachable: most of the time fix the prefix to the JSON's new length.
        if (b.length >= 8 && r.nextInt(3) > 0) {
            int end = lastBrace(b);
            if (end > 8) {
                ByteBuffer.wrap(b).order(ByteOrder.LITTLE_ENDIAN).putLong(0, end - 8 + 1);
            }
        }
        return b;
    }

    private static int lastBrace(byte[] b) {
        for (int i = b.length - 1; i >= 8; i--) {
            if (b[i] == '}') {
                return i;
            }
        }
        return -1;
    }

    @Test
    void anyMutationGivesAHeaderOrACheckpointException() throws IOException {
        List<byte[]> seeds = new ArrayList<>();
        for (String s : SEEDS) {
            seeds.add(seed(s));
        }
        int accepted = 0;
        for (byte[] s : seeds) {
            if (HeaderOracle.check(s)) {
                accepted++;
            }
        }
        assertThat(accepted).as("valid seeds").isEqualTo(4);
        Random r = new Random(20240601L);
        long deadline = System.nanoTime() + SECONDS * 1_000_000_000L;
        int runs = 0;
        int acceptedMutants = 0;
        while (runs < 2_000_000 && System.nanoTime() < deadline) {
            byte[] input = mutate(seeds.get(r.nextInt(seeds.size())), r);
            try {
                if (HeaderOracle.check(input)) {
                    acceptedMutants++;
                }
            } catch (AssertionError | RuntimeException e) {
                throw new AssertionError("input " + Arrays.toString(input) + " as text: "
                        + new String(input, StandardCharsets.ISO_8859_1), e);
            }
            runs++;
        }
        org.slf4j.LoggerFactory.getLogger(SafetensorsHeaderMutationTest.class)
                .info("{} mutated headers checked, {} accepted", runs, acceptedMutants);
        assertThat(runs).isGreaterThan(1000);
    }
}
