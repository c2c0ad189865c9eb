package io.github.bigmodel.server;

import java.util.concurrent.Semaphore;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * At most {@code sessions} generations at once; up to {@code queue} more wait for a slot (first come, first
 * served); beyond that a request is refused at once (the server answers 429).
 */
final class Admission {

    private final Semaphore slots;
    private final int queue;
    private final AtomicInteger waiting = new AtomicInteger();

    Admission(int sessions, int queue) {
        this.slots = new Semaphore(sessions, true);
        this.queue = queue;
    }

    /**
     * Takes a slot, waiting in the queue when all are busy.
     *
     * @return false when the queue is full (nothing taken)
     */
    boolean enter() throws InterruptedException {
        if (slots.tryAcquire()) {
            return true;
        }
        if (waiting.incrementAndGet() > queue) {
            waiting.decrementAndGet();
            return false;
        }
        try {
            slots.acquire();
            return true;
        } finally {
            waiting.decrementAndGet();
        }
    }

    void leave() {
        slots.release();
    }

    int queued() {
        return waiting.get();
    }
}
