package io.github.bigmodel.chatglm;

import java.util.List;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.LongOptional;
import org.bytedeco.pytorch.Tensor;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The decoding loop: one call with the whole prompt, then one token per row and step with a {@link KvCache}
 * sized for the prompt plus {@code maxNewTokens}, feeding the model the positions and masks the official
 * generation hooks would. The next token is the argmax of the processed scores (greedy); the processors of the
 * request run first, so sampling can come in as processors plus another chooser without changing the loop.
 *
 * <pre>{@code
 * Generator generator = new Generator(model);
 * GenerationResult r = generator.generate(GenerationRequest.builder(new long[][] {prompt})
 *         .maxNewTokens(64).build());
 * long[] reply = r.newIds()[0];
 * }</pre>
 */
// PointerScope blocks are used for what they release on close, not referenced by name.
@SuppressWarnings("try")
public final class Generator {

    private static final Logger LOG = LoggerFactory.getLogger(Generator.class);

    private final ChatGLMLanguageModel model;

    public Generator(ChatGLMLanguageModel model) {
        if (model == null) {
            throw new IllegalArgumentException("model must not be null");
        }
        this.model = model;
    }

    /** Runs the request to completion. */
    public GenerationResult generate(GenerationRequest request) {
        long[][] prompt = request.promptIds();
        int batch = prompt.length;
        int promptLength = prompt[0].length;
        int maxNew = request.maxNewTokens();
        List<Long> eos = request.eosTokenIds() != null ? request.eosTokenIds() : model.config().eosTokenIds();
        long pad = model.config().padTokenId();
        long[][] ids = new long[batch][];
        for (int i = 0; i < batch; i++) {
            ids[i] = prompt[i].clone();
        }
        float[][][] kept = request.keepStepScores() ? new float[batch][maxNew][] : null;
        boolean[] finished = new boolean[batch];
        int steps = 0;
        long started = System.nanoTime();
        try (KvCache cache = model.newCache(batch, (long) promptLength + maxNew);
             ChatGLMLanguageModel.Decoding decoding = model.startDecoding(request)) {
            ForwardInput input = decoding.first(cache);
            while (true) {
                long[] next = new long[batch];
                try (PointerScope scope = new PointerScope()) {
                    Tensor logits = model.forward(input);
                    Tensor scores = logits.select(1, logits.size(1) - 1);
                    for (LogitsProcessor p : request.processors()) {
                        scores = p.process(ids, scores);
                    }
                    if (kept != null) {
                        float[] flat = Ops.floats(scores);
                        int vocab = flat.length / batch;
                        for (int i = 0; i < batch; i++) {
                            kept[i][steps] = java.util.Arrays.copyOfRange(flat, i * vocab, (i + 1) * vocab);
                        }
                    }
                    long[] chosen = Ops.longs(scores.argmax(new LongOptional(1), false));
                    System.arraycopy(chosen, 0, next, 0, batch);
                }
                boolean allDone = true;
                for (int i = 0; i < batch; i++) {
                    if (finished[i]) {
                        next[i] = pad;
                    } else if (request.stopAtEos() && eos.contains(next[i])) {
                        finished[i] = true;
                    }
                    allDone &= finished[i];
                    ids[i] = java.util.Arrays.copyOf(ids[i], ids[i].length + 1);
                    ids[i][ids[i].length - 1] = next[i];
                }
                steps++;
                if (steps == maxNew || (request.stopAtEos() && allDone)) {
                    break;
                }
                input = decoding.next(next, cache);
            }
        }
        if (kept != null && steps < maxNew) {
            for (int i = 0; i < batch; i++) {
                kept[i] = java.util.Arrays.copyOf(kept[i], steps);
            }
        }
        LOG.debug("Generated {} steps for {} rows in {} ms", steps, batch, (System.nanoTime() - started) / 1_000_000);
        return new GenerationResult(ids, promptLength, kept);
    }
}
