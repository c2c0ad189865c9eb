package io.github.bigmodel.dispatch.hooks;

import io.github.bigmodel.core.ModelClosedException;
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
import java.util.concurrent.TimeUnit;
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
 *
 * <p>Ownership: the prefetch thread reads the stages' {@link WeightSource}s (mapped views, the checkpoint, CPU
 * copies) that the {@link DispatchedModel} owns; the tensors a prefetch makes are this prefetcher's until
 * {@link #take(int)} hands them to the caller, and {@link #close()} frees those never taken. {@link #cancel()} makes
 * every later {@code take} fail with {@link ModelClosedException} (a forward under way stops at its next offloaded
 * module) and stops scheduling; {@link #close()} also waits until the prefetch thread has finished the read it is
 * running, so the owner may free the sources once it returns, and never before.
 */
public final class Prefetcher implements AutoCloseable {

    private static final Logger LOG = LoggerFactory.getLogger(Prefetcher.class);

    private final List<OffloadedWeights> stages;
    private final int depth;
    private final ExecutorService executor;
    private final List<CompletableFuture<Map<Parameter, Tensor>>> inFlight;
    /** Set by {@link #cancel()} or {@link #close()}: no new read is scheduled or started, {@code take} fails. */
    private volatile boolean cancelled;
    /** Guarded by {@code this}. */
    private boolean closed;

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
        if (cancelled) {
            throw closedException();
        }
        CompletableFuture<Map<Parameter, Tensor>> future = inFlight.set(stage, null);
        for (int k = 1; k <= depth && stages.size() > 1; k++) {
            schedule((stage + k) % stages.size());
        }
        if (future == null) {
            return stages.get(stage).materialize(false);
        }
        try {
            Map<Parameter, Tensor> ready = future.get();
            if (cancelled) {
                // Closing began while this thread waited: hand nothing out, the model is going away.
                release(ready);
                throw closedException();
            }
            return ready;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            future.thenAccept(Prefetcher::release);
            throw new IllegalStateException("Interrupted while waiting for offloaded weights", e);
        } catch (ExecutionException e) {
            Throwable cause = e.getCause();
            if (cause instanceof CancellationException) {
                throw closedException();
            }
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
        if (cancelled) {
            return;
        }
        OffloadedWeights w = stages.get(stage);
        inFlight.set(stage, CompletableFuture.supplyAsync(() -> {
            // Checked when the read starts: a task queued before close never touches the sources.
            if (cancelled) {
                throw new CancellationException("prefetch of " + w.moduleName() + " after close");
            }
            return w.materialize(true);
        }, executor));
    }

    private ModelClosedException closedException() {
        return new ModelClosedException("The model is closed: its offloaded weights are no longer read"
                + " (prefetcher of " + stages.size() + " stages)");
    }

    private static void release(Map<Parameter, Tensor> tensors) {
        tensors.values().forEach(Tensor::close);
    }

    /**
     * Stops scheduling and makes every later {@link #take(int)} fail with {@link ModelClosedException}, without
     * waiting: the first step of closing a model, so that a forward under way stops at its next offloaded module
     * instead of running to its end. Safe from any thread.
     */
    public void cancel() {
        cancelled = true;
    }

    /**
     * Cancels ({@link #cancel()}), waits until the prefetch thread has finished the read it may be running (queued
     * reads are skipped), then frees every prefetched tensor nobody took. When this returns, no thread of this
     * prefetcher touches a weight source any more. Idempotent (every caller waits for the read under way); waits
     * for a {@code take} in progress.
     */
    @Override
    public void close() {
        List<CompletableFuture<Map<Parameter, Tensor>>> pending = new ArrayList<>();
        cancelled = true;
        synchronized (this) {
            // A second caller takes nothing to free but still waits below for the read under way.
            if (!closed) {
                closed = true;
                for (int i = 0; i < inFlight.size(); i++) {
                    CompletableFuture<Map<Parameter, Tensor>> f = inFlight.set(i, null);
                    if (f != null) {
                        pending.add(f);
                    }
                }
            }
        }
        executor.shutdown();
        boolean interrupted = false;
        long waitedSeconds = 0;
        while (true) {
            try {
                if (executor.awaitTermination(10, TimeUnit.SECONDS)) {
                    break;
                }
                waitedSeconds += 10;
                LOG.warn("Closing the prefetcher: its read is still running after {} s", waitedSeconds);
            } catch (InterruptedException e) {
                // Returning now would let the owner free sources the running read still uses.
                interrupted = true;
            }
        }
        if (interrupted) {
            Thread.currentThread().interrupt();
        }
        for (CompletableFuture<Map<Parameter, Tensor>> f : pending) {
            // Every task has ended: each future is done, with tensors to free or with the reason it did not read.
            try {
                release(f.join());
            } catch (CancellationException | java.util.concurrent.CompletionException ex) {
                if (!(ex.getCause() instanceof CancellationException) && !(ex instanceof CancellationException)) {
                    LOG.debug("prefetch failed before close", ex);
                }
            }
        }
    }

    /** Whether {@link #cancel()} or {@link #close()} was called. */
    public boolean isCancelled() {
        return cancelled;
    }
}
