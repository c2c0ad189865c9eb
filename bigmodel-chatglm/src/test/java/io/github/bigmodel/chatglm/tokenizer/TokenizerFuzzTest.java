package io.github.bigmodel.chatglm.tokenizer;

import com.code_intelligence.jazzer.junit.FuzzTest;

/**
 * Jazzer fuzz tests of the tokenizers ({@link TokenizerOracle}): encoding any text (UTF-8 or raw UTF-16 with lone
 * surrogates) through every ChatGLM-6B/2/3 path, decoding any ids, and parsing any bytes as a SentencePiece model.
 * The normal build replays the seed corpora under {@code TokenizerFuzzTestInputs/<method>/};
 * {@code mvn -Pfuzz -pl bigmodel-chatglm -am test -Dtest=TokenizerFuzzTest#encode
 * -Dsurefire.failIfNoSpecifiedTests=false} fuzzes one for real. See docs/reliability.md.
 */
class TokenizerFuzzTest {

    @FuzzTest(maxDuration = "10m")
    void encode(byte[] data) {
        TokenizerOracle.encode(TokenizerOracle.text(data));
    }

    @FuzzTest(maxDuration = "10m")
    void decode(byte[] data) {
        TokenizerOracle.decode(TokenizerOracle.ids(data));
    }

    @FuzzTest(maxDuration = "10m")
    void modelProto(byte[] data) {
        TokenizerOracle.model(data);
    }
}
