package io.github.bigmodel.safetensors;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import io.github.bigmodel.safetensors.testing.JsonMutator;

/**
 * A seeded random-mutation run over the {@link ShardIndexFuzzTest} seed corpus for the normal build (Jazzer only
 * replays the corpus there): every mutant index must open to a consistent checkpoint or give a
 * CheckpointException ({@link ShardIndexOracle}).
 */
class ShardIndexMutationTest {

    private static final long SECONDS = 8;
    private static final String[] SAFETENSORS_SEEDS = {"reference_chatglm_6b_tiny", "flat_two_tensors",
        "path_traversal", "missing_shard", "tensor_in_wrong_shard", "index_names_itself",
        "reference_chatglm3_6b_tiny_other_shards"};
    private static final String[] BIN_SEEDS = {"reference_chatglm_6b_tiny", "flat_one_tensor", "shard_not_a_string",
        "duplicate_key", "trailing_tokens", "truncated"};

    @TempDir
    static Path dir;

    @BeforeAll
    static void shards() {
        ShardIndexOracle.prepareShards(dir);
    }

    private static List<byte[]> seeds(String method, String[] names) throws IOException {
        List<byte[]> out = new ArrayList<>();
        for (String name : names) {
            try (InputStream in = ShardIndexMutationTest.class.getResourceAsStream(
                    "ShardIndexFuzzTestInputs/" + method + "/" + name)) {
                assertThat(in).as("seed " + method + "/" + name).isNotNull();
                out.add(in.readAllBytes());
            }
        }
        return out;
    }

    @Test
    void anyMutatedIndexOpensConsistentlyOrGivesACheckpointException() throws IOException {
        List<byte[]> safetensors = seeds("safetensorsIndex", SAFETENSORS_SEEDS);
        List<byte[]> bin = seeds("binIndex", BIN_SEEDS);
        // The real indexes must be accepted, or the oracle checks nothing on the accepting side.
        assertThat(ShardIndexOracle.check(dir, ShardIndexOracle.SAFETENSORS_INDEX, safetensors.get(0))).isTrue();
        assertThat(ShardIndexOracle.check(dir, ShardIndexOracle.BIN_INDEX, bin.get(0))).isTrue();
        assertThat(ShardIndexOracle.check(dir, ShardIndexOracle.FLAT_INDEX, safetensors.get(1))).isTrue();
        Random random = new Random(20240701L);
        JsonMutator mutator = new JsonMutator(random, "\"weight_map\"", "\"metadata\"",
                "\"model-00001-of-00002.safetensors\"", "\"pytorch_model-00002-of-00002.bin\"",
                "\"lm_head.weight\"", "\"/etc/passwd\"", "\"model.safetensors.index.json\"", "\"a\\u0000b\"");
        long deadline = System.nanoTime() + SECONDS * 1_000_000_000L;
        int runs = 0;
        int accepted = 0;
        while (System.nanoTime() < deadline) {
            int form = random.nextInt(3);
            List<byte[]> pool = form == 1 ? bin : safetensors;
            String indexName = form == 0 ? ShardIndexOracle.SAFETENSORS_INDEX
                    : form == 1 ? ShardIndexOracle.BIN_INDEX : ShardIndexOracle.FLAT_INDEX;
            byte[] input = mutator.mutate(pool.get(random.nextInt(pool.size())));
            try {
                if (ShardIndexOracle.check(dir, indexName, input)) {
                    accepted++;
                }
            } catch (AssertionError | RuntimeException e) {
                throw new AssertionError(indexName + " " + new String(input, StandardCharsets.UTF_8), e);
            }
            runs++;
        }
        org.slf4j.LoggerFactory.getLogger(ShardIndexMutationTest.class)
                .info("{} mutated shard indexes checked, {} accepted", runs, accepted);
        assertThat(runs).isGreaterThan(200);
        assertThat(accepted).isPositive();
    }
}
