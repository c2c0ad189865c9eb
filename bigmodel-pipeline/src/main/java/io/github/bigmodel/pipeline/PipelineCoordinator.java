package io.github.bigmodel.pipeline;

import io.github.bigmodel.chatglm.ChatGLMFamily;
import io.github.bigmodel.chatglm.chat.ChatGLM;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.chatglm.model.PipelineLink;
import io.github.bigmodel.chatglm.model.PipelineStep;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
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
import java.util.UUID;
import org.bytedeco.pytorch.TCPStore;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Rank 0 of a pipeline: hosts the TCPStore, forms the group with the workers (checking each one's version, world
 * size and checkpoint fingerprint), holds the first stage (the embedding and the first host's blocks) and drives
 * every step round the ring: rank 0 -> 1 -> ... -> last -> 0. The {@link ChatGLM} it loads chats, streams and
 * generates exactly as a whole model does.
 *
 * <pre>{@code
 * DeviceMap map = DeviceMap.fromJson(Files.readString(Path.of("pipeline.json")));
 * try (PipelineCoordinator c = PipelineCoordinator.start(dir, map, PipelineCoordinator.Options.of("0.0.0.0", 29500));
 *      ChatGLM glm = c.loadChat(DispatchOptions.builder().build(), 0, 0)) {
 *     System.out.println(glm.chat("Hello", List.of()).text());
 * }
 * }</pre>
 *
 * <p>Failures: a worker that dies or stops answering fails the step under way with a {@link PipelineException} of
 * kind {@link PipelineException.Kind#UNAVAILABLE} within {@link Options#stepTimeout()}; the next request first forms
 * the group again (a new generation, a new store prefix), waiting up to the step timeout for the workers, so once the
 * worker is back the pipeline serves again; {@link #reform()} does the same waiting up to the join timeout. Steps
 * are carried one at a time (sessions interleave step by step).
 */
public final class PipelineCoordinator implements AutoCloseable {

    private static final Logger LOG = LoggerFactory.getLogger(PipelineCoordinator.class);

    /** The version a rank must run to join: the protocol's, and bigmodel's when packaged. */
    public static final String VERSION = versionOf();

    /**
     * How to reach and wait for the workers.
     *
     * @param storeHost the address the TCPStore listens on (the workers' {@code --store} host)
     * @param storePort its port
     * @param bindAddress the address of this host's interface the workers reach it by (Gloo's device)
     * @param joinTimeout how long forming the group waits for every worker
     * @param stepTimeout how long one step may take round the ring before the pipeline is declared unavailable
     */
    public record Options(String storeHost, int storePort, String bindAddress, Duration joinTimeout,
            Duration stepTimeout) {

        /** Listening on {@code host:port}, Gloo on {@code host} (or 127.0.0.1 for 0.0.0.0), 5 min join, 2 min step. */
        public static Options of(String host, int port) {
            return new Options(host, port, "0.0.0.0".equals(host) ? "127.0.0.1" : host, Duration.ofMinutes(5),
                    Duration.ofMinutes(2));
        }

        public Options withTimeouts(Duration join, Duration step) {
            return new Options(storeHost, storePort, bindAddress, join, step);
        }

        public Options withBindAddress(String address) {
            return new Options(storeHost, storePort, address, joinTimeout, stepTimeout);
        }
    }

    private final Path modelDir;
    private final DeviceMap hostMap;
    private final StagePlan plan;
    private final Options options;
    private final String[] fingerprints;
    private final TCPStore store;
    private final String instance = UUID.randomUUID().toString().substring(0, 8);
    private final Link link = new Link();
    private int generation;
    private GlooGroup group;
    private boolean closed;

    private PipelineCoordinator(Path modelDir, DeviceMap hostMap, StagePlan plan, Options options,
            String[] fingerprints, TCPStore store) {
        this.modelDir = modelDir;
        this.hostMap = hostMap;
        this.plan = plan;
        this.options = options;
        this.fingerprints = fingerprints;
        this.store = store;
    }

    /**
     * Starts the store and forms the group: returns once every worker of {@code hostMap}'s hosts has joined and
     * been accepted.
     *
     * @throws PipelineException {@link PipelineException.Kind#REFUSED} when a worker runs another version, world
     *     size or checkpoint, {@link PipelineException.Kind#UNAVAILABLE} when one did not join in time
     * @throws IllegalArgumentException when the map is not a pipeline of this model
     */
    public static PipelineCoordinator start(Path modelDir, DeviceMap hostMap, Options options) {
        ChatGLMLanguageModel meta = ChatGLMFamily.ofFolder(modelDir).createModel(DType.FLOAT32);
        StagePlan plan = StagePlan.of(hostMap, meta);
        String[] fingerprints = new String[plan.world()];
        for (int r = 0; r < plan.world(); r++) {
            fingerprints[r] = Fingerprint.of(modelDir, meta, plan.span(r));
        }
        LOG.info("Pipeline of {}: {}", modelDir, plan);
        TCPStore store = GlooGroup.store(options.storeHost(), options.storePort(), true, options.joinTimeout());
        PipelineCoordinator c = new PipelineCoordinator(modelDir, hostMap, plan, options, fingerprints, store);
        try {
            c.reform();
        } catch (RuntimeException e) {
            c.close();
            throw e;
        }
        return c;
    }

    public StagePlan plan() {
        return plan;
    }

    /** The link the first stage's model hands its steps to. */
    public PipelineLink link() {
        return link;
    }

    /**
     * Loads the coordinator's own stage (what the first host holds; {@code base}'s dtype, precisions and budgets,
     * the device map being this host's part of the pipeline map) as a chat over the whole pipeline.
     */
    public ChatGLM loadChat(DispatchOptions base, long context, long batch) {
        DispatchOptions own = base.toBuilder().deviceMap(hostMap.forHost(plan.host(0))).build();
        return ChatGLM.loadStage(modelDir, own, context, batch, plan.span(0), link);
    }

    /**
     * Loads the coordinator's own stage as a bare model (no tokenizer: for callers that feed token ids), with
     * {@code base}'s dtype and precisions; its forward passes run through the whole pipeline.
     *
     * <pre>{@code
     * try (DispatchedModel<ChatGLMLanguageModel> m = coordinator.loadModel(DispatchOptions.builder().build())) {
     *     new Generator(m.model()).generate(request);
     * }
     * }</pre>
     */
    public DispatchedModel<ChatGLMLanguageModel> loadModel(DispatchOptions base) {
        DType dtype = base.plan().floatDtype() != null ? base.plan().floatDtype() : DType.FLOAT32;
        ChatGLMLanguageModel model = ChatGLMFamily.ofFolder(modelDir).createModel(dtype);
        model.setStage(plan.span(0), link);
        return BigModel.loadCheckpointAndDispatch(model, modelDir,
                base.toBuilder().dtype(dtype).deviceMap(hostMap.forHost(plan.host(0))).build());
    }

    /**
     * Forms the group again under a new generation: waits for every worker (those whose group broke come back on
     * their own) and checks them again.
     *
     * @throws PipelineException as {@link #start}
     */
    public synchronized void reform() {
        reform(options.joinTimeout());
    }

    /** {@link #reform()} waiting at most {@code wait} for the workers. */
    private void reform(Duration wait) {
        if (closed) {
            throw new IllegalStateException("The coordinator is closed");
        }
        if (group != null) {
            group.close();
            group = null;
        }
        generation++;
        String g = instance + "-" + generation;
        Rendezvous.Verdicts v = Rendezvous.judge(store, g, plan.world(), Wire.MAGIC, VERSION, fingerprints, wait);
        if (!v.accepted()) {
            boolean refused = v.refusals().stream().anyMatch(s -> s.contains("refused"));
            throw new PipelineException(refused ? PipelineException.Kind.REFUSED : PipelineException.Kind.UNAVAILABLE,
                    (refused ? "" : "A pipeline stage is unavailable: ") + "the pipeline group did not form: "
                            + String.join("; ", v.refusals()));
        }
        try {
            group = GlooGroup.join(options.storeHost(), options.storePort(), Rendezvous.groupPrefix(g), 0,
                    plan.world(), options.bindAddress(), options.joinTimeout());
        } catch (RuntimeException e) {
            throw new PipelineException(PipelineException.Kind.UNAVAILABLE, "The pipeline group " + g
                    + " did not form: " + e.getMessage(), e);
        }
        LOG.info("Pipeline group {} formed: {} ranks", g, plan.world());
    }

    /** A round trip through every rank; returns its time in milliseconds. */
    public synchronized double ping() {
        long start = System.nanoTime();
        control(Wire.PING, 0);
        return (System.nanoTime() - start) / 1e6;
    }

    /** Asks every worker to stop serving (they exit their serve loop). */
    public synchronized void shutdownWorkers() {
        control(Wire.SHUTDOWN, 0);
    }

    /** Closes the group and the store; the workers go back to waiting for a coordinator. */
    @Override
    public synchronized void close() {
        if (closed) {
            return;
        }
        closed = true;
        if (group != null) {
            group.close();
            group = null;
        }
        store.close();
    }

    private GlooGroup usableGroup() {
        if (closed) {
            throw new PipelineException(PipelineException.Kind.UNAVAILABLE, "The pipeline coordinator is closed");
        }
        if (group == null || group.isBroken()) {
            // Inside a request: wait for the workers no longer than a step may take; reform() waits longer.
            LOG.info("The pipeline group is broken: forming it again");
            reform(options.stepTimeout());
        }
        return group;
    }

    private void control(int op, long session) {
        GlooGroup g = usableGroup();
        int last = plan.world() - 1;
        try {
            Wire.sendHeader(g, Wire.Header.control(op, session), 1, options.stepTimeout());
            Wire.Header back = Wire.recvHeader(g, last, options.stepTimeout());
            if (back.op() == Wire.ERROR) {
                String message = Wire.recvMessage(g, back, last, options.stepTimeout());
                throw new PipelineException(PipelineException.Kind.STAGE_FAILED, message);
            }
            if (back.op() != op) {
                g.markBroken();
                throw new PipelineException(PipelineException.Kind.UNAVAILABLE, "Out of step: sent operation " + op
                        + ", got " + back.op() + " back");
            }
        } catch (GlooGroup.GroupBrokenException e) {
            throw unavailable(e);
        }
    }

    private PipelineException unavailable(RuntimeException e) {
        return new PipelineException(PipelineException.Kind.UNAVAILABLE, "A pipeline stage is unavailable: "
                + e.getMessage() + " (the request failed; the next one forms the group again)", e);
    }

    /** Carries a step round the ring. */
    private final class Link implements PipelineLink {

        @Override
        public Tensor forward(PipelineStep step, Tensor hidden) {
            synchronized (PipelineCoordinator.this) {
                GlooGroup g = usableGroup();
                int last = plan.world() - 1;
                Duration t = options.stepTimeout();
                try {
                    Tensor positions = step.positions().to(ScalarType.Long);
                    Wire.Header h = new Wire.Header(Wire.FORWARD, step.session(), step.batch(), step.length(),
                            step.past(), step.capacity(), step.lastLogitOnly(), step.fromLayer(),
                            (int) positions.dim(), step.mask() != null, DType.of(hidden.scalar_type()).ordinal(),
                            Tensors.shape(hidden), 0);
                    Wire.sendHeader(g, h, 1, t);
                    Wire.sendTensor(g, positions, 1, t);
                    if (step.mask() != null) {
                        Wire.sendTensor(g, step.mask().to(ScalarType.Byte), 1, t);
                    }
                    Wire.sendTensor(g, hidden, 1, t);
                    Wire.Header back = Wire.recvHeader(g, last, t);
                    if (back.op() == Wire.ERROR) {
                        throw new PipelineException(PipelineException.Kind.STAGE_FAILED,
                                Wire.recvMessage(g, back, last, t));
                    }
                    if (back.op() != Wire.RESULT) {
                        g.markBroken();
                        throw new PipelineException(PipelineException.Kind.UNAVAILABLE, "Out of step: expected a "
                                + "result, got operation " + back.op());
                    }
                    Tensor out = Wire.recvTensor(g, DType.values()[back.dtype()].scalarType(), back.shape(), last, t);
                    // Logits stay where Gloo put them, on the CPU (as a CPU head's would be); a hidden state goes
                    // back to the device of the stage that sent it, where this stage's head runs.
                    Device device = Tensors.deviceOf(hidden);
                    return !back.carriesLogits() && device.isCuda()
                            ? out.to(Tensors.toTorch(device), out.scalar_type()) : out;
                } catch (GlooGroup.GroupBrokenException e) {
                    throw unavailable(e);
                }
            }
        }

        @Override
        public void free(long session) {
            synchronized (PipelineCoordinator.this) {
                if (closed || group == null || group.isBroken()) {
                    return; // a re-formed group starts with no sessions
                }
                try {
                    control(Wire.FREE, session);
                } catch (RuntimeException e) {
                    LOG.warn("Could not free session {} on the other stages: {}", session, e.getMessage());
                }
            }
        }
    }

    private static String versionOf() {
        String v = PipelineCoordinator.class.getPackage().getImplementationVersion();
        String override = System.getProperty("bigmodel.pipeline.version");
        return override != null ? override : "protocol-1/" + (v == null ? "dev" : v);
    }
}
