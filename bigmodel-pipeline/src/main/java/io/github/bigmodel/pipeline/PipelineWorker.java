package io.github.bigmodel.pipeline;

import io.github.bigmodel.chatglm.ChatGLMFamily;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.chatglm.model.KvCache;
import io.github.bigmodel.chatglm.model.PipelineStep;
import io.github.bigmodel.chatglm.model.StageSpan;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Tensors;
import io.github.bigmodel.dispatch.BigModel;
import io.github.bigmodel.dispatch.DispatchOptions;
import io.github.bigmodel.dispatch.DispatchedModel;
import io.github.bigmodel.dispatch.plan.DeviceMap;
import io.github.bigmodel.pipeline.internal.Fingerprint;
import io.github.bigmodel.pipeline.internal.GlooGroup;
import io.github.bigmodel.pipeline.internal.Rendezvous;
import io.github.bigmodel.pipeline.internal.Wire;
import java.nio.file.Path;
import java.time.Duration;
import java.util.HashMap;
import java.util.Map;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.TCPStore;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A rank {@code r >= 1} of a pipeline: loads only what the {@code r}-th host of the device map holds (its own blocks,
 * and the head on the last host), joins the coordinator's group and serves steps until told to shut down. It keeps
 * the KV caches of its blocks per session and frees them when the coordinator closes the session; when the group
 * breaks (the coordinator or another worker is gone) it drops every session and waits for the next generation.
 *
 * <pre>{@code
 * PipelineWorker.Options o = new PipelineWorker.Options("10.0.0.1", 29500, 1, 2, "10.0.0.2",
 *         Duration.ofHours(1), Duration.ofMinutes(2));
 * try (PipelineWorker w = PipelineWorker.load(Path.of("chatglm3-6b"), hostMap, DispatchOptions.builder().build(), o)) {
 *     w.serve();   // returns when the coordinator shuts the workers down
 * }
 * }</pre>
 */
// PointerScope blocks are used for what they release on close, not referenced by name.
@SuppressWarnings("try")
public final class PipelineWorker implements AutoCloseable {

    private static final Logger LOG = LoggerFactory.getLogger(PipelineWorker.class);

    /**
     * Where the coordinator is and who this worker is.
     *
     * @param storeHost the coordinator's store address
     * @param storePort its port
     * @param rank this worker's rank (its host is the rank-th of the device map's hosts), at least 1
     * @param world the number of ranks
     * @param bindAddress the address of this host's interface the other ranks reach it by
     * @param joinTimeout how long to wait for a coordinator (and each new generation) before giving up
     * @param stepTimeout how long the parts of a step (after its header) may take to arrive or leave
     */
    public record Options(String storeHost, int storePort, int rank, int world, String bindAddress,
            Duration joinTimeout, Duration stepTimeout) {

        /** @throws IllegalArgumentException for a rank outside {@code [1, world)} */
        public Options {
            if (rank < 1 || rank >= world) {
                throw new IllegalArgumentException("A worker's rank is in [1, world), got rank " + rank + " of world "
                        + world + " (rank 0 is the coordinator)");
            }
        }
    }

    private final ChatGLMLanguageModel model;
    private final DispatchedModel<ChatGLMLanguageModel> dispatched;
    private final StageSpan span;
    private final String fingerprint;
    private final Options options;
    private final Map<Long, KvCache> sessions = new HashMap<>();
    private int steps;

    private PipelineWorker(ChatGLMLanguageModel model, DispatchedModel<ChatGLMLanguageModel> dispatched,
            StageSpan span, String fingerprint, Options options) {
        this.model = model;
        this.dispatched = dispatched;
        this.span = span;
        this.fingerprint = fingerprint;
        this.options = options;
    }

    /**
     * Loads this rank's stage of {@code modelDir}: the modules {@code hostMap} places on its host, with
     * {@code base}'s dtype and precisions (the device map is this host's part of {@code hostMap}).
     *
     * @throws IllegalArgumentException when the map has no host for this rank or is not a pipeline of this model
     */
    public static PipelineWorker load(Path modelDir, DeviceMap hostMap, DispatchOptions base, Options options) {
        ChatGLMFamily family = ChatGLMFamily.ofFolder(modelDir);
        DType dtype = base.plan().floatDtype() != null ? base.plan().floatDtype() : DType.FLOAT32;
        ChatGLMLanguageModel model = family.createModel(dtype);
        StagePlan plan = StagePlan.of(hostMap, model);
        if (options.rank() >= plan.world()) {
            throw new IllegalArgumentException("Rank " + options.rank() + " has no host: the device map names "
                    + plan.hosts());
        }
        StageSpan span = plan.span(options.rank());
        model.setStage(span, null);
        String fingerprint = Fingerprint.of(modelDir, model, span);
        DispatchOptions own = base.toBuilder().dtype(dtype).deviceMap(hostMap.forHost(plan.host(options.rank())))
                .build();
        DispatchedModel<ChatGLMLanguageModel> dispatched = BigModel.loadCheckpointAndDispatch(model, modelDir, own);
        LOG.info("Rank {} ({}) loaded {}", options.rank(), plan.host(options.rank()), span);
        return new PipelineWorker(model, dispatched, span, fingerprint, options);
    }

    public StageSpan span() {
        return span;
    }

    /**
     * Serves: joins each generation the coordinator forms and carries its steps, until the coordinator shuts the
     * workers down.
     *
     * @throws PipelineException {@link PipelineException.Kind#REFUSED} when the coordinator refuses this rank
     *     (another version, world size or checkpoint), {@link PipelineException.Kind#UNAVAILABLE} when no coordinator
     *     formed a group within the join timeout
     */
    public void serve() {
        String served = "";
        while (true) {
            TCPStore store;
            try {
                store = GlooGroup.store(options.storeHost(), options.storePort(), false, options.joinTimeout());
            } catch (RuntimeException e) {
                throw new PipelineException(PipelineException.Kind.UNAVAILABLE, "No coordinator store at "
                        + options.storeHost() + ":" + options.storePort() + " within " + options.joinTimeout() + ": "
                        + e.getMessage(), e);
            }
            try {
                String[] verdict;
                try {
                    verdict = Rendezvous.hello(store, served, new Rendezvous.Hello(Wire.MAGIC,
                            PipelineCoordinator.VERSION, options.world(), options.rank(), fingerprint),
                            options.joinTimeout());
                } catch (RuntimeException lost) {
                    // The store went away (the coordinator ended): connect again.
                    LOG.info("Rank {}: lost the store ({}); connecting again", options.rank(), lost.getMessage());
                    served = "";
                    continue;
                }
                if (verdict == null) {
                    throw new PipelineException(PipelineException.Kind.UNAVAILABLE, "Rank " + options.rank()
                            + ": no new pipeline group within " + options.joinTimeout());
                }
                served = verdict[0];
                if (verdict[1].startsWith("refused")) {
                    throw new PipelineException(PipelineException.Kind.REFUSED, "Rank " + options.rank()
                            + " was refused by the coordinator: " + verdict[1].substring("refused: ".length()));
                }
                if (!verdict[1].equals("ok")) {
                    LOG.warn("Rank {}: generation {} did not form ({}); waiting for the next", options.rank(),
                            verdict[0], verdict[1]);
                    continue;
                }
                GlooGroup group;
                try {
                    group = GlooGroup.join(options.storeHost(), options.storePort(),
                            Rendezvous.groupPrefix(verdict[0]), options.rank(), options.world(),
                            options.bindAddress(), options.joinTimeout());
                } catch (RuntimeException e) {
                    LOG.warn("Rank {}: group {} did not form: {}", options.rank(), verdict[0], e.getMessage());
                    continue;
                }
                LOG.info("Rank {} serving in group {}", options.rank(), verdict[0]);
                boolean shutdown;
                try {
                    shutdown = serveGroup(group);
                } finally {
                    dropSessions();
                    group.close();
                }
                if (shutdown) {
                    return;
                }
            } finally {
                store.close();
            }
        }
    }

    /** Carries steps until SHUTDOWN (true) or until the group breaks (false). */
    private boolean serveGroup(GlooGroup g) {
        int prev = options.rank() - 1;
        int next = options.rank() + 1 == options.world() ? 0 : options.rank() + 1;
        Duration t = options.stepTimeout();
        // Waiting for the next step has no bound: a worker idles until the coordinator sends or goes away.
        Duration idle = Duration.ofDays(365);
        try {
            while (true) {
                Wire.Header h = Wire.recvHeader(g, prev, idle);
                switch (h.op()) {
                    case Wire.FORWARD -> forward(g, h, prev, next, t);
                    case Wire.ERROR -> Wire.sendMessage(g, Wire.recvMessage(g, h, prev, t), next, t);
                    case Wire.FREE -> {
                        KvCache cache = sessions.remove(h.session());
                        if (cache != null) {
                            cache.close();
                        }
                        Wire.sendHeader(g, h, next, t);
                    }
                    case Wire.PING -> Wire.sendHeader(g, h, next, t);
                    case Wire.SHUTDOWN -> {
                        Wire.sendHeader(g, h, next, t);
                        LOG.info("Rank {}: shut down by the coordinator after {} steps", options.rank(), steps);
                        return true;
                    }
                    default -> throw new GlooGroup.GroupBrokenException("Unknown operation " + h.op());
                }
            }
        } catch (GlooGroup.GroupBrokenException | IllegalStateException e) {
            LOG.warn("Rank {}: the group broke ({}); waiting for the coordinator to form it again", options.rank(),
                    e.getMessage());
            return false;
        }
    }

    private void forward(GlooGroup g, Wire.Header h, int prev, int next, Duration t) {
        try (PointerScope scope = new PointerScope()) {
            long[] posShape = h.positionRows() == 3 ? new long[] {h.batch(), 2, h.length()}
                    : new long[] {h.batch(), h.length()};
            Tensor positions = Wire.recvTensor(g, ScalarType.Long, posShape, prev, t);
            Tensor maskBytes = h.hasMask() ? Wire.recvTensor(g, ScalarType.Byte,
                    new long[] {h.batch(), 1, h.length(), h.past() + h.length()}, prev, t) : null;
            Tensor hidden = Wire.recvTensor(g, DType.values()[h.dtype()].scalarType(), h.shape(), prev, t);
            Tensor out;
            try {
                Tensor mask = maskBytes == null ? null : maskBytes.to(ScalarType.Bool);
                PipelineStep step = new PipelineStep(h.session(), h.batch(), h.length(), h.past(), h.capacity(),
                        h.lastLogitOnly(), h.fromLayer(), positions, mask);
                out = model.forwardStage(step, hidden, cacheOf(h));
                steps++;
            } catch (RuntimeException e) {
                LOG.warn("Rank {}: step of session {} failed: {}", options.rank(), h.session(), e.toString());
                Wire.sendMessage(g, "Rank " + options.rank() + " failed the step: " + e.getMessage(), next, t);
                return;
            }
            long[] shape = Tensors.shape(out);
            int dtype = DType.of(out.scalar_type()).ordinal();
            if (next == 0) {
                Wire.sendHeader(g, new Wire.Header(Wire.RESULT, h.session(), h.batch(), h.length(), h.past(),
                        h.capacity(), h.lastLogitOnly(), span.endLayer(), span.head() ? 1 : 0, false, dtype, shape,
                        0), 0, t);
            } else {
                Wire.sendHeader(g, new Wire.Header(Wire.FORWARD, h.session(), h.batch(), h.length(), h.past(),
                        h.capacity(), h.lastLogitOnly(), span.endLayer(), h.positionRows(), h.hasMask(), dtype,
                        shape, 0), next, t);
                Wire.sendTensor(g, positions, next, t);
                if (maskBytes != null) {
                    Wire.sendTensor(g, maskBytes, next, t);
                }
            }
            Wire.sendTensor(g, out, next, t);
        }
    }

    /** This stage's cache of the step's session: made on its first step, checked against the step's start after. */
    private KvCache cacheOf(Wire.Header h) {
        if (h.session() == 0) {
            return null;
        }
        KvCache cache = sessions.get(h.session());
        if (cache == null) {
            if (h.past() != 0) {
                throw new IllegalStateException("Session " + h.session() + " is unknown here (its caches were dropped "
                        + "when the group formed again): start it over");
            }
            cache = model.newCache(h.batch(), h.capacity());
            sessions.put(h.session(), cache);
        }
        return cache;
    }

    private void dropSessions() {
        sessions.values().forEach(KvCache::close);
        sessions.clear();
    }

    /** Sessions whose caches this stage keeps now. */
    public int liveSessions() {
        return sessions.size();
    }

    @Override
    public void close() {
        dropSessions();
        dispatched.close();
    }
}
