package io.github.bigmodel.chatglm;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.github.bigmodel.safetensors.testing.JsonMutator;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.stream.Stream;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestFactory;

/**
 * A seeded random-mutation run over the {@link ChatGLMConfigFuzzTest} seed corpus for the normal build (Jazzer only
 * replays the corpus there), and the inputs the fuzzers found, each of which must now be a ChatGLMConfigException.
 */
class ChatGLMConfigMutationTest {

    private static final long SECONDS = 8;
    private static final String[] VALID = {"reference_chatglm-6b-tiny", "reference_chatglm3-6b-tiny",
        "reference_chatglm3-6b-tiny-bf16"};
    private static final String[] FINDINGS = {"finding_num_layers_heap", "finding_byte_size_overflow",
        "finding_infinite_epsilon", "finding_infinite_rope_ratio", "finding_float64_dtype"};
    private static final String[] INVALID = {"heads_do_not_divide", "groups_do_not_divide", "bad_dtype",
        "both_generations", "truncated"};

    private static byte[] seed(String name) {
        try (InputStream in = ChatGLMConfigMutationTest.class.getResourceAsStream(
                "ChatGLMConfigFuzzTestInputs/config/" + name)) {
            assertThat(in).as("seed " + name).isNotNull();
            return in.readAllBytes();
        } catch (IOException e) {
            throw new AssertionError(e);
        }
    }

    @TestFactory
    Stream<DynamicTest> findingsAreConfigExceptions() {
        return Stream.of(FINDINGS).map(name -> DynamicTest.dynamicTest(name, () ->
                assertThatThrownBy(() -> ChatGLMConfig.fromJsonString(new String(seed(name), StandardCharsets.UTF_8)))
                        .isInstanceOf(ChatGLMConfigException.class)));
    }

    @Test
    void anyMutatedConfigGivesAModelOnMetaOrAConfigException() {
        List<byte[]> seeds = new ArrayList<>();
        for (String name : VALID) {
            seeds.add(seed(name));
            assertThat(ChatGLMConfigOracle.check(new String(seeds.get(seeds.size() - 1), StandardCharsets.UTF_8)))
                    .as(name).isTrue();
        }
        for (String name : INVALID) {
            seeds.add(seed(name));
            assertThat(ChatGLMConfigOracle.check(new String(seeds.get(seeds.size() - 1), StandardCharsets.UTF_8)))
                    .as(name).isFalse();
        }
        for (String name : FINDINGS) {
            seeds.add(seed(name));
        }
        Random random = new Random(20240702L);
        JsonMutator mutator = new JsonMutator(random, "\"num_layers\"", "\"hidden_size\"", "\"kv_channels\"",
                "\"padded_vocab_size\"", "\"multi_query_group_num\"", "\"torch_dtype\"", "\"bfloat16\"",
                "\"inner_hidden_size\"", "\"quantization_bit\"", "\"pre_seq_len\"", "\"rope_ratio\"", "65536",
                "1073741824", "2147483647", "1e-400");
        long deadline = System.nanoTime() + SECONDS * 1_000_000_000L;
        int runs = 0;
        int accepted = 0;
        while (System.nanoTime() < deadline) {
            String input = new String(mutator.mutate(seeds.get(random.nextInt(seeds.size()))), StandardCharsets.UTF_8);
            try {
                if (ChatGLMConfigOracle.check(input)) {
                    accepted++;
                }
            } catch (AssertionError | RuntimeException e) {
                throw new AssertionError("config " + input, e);
            }
            runs++;
        }
        org.slf4j.LoggerFactory.getLogger(ChatGLMConfigMutationTest.class)
                .info("{} mutated configs checked, {} accepted", runs, accepted);
        assertThat(runs).isGreaterThan(500);
        assertThat(accepted).isPositive();
    }
}
