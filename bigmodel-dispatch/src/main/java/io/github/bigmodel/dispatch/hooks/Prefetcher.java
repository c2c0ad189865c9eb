package io.github.bigmodel.dispatch.hooks;

import io.github.bigmodel.core.Parameter;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CancellationException;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import org.bytedeco.pytorch.Tensor;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Reads offloaded weights ahead of the forward pass: while stage {@code i} (a dispatched module) runs, the weights of
 * stages {@code i+1 .. i+depth} are read on a background thread. Accelerate has no such thing: its offloaded
 * forward waits for every read.
 *
 * <p>Stages are in execution order and the order is cyclic, because generation runs the same modules once per
 * token: after the last stage, the first stages of the next step are prefetched. At most {@code depth} stages are in
 * flight besides the one in use, which bounds the extra memory to {@code depth} stages' weights.
 *
 * <pre>{@code
 * try (Prefetcher p = new Prefetcher(stages, 1)) {
 *     Map<Parameter, Tensor> w = p.take(0);   // waits for stage 0, schedules stage 1
 * }
 * }</pre>
 *
 * <p>Threads: {@link #take(int)} is synchronized and may be called by several threads running the model (each
 * session's forward passes interleave). The cyclic schedule is then only a guess: a stage taken by one thread is
 * read again, synchronously, when another thread reaches it before its next prefetch. Results never depend on the
 * schedule, only the time spent waiting does.
 */
public final class Prefetcher implements AutoCloseable {

    private static final Logger LOG = LoggerFactory.getLogger(Prefetcher.class);

    private final List<OffloadedWeights> stages;
    private final int depth;
    private final ExecutorService executor;
    private final List<CompletableFuture<Map<Parameter, Tensor>>> inFlight;
    private volatile boolean closed;

    /**
     * @param stages offloaded modules in execution order
     * @param depth how many stages to read ahead (at least 1)
     */
    public Prefetcher(List<OffloadedWeights> stages, int depth) {
        if (depth < 1) {
            throw new IllegalArgumentException("prefetch depth must be at least 1, got " + depth);
        }
        this.stages = List.copyOf(stages);
        this.depth = Math.min(depth, Math.max(1, stages.size() - 1));
        this.executor = Executors.newSingleThreadExecutor(r -> {
            Thread t = new Thread(r, "bigmodel-prefetch");
            t.setDaemon(true);
            return t;
        });
        this.inFlight = new ArrayList<>(Collections.nCopies(stages.size(), null));
    }

    public int depth() {
        return depth;
    }

    public List<OffloadedWeights> stages() {
        return stages;
    }

    /**
     * The weights of {@code stage} on its execution device, read ahead if it was scheduled (else read now), and
     * schedules the next {@code depth} stages. The caller owns the returned tensors.
     */
    public synchronized Map<Parameter, Tensor> take(int stage) {
        if (closed) {
            throw new IllegalStateException("Prefetcher is closed");
        }
        CompletableFuture<Map<Parameter, Tensor>> future = inFlight.set(stage, null);
        for (int k = 1; k <= depth && stages.size() > 1; k++) {
            schedule((stage + k) % stages.size());
        }
        if (future == null) {
            return stages.get(stage).materialize(false);
        }
        try {
            return future.get();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            future.thenAccept(Prefetcher::release);
            throw new IllegalStateException("Interrupted while waiting for offloaded weights", e);
        } catch (ExecutionException e) {
            Throwable cause = e.getCause();
            if (cause instanceof RuntimeException) {
                throw (RuntimeException) cause;
            }
            throw new IllegalStateException("Reading offloaded weights of " + stages.get(stage).moduleName()
                    + " failed", cause);
        }
    }

    private void schedule(int stage) {
        if (inFlight.get(stage) != null) {
            return;
        }
        OffloadedWeights w = stages.get(stage);
        inFlight.set(stage, CompletableFuture.supplyAsync(() -> w.materialize(true), executor));
    }

    private static void release(Map<Parameter, Tensor> tensors) {
        tensors.values().forEach(Tensor::close);
    }

    /** Stops the background thread and frees every prefetched but unused tensor. */
    @Override
    public synchronized void close() {
        if (closed) {
            return;
        }
        closed = true;
        for (int i = 0; i < inFlight.size(); i++) {
            CompletableFuture<Map<Parameter, Tensor>> f = inFlight.set(i, null);
            if (f != null) {
                f.thenAccept(Prefetcher::release).exceptionally(ex -> {
                    if (!(ex instanceof CancellationException)) {
                        LOG.debug("prefetch failed after close", ex);
                    }
                    return null;
                });
            }
        }
        executor.shutdown();
    }
}
