package io.github.bigmodel.chatglm.generation;

import io.github.bigmodel.core.SettingException;
import io.github.bigmodel.core.SettingMessage;
import java.security.SecureRandom;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import io.github.bigmodel.chatglm.ChatGLMConfig;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.chatglm.model.ForwardInput;
import io.github.bigmodel.chatglm.model.KvCache;
import io.github.bigmodel.chatglm.internal.Ops;

/**
 * The decoding loop: one call with the whole prompt, then one token per row and step with a {@link KvCache}
 * sized for the prompt plus {@code maxNewTokens}, feeding the model the positions and masks the official
 * generation hooks would. The request's processors run on the last position's scores, then the next token is the
 * argmax (greedy) or a seeded draw ({@link GenerationRequest#doSample()}); a row ends at one of its stop ids
 * unless the request ignores EOS, and emits the pad id afterwards.
 *
 * <p>{@link #generate} runs to completion; {@link #start} returns a {@link Session} that runs one step per call,
 * for streaming. Weights are only read: several sessions may run on one model, each with its own cache.
 *
 * <pre>{@code
 * Generator generator = new Generator(model);
 * GenerationResult r = generator.generate(GenerationRequest.builder(new long[][] {prompt})
 *         .maxNewTokens(64).build());
 * long[] reply = r.newIds()[0];
 *
 * try (Generator.Session s = generator.start(request)) {
 *     while (!s.isFinished()) {
 *         long token = s.step()[0];
 *     }
 * }
 * }</pre>
 */
// PointerScope blocks are used for what they release on close, not referenced by name.
@SuppressWarnings("try")
public final class Generator {

    private static final Logger LOG = LoggerFactory.getLogger(Generator.class);
    private static final SecureRandom SEEDS = new SecureRandom();

    private final ChatGLMLanguageModel model;

    public Generator(ChatGLMLanguageModel model) {
        if (model == null) {
            throw new IllegalArgumentException("model must not be null");
        }
        this.model = model;
    }

    public ChatGLMLanguageModel model() {
        return model;
    }

    /** Runs the request to completion. */
    public GenerationResult generate(GenerationRequest request) {
        long started = System.nanoTime();
        try (Session session = start(request)) {
            while (!session.isFinished()) {
                session.step();
            }
            LOG.debug("Generated {} steps for {} rows in {} ms", session.steps(), session.ids.length,
                    (System.nanoTime() - started) / 1_000_000);
            return session.result();
        }
    }

    /**
     * Starts a generation: allocates its cache and prepares the inputs; nothing runs until {@link Session#step()}.
     * The caller must close the session (it frees the cache).
     */
    public Session start(GenerationRequest request) {
        if (request == null) {
            throw new IllegalArgumentException("request must not be null");
        }
        validate(request);
        return new Session(model, request);
    }

    /**
     * Checks the request against this model before any memory is allocated: every prompt id inside the vocabulary,
     * and the prompt (plus, for ChatGLM2/3 whose rotary table ends at {@code seq_length}, the new tokens) within the
     * model's positions.
     */
    private void validate(GenerationRequest request) {
        ChatGLMConfig config = model.config();
        long[][] rows = request.promptIds();
        for (int r = 0; r < rows.length; r++) {
            for (int i = 0; i < rows[r].length; i++) {
                long id = rows[r][i];
                if (id < 0 || id >= config.vocabSize()) {
                    throw new IllegalArgumentException("Prompt row " + r + ", position " + i + ": token id " + id
                            + " is outside the model's vocabulary [0, " + config.vocabSize() + ")");
                }
            }
        }
        int promptLength = rows[0].length;
        int positions = config.maxPositions();
        if (promptLength >= positions) {
            throw new IllegalArgumentException("The prompt has " + promptLength + " tokens, the model " + positions
                    + " positions: shorten the prompt to at most " + (positions - 1) + " tokens");
        }
        if (config.version() == ChatGLMConfig.Version.CHATGLM2
                && (long) promptLength + request.maxNewTokens() > positions) {
            throw new SettingException(new SettingMessage("max_new_tokens", "maxNewTokens",
                    "The prompt's " + promptLength + " tokens plus ", " " + request.maxNewTokens()
                    + " exceed the model's seq_length " + positions + ": ask for at most "
                    + (positions - promptLength) + " new tokens"));
        }
    }

    /**
     * One generation in progress. {@link #step()} runs one forward pass and returns the token chosen for every
     * row; {@link #close()} frees the KV cache and may be called from another thread (it waits for a running step
     * to finish, so it stops the work within one step). Not for concurrent {@code step()} calls.
     *
     * <pre>{@code
     * try (Generator.Session s = new Generator(model).start(request)) {
     *     long[] first = s.step();
     * }   // cache freed even if generation did not finish
     * }</pre>
     */
    public static final class Session implements AutoCloseable {

        private final ChatGLMLanguageModel model;
        private final GenerationRequest request;
        private final int promptLength;
        private final int maxNew;
        private final Set<Long> eos;
        private final long pad;
        private final long[][] ids;
        private final float[][][] kept;
        private final boolean[] finished;
        private final TokenChooser chooser;
        private KvCache cache;
        private ChatGLMLanguageModel.Decoding decoding;
        private ForwardInput input;
        private long[] lastTokens;
        private int steps;
        private boolean done;
        private volatile boolean closed;

        private Session(ChatGLMLanguageModel model, GenerationRequest request) {
            this.model = model;
            this.request = request;
            long[][] prompt = request.promptIds();
            int batch = prompt.length;
            this.promptLength = prompt[0].length;
            this.maxNew = request.maxNewTokens();
            List<Long> eosList = request.eosTokenIds() != null ? request.eosTokenIds() : model.config().eosTokenIds();
            this.eos = new HashSet<>(eosList);
            this.pad = model.config().padTokenId();
            this.ids = new long[batch][];
            for (int i = 0; i < batch; i++) {
                ids[i] = Arrays.copyOf(prompt[i], promptLength + maxNew);
            }
            this.kept = request.keepStepScores() ? new float[batch][maxNew][] : null;
            this.finished = new boolean[batch];
            if (request.doSample()) {
                long seed = request.seed() != null ? request.seed() : SEEDS.nextLong();
                LOG.debug("Sampling with seed {}", seed);
                this.chooser = TokenChooser.sampling(seed);
            } else {
                this.chooser = TokenChooser.greedy();
            }
            KvCache newCache = model.newCache(batch, (long) promptLength + maxNew);
            try {
                this.decoding = model.startDecoding(request);
            } catch (RuntimeException | Error e) {
                newCache.close();
                throw e;
            }
            this.cache = newCache;
        }

        /** Whether every row has ended (stop id or token budget), or the session was closed. */
        public boolean isFinished() {
            return done || closed;
        }

        /** Whether row {@code row} has produced one of its stop ids. */
        public boolean isStopped(int row) {
            return finished[row];
        }

        /** Steps run so far (new tokens per row). */
        public synchronized int steps() {
            return steps;
        }

        /** The prompt length (all rows have it). */
        public int promptLength() {
            return promptLength;
        }

        /**
         * Runs one step: the prompt on the first call, then the previous tokens. Returns the chosen id of every row
         * (the pad id for rows that already ended).
         *
         * @throws IllegalStateException when the generation is finished or the session closed
         */
        public synchronized long[] step() {
            if (closed || cache == null) {
                throw new IllegalStateException("Generation session is closed");
            }
            if (done) {
                throw new IllegalStateException("Generation is finished after " + steps + " steps");
            }
            int batch = ids.length;
            if (input == null) {
                input = decoding.first(cache);
            } else {
                input = decoding.next(lastTokens, cache);
            }
            long[] next;
            try (PointerScope scope = new PointerScope()) {
                Tensor logits = model.forward(input);
                Tensor scores = logits.select(1, logits.size(1) - 1);
                long[][] soFar = request.processors().isEmpty() ? null : soFar();
                for (LogitsProcessor p : request.processors()) {
                    scores = p.process(soFar, scores);
                }
                if (kept != null) {
                    float[] flat = Ops.floats(scores);
                    int vocab = flat.length / batch;
                    for (int i = 0; i < batch; i++) {
                        kept[i][steps] = Arrays.copyOfRange(flat, i * vocab, (i + 1) * vocab);
                    }
                }
                next = chooser.choose(scores);
            }
            boolean allDone = true;
            for (int i = 0; i < batch; i++) {
                if (finished[i]) {
                    next[i] = pad;
                } else if (request.stopAtEos() && eos.contains(next[i])) {
                    finished[i] = true;
                }
                allDone &= finished[i];
                ids[i][promptLength + steps] = next[i];
            }
            steps++;
            lastTokens = next;
            if (steps == maxNew || (request.stopAtEos() && allDone)) {
                done = true;
                release();
            }
            return next.clone();
        }

        private long[][] soFar() {
            long[][] out = new long[ids.length][];
            for (int i = 0; i < ids.length; i++) {
                out[i] = Arrays.copyOf(ids[i], promptLength + steps);
            }
            return out;
        }

        /** Prompt plus the tokens so far, per row (a copy). */
        public synchronized long[][] ids() {
            return soFar();
        }

        /** What was generated so far, as a result (complete once {@link #isFinished()}). */
        public synchronized GenerationResult result() {
            float[][][] scores = kept;
            if (kept != null && steps < maxNew) {
                scores = new float[kept.length][][];
                for (int i = 0; i < kept.length; i++) {
                    scores[i] = Arrays.copyOf(kept[i], steps);
                }
            }
            return new GenerationResult(soFar(), promptLength, scores);
        }

        /** Whether the KV cache is still allocated (false once finished or closed). */
        public boolean holdsCache() {
            return cacheBytes() > 0;
        }

        /**
         * Native bytes this session's KV cache holds ({@link KvCache#allocatedBytes()}); 0 once finished or closed.
         * Waits for a step running on another thread (the cache may be freed when it ends).
         */
        public synchronized long cacheBytes() {
            return cache == null ? 0 : cache.allocatedBytes();
        }

        /** The cache itself while allocated, for tests that check it is freed (package-private on purpose). */
        synchronized KvCache cache() {
            return cache;
        }

        private void release() {
            if (decoding != null) {
                decoding.close();
                decoding = null;
            }
            if (cache != null) {
                cache.close();
                cache = null;
            }
        }

        /** Stops the generation and frees its cache; waits for a step running on another thread. Idempotent. */
        @Override
        public void close() {
            closed = true;
            synchronized (this) {
                release();
            }
        }
    }
}
