package io.github.bigmodel.chatglm;

import com.code_intelligence.jazzer.junit.FuzzTest;
import java.nio.charset.StandardCharsets;

/**
 * Jazzer fuzz test of {@link ChatGLMConfig#fromJsonString} and of building the model on meta from what it accepts
 * ({@link ChatGLMConfigOracle}). The normal build replays the seed corpus under
 * {@code ChatGLMConfigFuzzTestInputs/config/}; {@code mvn -Pfuzz -pl bigmodel-chatglm -am test} fuzzes it for
 * real. See docs/reliability.md.
 */
class ChatGLMConfigFuzzTest {

    @FuzzTest(maxDuration = "10m")
    void config(byte[] data) {
        ChatGLMConfigOracle.check(new String(data, StandardCharsets.UTF_8));
    }
}
