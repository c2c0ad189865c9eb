package io.github.bigmodel.pipeline.internal;

import java.time.Duration;
import org.bytedeco.javacpp.chrono.Milliseconds;
import org.bytedeco.pytorch.GlooDeviceVector;
import org.bytedeco.pytorch.PrefixStore;
import org.bytedeco.pytorch.ProcessGroupGloo;
import org.bytedeco.pytorch.TCPStore;
import org.bytedeco.pytorch.TCPStoreOptions;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.Work;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * One generation of the pipeline's process group: ProcessGroupGloo over a {@link PrefixStore} of the shared
 * TCPStore, so that a group can be formed again under a new prefix when a member was lost. Point-to-point only:
 * every message is a CPU tensor sent to one rank and received from one rank, each wait bounded.
 */
public final class GlooGroup implements AutoCloseable {

    private static final Logger LOG = LoggerFactory.getLogger(GlooGroup.class);
    private static final int TAG = 7;

    private final ProcessGroupGloo group;
    private final int rank;
    private final int world;
    private volatile boolean broken;
    private final java.util.concurrent.atomic.AtomicBoolean released = new java.util.concurrent.atomic.AtomicBoolean();

    private GlooGroup(ProcessGroupGloo group, int rank, int world) {
        this.group = group;
        this.rank = rank;
        this.world = world;
    }

    /**
     * The TCPStore at {@code host:port}: its server when {@code server} (the coordinator), else a client that
     * retries connecting for up to {@code timeout}.
     */
    public static TCPStore store(String host, int port, boolean server, Duration timeout) {
        TCPStoreOptions options = new TCPStoreOptions();
        options.port((short) port);
        options.isServer(server);
        options.waitWorkers(false);
        options.timeout(new Milliseconds(timeout.toMillis()));
        options.useLibUV(false);
        return new TCPStore(host, options);
    }

    /**
     * Forms (joins) the group of {@code world} ranks under {@code prefix} of the store at {@code host:port}: returns
     * once every rank has joined, or throws when they have not within {@code timeout}. {@code bindAddress}: the
     * address of this host's interface the other ranks reach it by.
     *
     * <p>The group gets a store connection of its own: libtorch takes ownership of the store handed to a
     * PrefixStore or a process group (an intrusive pointer made from it), so a store object is handed over once and
     * never used by Java again; the rendezvous keeps its own connection.
     */
    public static GlooGroup join(String host, int port, String prefix, int rank, int world, String bindAddress,
            Duration timeout) {
        // Formed on a thread of its own: a caller inside a PointerScope (a forward pass that re-forms the group)
        // would otherwise have the group's native objects released when its scope closes.
        java.util.concurrent.CompletableFuture<GlooGroup> formed = new java.util.concurrent.CompletableFuture<>();
        Thread t = new Thread(() -> {
            try {
                formed.complete(form(host, port, prefix, rank, world, bindAddress, timeout));
            } catch (Throwable e) {
                formed.completeExceptionally(e);
            }
        }, "gloo-join-rank" + rank);
        t.setDaemon(true);
        t.start();
        try {
            return formed.get(timeout.toMillis() + 30_000, java.util.concurrent.TimeUnit.MILLISECONDS);
        } catch (java.util.concurrent.ExecutionException e) {
            Throwable cause = e.getCause();
            throw cause instanceof RuntimeException r ? r : new IllegalStateException(cause);
        } catch (java.util.concurrent.TimeoutException e) {
            throw new GroupBrokenException("Rank " + rank + ": forming group " + prefix + " took longer than "
                    + timeout);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new GroupBrokenException("Rank " + rank + ": interrupted while forming group " + prefix);
        }
    }

    private static GlooGroup form(String host, int port, String prefix, int rank, int world, String bindAddress,
            Duration timeout) {
        ProcessGroupGloo.Options options = ProcessGroupGloo.Options.create(new Milliseconds(timeout.toMillis()));
        options.devices(new GlooDeviceVector(ProcessGroupGloo.createDeviceForHostname(bindAddress)));
        options.threads(2);
        TCPStore own = store(host, port, false, timeout);
        PrefixStore scoped = new PrefixStore(prefix, own);
        // Owned by libtorch from here on (released with the group), never by Java's deallocator.
        own.deallocate(false);
        scoped.deallocate(false);
        ProcessGroupGloo pg = new ProcessGroupGloo(scoped, rank, world, options);
        LOG.debug("Rank {} of {} joined group {}", rank, world, prefix);
        return new GlooGroup(pg, rank, world);
    }

    public int rank() {
        return rank;
    }

    public int world() {
        return world;
    }

    /** Whether an operation failed: the group is no longer usable and must be formed again. */
    public boolean isBroken() {
        return broken;
    }

    /** Sends a contiguous CPU tensor to {@code dst}, waiting at most {@code timeout} for it to leave. */
    public void send(Tensor t, int dst, Duration timeout) {
        run(() -> group.send(new TensorVector(t), dst, TAG), "send to rank " + dst, timeout);
    }

    /** Receives into a contiguous CPU tensor of the right shape and dtype from {@code src}, within {@code timeout}. */
    public void recv(Tensor t, int src, Duration timeout) {
        run(() -> group.recv(new TensorVector(t), src, TAG), "receive from rank " + src, timeout);
    }

    private void run(java.util.function.Supplier<Work> post, String what, Duration timeout) {
        if (broken) {
            throw new GroupBrokenException("The group is broken: " + what + " not attempted");
        }
        boolean done;
        Work work;
        try {
            // Posting fails at once when the peer's connection is already closed; waiting fails or times out later.
            work = post.get();
            done = work._wait(new Milliseconds(timeout.toMillis()));
        } catch (RuntimeException e) {
            broken = true;
            throw new GroupBrokenException("Rank " + rank + ": " + what + " failed: " + e.getMessage());
        }
        if (!done) {
            broken = true;
            work.abort();
            throw new GroupBrokenException("Rank " + rank + ": " + what + " did not complete within " + timeout);
        }
    }

    /** Marks the group unusable (a peer is known to be gone). */
    public void markBroken() {
        broken = true;
    }

    @Override
    public void close() {
        broken = true;
        if (!released.compareAndSet(false, true)) {
            return;
        }
        // Closing the sockets is what tells the peers this generation is over (their pending receives fail and they
        // join the next). Bounded: should a peer's hang ever hold the release up, it is left to finish on its own.
        Thread closer = new Thread(group::close, "gloo-close-rank" + rank);
        closer.setDaemon(true);
        closer.start();
        try {
            closer.join(5_000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        if (closer.isAlive()) {
            LOG.warn("Rank {}: releasing the group takes more than 5 s; left to finish in the background", rank);
        }
    }

    /** A send or receive that failed or timed out: the peer is gone or hung, the group must be formed again. */
    public static final class GroupBrokenException extends RuntimeException {
        private static final long serialVersionUID = 1L;

        public GroupBrokenException(String message) {
            super(message);
        }
    }
}
