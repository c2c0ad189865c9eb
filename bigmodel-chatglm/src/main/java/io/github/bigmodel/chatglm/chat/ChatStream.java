package io.github.bigmodel.chatglm.chat;

import io.github.bigmodel.chatglm.generation.Generator;
import java.util.ArrayDeque;
import java.util.Arrays;
import java.util.Iterator;
import java.util.List;
import java.util.NoSuchElementException;
import java.util.Spliterator;
import java.util.Spliterators;
import java.util.function.Consumer;
import java.util.stream.Stream;
import java.util.stream.StreamSupport;

/**
 * A reply in the making, as text deltas (Python's {@code for response, history in model.stream_chat(...)}, but
 * yielding only the new text each time). Generation runs as the deltas are pulled: one model step per
 * {@link #hasNext()} until a step adds text. No delta splits a character; concatenated, the deltas equal
 * {@link ChatResponse#text()} of {@link #response()}.
 *
 * <p>{@link #close()} stops the generation and frees its KV cache at once (or, from another thread, as soon as
 * the running step ends). Not thread-safe otherwise.
 *
 * <pre>{@code
 * try (ChatStream stream = glm.streamChat("你好", List.of())) {
 *     stream.forEachRemaining(System.out::print);
 *     history = stream.response().history();
 * }
 * }</pre>
 */
public final class ChatStream implements Iterator<String>, AutoCloseable {

    private final Generator.Session session;
    private final PromptFormat format;
    private final String query;
    private final String role;
    private final List<ChatMessage> history;
    private final int[] promptIds;
    private final int[] stopIds;
    private final StreamDecoder decoder;
    private final ArrayDeque<String> pending = new ArrayDeque<>();
    private int[] generated = new int[64];
    private int count;
    private boolean stopped;
    private volatile boolean closedEarly;
    private volatile ChatResponse response;

    ChatStream(Generator.Session session, PromptFormat format, String query, String role, List<ChatMessage> history,
               int[] promptIds) {
        this.session = session;
        this.format = format;
        this.query = query;
        this.role = role;
        this.history = List.copyOf(history);
        this.promptIds = promptIds;
        this.stopIds = format.stopIds();
        this.decoder = new StreamDecoder(format);
    }

    /** Runs steps until a delta is ready or the reply ends; false once the reply is complete or closed. */
    @Override
    public boolean hasNext() {
        if (closedEarly) {
            // Dropped here, on the consuming thread: close() may run on another one and must not touch the queue.
            pending.clear();
            return false;
        }
        while (pending.isEmpty() && response == null) {
            if (closedEarly) {
                return false;
            }
            if (session.isFinished()) {
                finish();
                break;
            }
            int id;
            try {
                id = (int) session.step()[0];
            } catch (IllegalStateException e) {
                if (closedEarly) {
                    return false; // closed from another thread between two steps
                }
                throw e;
            }
            append(id);
            if (PromptFormat.contains(stopIds, id) && session.isStopped(0)) {
                stopped = true;
            } else {
                offer(decoder.push(id));
            }
        }
        return !pending.isEmpty();
    }

    private void append(int id) {
        if (count == generated.length) {
            generated = Arrays.copyOf(generated, count * 2);
        }
        generated[count++] = id;
    }

    private void offer(String delta) {
        if (!delta.isEmpty()) {
            pending.add(delta);
        }
    }

    private void finish() {
        int[] all = Arrays.copyOf(generated, count);
        int[] text = stopped ? Arrays.copyOf(all, count - 1) : all;
        offer(decoder.finish(text));
        response = format.finish(query, role, history, promptIds, all,
                stopped ? FinishReason.STOP : FinishReason.LENGTH);
    }

    @Override
    public String next() {
        if (!hasNext()) {
            throw new NoSuchElementException(closedEarly ? "The stream was closed" : "The reply is complete");
        }
        return pending.poll();
    }

    /**
     * Pulls the deltas into {@code action} until the reply ends or the stream is closed (from any thread): a close
     * between two deltas ends the loop quietly instead of failing the consumer.
     */
    @Override
    public void forEachRemaining(Consumer<? super String> action) {
        while (hasNext()) {
            String delta = pending.poll();
            if (delta == null) {
                return;
            }
            action.accept(delta);
        }
    }

    /** Pulls every remaining delta into {@code sink}, then returns the response. */
    public ChatResponse drain(Consumer<String> sink) {
        forEachRemaining(sink);
        return response();
    }

    /** The deltas as a sequential stream (closing it closes this). */
    public Stream<String> deltas() {
        return StreamSupport.stream(Spliterators.spliteratorUnknownSize(this, Spliterator.ORDERED), false)
                .onClose(this::close);
    }

    /**
     * The complete response once every delta was pulled.
     *
     * @throws IllegalStateException when the reply is not complete yet or the stream was closed before its end
     */
    public ChatResponse response() {
        if (response == null) {
            throw new IllegalStateException(closedEarly ? "The stream was closed before the reply ended"
                    : "The reply is not complete: pull every delta first");
        }
        return response;
    }

    /**
     * The ids generated so far, the stop token included once there was one: for a caller that must look at the
     * raw reply before it ends (a server deciding whether ChatGLM3's first line names a tool).
     */
    public int[] generatedIds() {
        return Arrays.copyOf(generated, count);
    }

    /** Number of tokens generated so far. */
    public int generatedTokens() {
        return count;
    }

    /** Whether the KV cache of this reply is still allocated. */
    public boolean holdsCache() {
        return session.holdsCache();
    }

    /** Native bytes the KV cache of this reply holds now; 0 once the reply ended or the stream was closed. */
    public long cacheBytes() {
        return session.cacheBytes();
    }

    /**
     * Stops generating and frees the KV cache; deltas not yet pulled are dropped. Idempotent, and may be called
     * from another thread than the consumer's: a step running there finishes first (close waits for it), no
     * further step starts, and the consumer's next {@link #hasNext()} returns false.
     */
    @Override
    public void close() {
        if (response == null) {
            closedEarly = true;
        }
        session.close();
    }
}
