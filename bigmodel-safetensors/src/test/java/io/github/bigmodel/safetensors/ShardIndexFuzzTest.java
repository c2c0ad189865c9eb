package io.github.bigmodel.safetensors;

import com.code_intelligence.jazzer.junit.FuzzTest;
import java.nio.file.Path;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.io.TempDir;

/**
 * Jazzer fuzz tests of the shard index parser behind {@link Checkpoint#open}: any bytes written as
 * {@code model.safetensors.index.json} or {@code pytorch_model.bin.index.json} beside the real shards of
 * chatglm-6b-tiny must give a consistent checkpoint or a {@link CheckpointException} ({@link ShardIndexOracle}).
 * The normal build replays the seed corpus under {@code ShardIndexFuzzTestInputs/<method>/}; {@code -Pfuzz
 * -Dfuzz.test=ShardIndexFuzzTest#safetensorsIndex} fuzzes one of them for real. See docs/reliability.md.
 */
class ShardIndexFuzzTest {

    @TempDir
    static Path dir;

    @BeforeAll
    static void shards() {
        ShardIndexOracle.prepareShards(dir);
    }

    @FuzzTest(maxDuration = "10m")
    void safetensorsIndex(byte[] data) {
        ShardIndexOracle.check(dir, ShardIndexOracle.SAFETENSORS_INDEX, data);
    }

    @FuzzTest(maxDuration = "10m")
    void binIndex(byte[] data) {
        ShardIndexOracle.check(dir, ShardIndexOracle.BIN_INDEX, data);
    }
}
