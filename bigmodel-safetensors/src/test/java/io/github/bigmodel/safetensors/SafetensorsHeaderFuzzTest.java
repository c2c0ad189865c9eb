package io.github.bigmodel.safetensors;

import com.code_intelligence.jazzer.junit.FuzzTest;

/**
 * Jazzer fuzz test of the header parser. In the normal build it replays the committed seed corpus
 * ({@code src/test/resources/.../SafetensorsHeaderFuzzTestInputs/header}); with {@code -Pfuzz} (which sets
 * {@code JAZZER_FUZZ=1}) it fuzzes for {@code maxDuration}. See docs/checkpoints.md.
 */
class SafetensorsHeaderFuzzTest {

    @FuzzTest(maxDuration = "10m")
    void header(byte[] data) {
        HeaderOracle.check(data);
    }
}
