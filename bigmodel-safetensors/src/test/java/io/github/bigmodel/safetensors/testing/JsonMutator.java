package io.github.bigmodel.safetensors.testing;

import java.nio.charset.StandardCharsets;
import java.util.Random;

/**
 * Seeded random mutations of JSON text for the mutation tests that stand in for Jazzer in the normal build: bytes
 * flipped, ranges cut and duplicated, JSON tokens spliced in (huge and negative numbers, escapes such as
 * {@code \u0000} and lone surrogates, nested brackets), digits changed.
 *
 * <pre>{@code
 * JsonMutator m = new JsonMutator(new Random(1), "\"weight_map\"");
 * byte[] mutant = m.mutate(seed);
 * }</pre>
 */
public final class JsonMutator {

    private static final String[] TOKENS = {"{", "}", "[", "]", ",", ":", "\"", "-", "0", "1", "9", "1e5", "-0",
        "1e400", "-1", "0.5", "2147483648", "-2147483649", "18446744073709551616", "9223372036854775807",
        "null", "true", "false", "\\u0000", "\\ud800", "\\udc00", "\\n", "/", "..", "../", "\u00e9", "\"a\"",
        "[]", "{}", "\"\"", "[[[[[[[[", "]]]]]]]]", "{\"a\":{\"a\":{\"a\":"};

    private final Random random;
    private final String[] tokens;

    /** A mutator drawing from {@code random}, splicing the built-in tokens and {@code extraTokens}. */
    public JsonMutator(Random random, String... extraTokens) {
        this.random = random;
        this.tokens = new String[TOKENS.length + extraTokens.length];
        System.arraycopy(TOKENS, 0, tokens, 0, TOKENS.length);
        System.arraycopy(extraTokens, 0, tokens, TOKENS.length, extraTokens.length);
    }

    /** One to four random edits of {@code in} (which is not changed). */
    public byte[] mutate(byte[] in) {
        byte[] b = in;
        int rounds = 1 + random.nextInt(4);
        for (int k = 0; k < rounds; k++) {
            int at = b.length == 0 ? 0 : random.nextInt(b.length + 1);
            switch (random.nextInt(6)) {
                case 0: // flip a bit
                    if (b.length > 0) {
                        b = b.clone();
                        b[Math.min(at, b.length - 1)] ^= (byte) (1 << random.nextInt(8));
                    }
                    break;
                case 1: { // cut a range
                    int len = random.nextInt(Math.max(1, Math.min(32, b.length - at + 1)));
                    byte[] out = new byte[b.length - len];
                    System.arraycopy(b, 0, out, 0, at);
                    System.arraycopy(b, at + len, out, at, b.length - at - len);
                    b = out;
                    break;
                }
                case 2:
                case 3: { // splice a token (twice as likely: it keeps the text JSON-like)
                    byte[] tok = tokens[random.nextInt(tokens.length)].getBytes(StandardCharsets.UTF_8);
                    byte[] out = new byte[b.length + tok.length];
                    System.arraycopy(b, 0, out, 0, at);
                    System.arraycopy(tok, 0, out, at, tok.length);
                    System.arraycopy(b, at, out, at + tok.length, b.length - at);
                    b = out;
                    break;
                }
                case 4: { // duplicate a range
                    int len = random.nextInt(Math.max(1, Math.min(64, b.length - at + 1)));
                    byte[] out = new byte[b.length + len];
                    System.arraycopy(b, 0, out, 0, at + len);
                    System.arraycopy(b, at, out, at + len, b.length - at);
                    b = out;
                    break;
                }
                default: // change a digit
                    for (int i = 0; i < b.length; i++) {
                        int j = (at + i) % b.length;
                        if (b[j] >= '0' && b[j] <= '9') {
                            b = b.clone();
                            b[j] = (byte) ('0' + random.nextInt(10));
                            break;
                        }
                    }
            }
        }
        return b;
    }
}
