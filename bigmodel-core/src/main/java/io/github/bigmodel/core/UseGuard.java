package io.github.bigmodel.core;

import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Keeps native memory alive while threads use it: users {@link #enter()} and {@link #exit()} around their work
 * (a forward pass), and {@link #close()} refuses new users, then waits until the current ones have left, so that
 * the caller may free what they were reading. Every {@link Module} has one ({@link Module#useGuard()}); a model's
 * top-level forward enters it and whoever releases the model's weights closes it first.
 *
 * <pre>{@code
 * UseGuard guard = model.useGuard();
 * guard.enter();                      // ModelClosedException once closed
 * try {
 *     ... read the weights ...
 * } finally {
 *     guard.exit();
 * }
 * // elsewhere, on another thread:
 * guard.close();                      // no new users; returns when the last one has left
 * model.toMeta();                     // now nobody reads what is freed
 * }</pre>
 *
 * <p>Entering is reentrant per thread (a forward inside a forward). A thread that holds the guard cannot close it
 * (it would wait for itself): that gives an {@link IllegalStateException}. {@link #close()} is not interruptible:
 * returning early would let the caller free memory that is still read, so an interrupt is kept for later and the
 * wait goes on (a warning is logged every 10 seconds). A closed guard stays closed until {@link #reopen()}, which
 * loaders call once new weights are in place.
 */
public final class UseGuard {

    private static final Logger LOG = LoggerFactory.getLogger(UseGuard.class);
    private static final long WARN_NANOS = TimeUnit.SECONDS.toNanos(10);

    private final String what;
    /** Threads inside, with their nesting depth. Guarded by {@code this}. */
    private Map<Thread, Integer> holders;
    private volatile boolean closed;

    /** @param what names the guarded object in messages ("model ChatGLM2ForConditionalGeneration") */
    public UseGuard(String what) {
        this.what = what;
    }

    /**
     * Registers the calling thread as a user.
     *
     * @throws ModelClosedException when the guard is closed (or closing)
     */
    public synchronized void enter() {
        if (closed) {
            throw new ModelClosedException(what + " is closed: its weights are released or being released");
        }
        if (holders == null) {
            holders = new HashMap<>(4);
        }
        holders.merge(Thread.currentThread(), 1, Integer::sum);
    }

    /**
     * Ends the calling thread's use (one level of nesting).
     *
     * @throws IllegalStateException when the calling thread did not {@link #enter()}
     */
    public synchronized void exit() {
        Thread t = Thread.currentThread();
        Integer depth = holders == null ? null : holders.get(t);
        if (depth == null) {
            throw new IllegalStateException("exit() of " + what + " on a thread that did not enter it");
        }
        if (depth == 1) {
            holders.remove(t);
            if (holders.isEmpty()) {
                notifyAll();
            }
        } else {
            holders.put(t, depth - 1);
        }
    }

    /** Throws {@link ModelClosedException} when closed; a cheap check for entry points that allocate first. */
    public void checkOpen() {
        if (closed) {
            throw new ModelClosedException(what + " is closed: its weights are released or being released");
        }
    }

    /** Whether {@link #close()} was called (and no {@link #reopen()} since). */
    public boolean isClosed() {
        return closed;
    }

    /** Whether the calling thread is inside (it could not {@link #close()} the guard). */
    public synchronized boolean isHeldByCurrentThread() {
        return holders != null && holders.containsKey(Thread.currentThread());
    }

    /** Threads inside now (for tests and diagnostics). */
    public synchronized int activeUsers() {
        return holders == null ? 0 : holders.size();
    }

    /**
     * Refuses new users and waits until every current one has left. Idempotent; a second caller also waits.
     *
     * @throws IllegalStateException when the calling thread is itself inside (closing from a forward pass)
     */
    public synchronized void close() {
        Thread self = Thread.currentThread();
        if (holders != null && holders.containsKey(self)) {
            throw new IllegalStateException("Cannot close " + what + " from inside its own forward pass ("
                    + self.getName() + "): close it from another thread or after the call returns");
        }
        closed = true;
        boolean interrupted = false;
        long start = System.nanoTime();
        long nextWarning = start + WARN_NANOS;
        while (holders != null && !holders.isEmpty()) {
            try {
                wait(1000);
            } catch (InterruptedException e) {
                interrupted = true;
            }
            long now = System.nanoTime();
            if (now >= nextWarning && holders != null && !holders.isEmpty()) {
                LOG.warn("Closing {}: still waiting after {} s for {} thread(s) to leave it: {}", what,
                        TimeUnit.NANOSECONDS.toSeconds(now - start), holders.size(), holders.keySet());
                nextWarning = now + WARN_NANOS;
            }
        }
        if (interrupted) {
            Thread.currentThread().interrupt();
        }
    }

    /** Accepts users again: for loaders, once new weights are in place. */
    public synchronized void reopen() {
        closed = false;
    }

    /**
     * A hook that enters this guard before a module's forward pass and leaves it after (attach it first, with
     * {@link Module#addFirstForwardHook}, so that no other hook reads weights outside the guard).
     */
    public ForwardHook forwardHook() {
        return new ForwardHook() {
            @Override
            public void beforeForward(Module module) {
                enter();
            }

            @Override
            public void afterForward(Module module) {
                exit();
            }
        };
    }

    @Override
    public String toString() {
        return "UseGuard[" + what + (closed ? ", closed" : "") + "]";
    }
}
