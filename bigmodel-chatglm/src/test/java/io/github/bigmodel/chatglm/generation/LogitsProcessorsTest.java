package io.github.bigmodel.chatglm.generation;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.within;

import io.github.bigmodel.core.NativeRuntime;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;

/** Each processor against values worked out by hand from transformers' definitions. */
class LogitsProcessorsTest {

    static {
        NativeRuntime.init();
    }

    private static Tensor row(float... values) {
        try (FloatPointer p = new FloatPointer(values)) {
            return torch.from_blob(p, new long[] {1, values.length}, new TensorOptions(ScalarType.Float)).clone();
        }
    }

    private static float[] values(Tensor t) {
        try (Tensor c = t.contiguous()) {
            float[] out = new float[(int) c.numel()];
            c.data_ptr_float().get(out);
            return out;
        }
    }

    private static final float NEG_INF = Float.NEGATIVE_INFINITY;
    private static final long[][] NO_IDS = {{0}};

    @Test
    void temperatureDividesTheScores() {
        assertThat(values(new TemperatureWarper(0.5).process(NO_IDS, row(1, 2, 4)))).containsExactly(2, 4, 8);
    }

    @Test
    void topKKeepsTheKBestAndTiesWithTheKth() {
        assertThat(values(new TopKWarper(2).process(NO_IDS, row(1, 4, 2, 3)))).containsExactly(NEG_INF, 4, NEG_INF, 3);
        assertThat(values(new TopKWarper(2).process(NO_IDS, row(1, 3, 2, 3)))).containsExactly(NEG_INF, 3, NEG_INF, 3);
        assertThat(values(new TopKWarper(10).process(NO_IDS, row(1, 3, 2)))).containsExactly(1, 3, 2);
    }

    @Test
    void topPRemovesTheTailWhoseMassIsAtMostOneMinusP() {
        // probabilities 0.1 0.2 0.3 0.4; ascending cumulative 0.1 0.3 0.6 1.0
        float[] logits = {(float) Math.log(0.1), (float) Math.log(0.2), (float) Math.log(0.3), (float) Math.log(0.4)};
        float[] half = values(new TopPWarper(0.5).process(NO_IDS, row(logits)));   // drop cumulative <= 0.5
        assertThat(half).containsExactly(NEG_INF, NEG_INF, logits[2], logits[3]);
        float[] most = values(new TopPWarper(0.75).process(NO_IDS, row(logits)));  // drop cumulative <= 0.25
        assertThat(most).containsExactly(NEG_INF, logits[1], logits[2], logits[3]);
        float[] none = values(new TopPWarper(0.0).process(NO_IDS, row(logits)));   // the best always stays
        assertThat(none).containsExactly(NEG_INF, NEG_INF, NEG_INF, logits[3]);
    }

    @Test
    void repetitionPenaltyDividesPositiveAndMultipliesNegativeScoresOnce() {
        float[] out = values(new RepetitionPenaltyProcessor(2.0).process(new long[][] {{0, 1, 1}},
                row(1.0f, -1.0f, 3.0f, 0.5f)));
        assertThat(out).containsExactly(0.5f, -2.0f, 3.0f, 0.5f);
    }

    @Test
    void invalidScoresBecomeTheFallbackToken() {
        float[] out = values(new InvalidScoreProcessor().process(NO_IDS, row(1, Float.NaN, 2, 3, 4, 5, 6)));
        assertThat(out).containsExactly(0, 0, 0, 0, 0, 5e4f, 0);
        float[] inf = values(new InvalidScoreProcessor().process(NO_IDS, row(1, 2, 3, 4, 5, 6, Float.POSITIVE_INFINITY)));
        assertThat(inf).containsExactly(0, 0, 0, 0, 0, 5e4f, 0);
        assertThat(values(new InvalidScoreProcessor().process(NO_IDS, row(1, 2, 3)))).containsExactly(1, 2, 3);
    }

    @Test
    void configBuildsTransformersOrder() {
        GenerationConfig g = GenerationConfig.builder().doSample(true).temperature(0.8).topK(50).topP(0.8)
                .repetitionPenalty(1.1).build();
        assertThat(g.processors()).extracting(p -> p.getClass().getSimpleName()).containsExactly(
                "RepetitionPenaltyProcessor", "InvalidScoreProcessor", "TemperatureWarper", "TopKWarper", "TopPWarper");
        assertThat(GenerationConfig.greedy().processors()).extracting(p -> p.getClass().getSimpleName())
                .containsExactly("InvalidScoreProcessor");
    }

    @Test
    void samplerFollowsTheDistribution() {
        float[] logits = {(float) Math.log(0.1), (float) Math.log(0.2), (float) Math.log(0.3), (float) Math.log(0.4)};
        TokenChooser chooser = TokenChooser.sampling(123);
        int[] counts = new int[4];
        int draws = 20000;
        try (Tensor scores = row(logits)) {
            for (int i = 0; i < draws; i++) {
                counts[(int) chooser.choose(scores)[0]]++;
            }
        }
        for (int v = 0; v < 4; v++) {
            assertThat(counts[v] / (double) draws).as("frequency of " + v).isCloseTo(0.1 * (v + 1), within(0.015));
        }
        try (Tensor scores = row(NEG_INF, 2, NEG_INF)) {
            assertThat(TokenChooser.sampling(5).choose(scores)).containsExactly(1);
        }
    }
}
