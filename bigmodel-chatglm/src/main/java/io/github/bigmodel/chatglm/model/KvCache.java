package io.github.bigmodel.chatglm.model;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.Tensors;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;

/**
 * The keys and values one generation session has computed, per layer, preallocated for {@link #capacity()}
 * positions so that every step writes its new positions in place (no re-concatenation of the whole cache).
 *
 * <p>Layout per layer, as the official code keeps it: {@code [seq, batch, kvHeads, headDim]}, keys stored after
 * rotary. Each layer's buffers live on the device of that layer's weights; a layer another pipeline stage holds has
 * no buffers here (that stage keeps them for the session named by {@link #id()}, and frees them when this cache is
 * closed). A model's forward pass writes
 * positions {@code [length, length + L)} of every layer, then advances {@link #length()} by {@code L}.
 *
 * <pre>{@code
 * try (KvCache cache = model.newCache(1, promptLength + maxNewTokens)) {
 *     model.forward(ForwardInput.builder(prompt).cache(cache).build());   // fills 0..P-1
 *     cache.length();                                                        // P
 * }
 * }</pre>
 *
 * <p>Ownership: a cache belongs to the session (or caller) that asked the model for it, not to the model: closing
 * the model leaves it allocated, and only its owner closes it, never while a forward pass writes it
 * ({@code Generator.Session.close()} waits for its running step). After close, every access fails with
 * {@link IllegalStateException} ("KvCache is closed").
 *
 * <p>Not thread-safe: one session, one thread at a time. The bookkeeping read by memory reports ({@link #id()},
 * {@link #length()}, {@link #capacity()}, {@link #allocatedBytes()}, {@link #allocatedBytesByDevice()},
 * {@link #isClosed()}) is safe to read from any thread: it is kept on the Java side and touches no tensor.
 */
// PointerScope blocks are used for what they release on close, not referenced by name.
@SuppressWarnings("try")
public final class KvCache implements AutoCloseable {

    private static final AtomicLong NEXT_ID = new AtomicLong(1);

    private final long id = NEXT_ID.getAndIncrement();
    private final Tensor[] keys;
    private final Tensor[] values;
    private final long batch;
    private final long capacity;
    /** Bytes of keys plus values per device, counted from the tensors once allocated. */
    private final Map<Device, Long> bytesByDevice;
    private final Device[] layerDevices;
    private volatile long length;
    private volatile boolean closed;
    /** Run once on close: frees what other pipeline stages keep for this session. */
    private Runnable onClose;

    /**
     * Allocates the buffers; {@code layerDevices[i]} is where layer {@code i} runs, null for a layer held by another
     * pipeline stage (no buffers here).
     *
     * @throws IllegalArgumentException for a non-positive size
     */
    public KvCache(Device[] layerDevices, long batch, long capacity, long kvHeads, long headDim, DType dtype) {
        if (batch <= 0 || capacity <= 0 || kvHeads <= 0 || headDim <= 0) {
            throw new IllegalArgumentException("KvCache sizes must be > 0: batch=" + batch + ", capacity=" + capacity
                    + ", kvHeads=" + kvHeads + ", headDim=" + headDim);
        }
        this.batch = batch;
        this.capacity = capacity;
        this.keys = new Tensor[layerDevices.length];
        this.values = new Tensor[layerDevices.length];
        // The buffers outlive any scope the caller has open (a pipeline stage makes caches inside a step).
        try (PointerScope scope = new PointerScope()) {
            for (int i = 0; i < layerDevices.length; i++) {
                if (layerDevices[i] != null) {
                    keys[i] = Tensors.empty(dtype, layerDevices[i], capacity, batch, kvHeads, headDim);
                    values[i] = Tensors.empty(dtype, layerDevices[i], capacity, batch, kvHeads, headDim);
                    keys[i].retainReference();
                    values[i].retainReference();
                }
            }
        }
        Map<Device, Long> bytes = new LinkedHashMap<>();
        for (int i = 0; i < layerDevices.length; i++) {
            if (layerDevices[i] != null) {
                bytes.merge(layerDevices[i], keys[i].nbytes() + values[i].nbytes(), Long::sum);
            }
        }
        this.bytesByDevice = Collections.unmodifiableMap(bytes);
        this.layerDevices = layerDevices.clone();
    }

    /** Where each layer's buffers are, in layer order. */
    Device[] layerDevices() {
        return layerDevices.clone();
    }

    /** A number unique to this cache in this process, naming its session in memory reports. */
    public long id() {
        return id;
    }

    /** Whether {@link #close()} has released the buffers. */
    public boolean isClosed() {
        return closed;
    }

    /** Positions filled so far. */
    public long length() {
        return length;
    }

    /** Positions the buffers hold at most. */
    public long capacity() {
        return capacity;
    }

    public long batchSize() {
        return batch;
    }

    public int numLayers() {
        return keys.length;
    }

    /**
     * Native bytes the buffers hold (keys and values of every layer at full {@link #capacity()}), whatever
     * {@link #length()} is: the cache is allocated once, up front. 0 once closed.
     */
    public long allocatedBytes() {
        if (closed) {
            return 0;
        }
        long total = 0;
        for (long b : bytesByDevice.values()) {
            total += b;
        }
        return total;
    }

    /** {@link #allocatedBytes()} per device the layers live on (empty once closed). */
    public Map<Device, Long> allocatedBytesByDevice() {
        return closed ? Map.of() : bytesByDevice;
    }

    /**
     * Writes zeros into positions {@code [length, length + n)} of every layer and counts them as filled: a cache
     * that holds {@code n} more positions (every byte written, so its pages are really in memory) without running
     * the model. For memory measurements only (the positions mean nothing to the model); generation never calls it.
     *
     * <pre>{@code
     * cache.fillWithZerosForMeasurement(8191);   // then one real decode step at context 8192
     * }</pre>
     *
     * @throws IllegalStateException when closed or when {@code n} more positions do not fit
     */
    public void fillWithZerosForMeasurement(long n) {
        if (n < 0) {
            throw new IllegalArgumentException("positions must be >= 0, got " + n);
        }
        checkRoom(batch, n);
        for (int i = 0; i < keys.length; i++) {
            if (layerDevices[i] == null) {
                continue;
            }
            try (Tensor k = keys[i].narrow(0, length, n); Tensor v = values[i].narrow(0, length, n)) {
                k.zero_();
                v.zero_();
            }
        }
        length += n;
    }

    /** A view of layer {@code layer}'s keys for the filled positions, {@code [length, batch, kvHeads, headDim]}. */
    public Tensor keys(int layer) {
        return live(keys, layer).narrow(0, 0, length);
    }

    /** A view of layer {@code layer}'s values for the filled positions. */
    public Tensor values(int layer) {
        return live(values, layer).narrow(0, 0, length);
    }

    private Tensor live(Tensor[] buffers, int layer) {
        if (!closed && layerDevices[layer] == null) {
            throw new IllegalStateException("Layer " + layer + " is held by another pipeline stage: its keys and "
                    + "values are kept there");
        }
        Tensor t = closed ? null : buffers[layer];
        if (t == null) {
            throw new IllegalStateException("KvCache is closed");
        }
        return t;
    }

    /**
     * Runs {@code action} once when this cache is closed (after its buffers are released): how a pipeline frees
     * the caches other stages keep for this session. One action per cache.
     *
     * @throws IllegalStateException when an action is already set or the cache is closed
     */
    void onClose(Runnable action) {
        synchronized (this) {
            if (onClose != null || closed) {
                throw new IllegalStateException("KvCache already has a close action or is closed");
            }
            onClose = action;
        }
    }

    /** Forgets every position (the buffers are kept for reuse). */
    public void reset() {
        length = 0;
    }

    /** Checks that {@code newPositions} more fit for a batch of {@code batchSize}. */
    void checkRoom(long batchSize, long newPositions) {
        if (closed) {
            throw new IllegalStateException("KvCache is closed");
        }
        if (batchSize != batch) {
            throw new IllegalArgumentException("KvCache was made for batch " + batch + ", input has batch " + batchSize);
        }
        if (length + newPositions > capacity) {
            throw new IllegalStateException("KvCache full: " + length + " positions cached + " + newPositions
                    + " new > capacity " + capacity + " (make the cache with a larger capacity)");
        }
    }

    /**
     * Writes {@code k}, {@code v} ({@code [L, batch, kvHeads, headDim]}) at positions {@code [length, length+L)}
     * of {@code layer} and returns views of the keys and values of positions {@code [0, length+L)}.
     */
    Tensor[] write(int layer, Tensor k, Tensor v) {
        long n = k.size(0);
        Tensor kb = live(keys, layer);
        Tensor vb = live(values, layer);
        kb.narrow(0, length, n).copy_(k);
        vb.narrow(0, length, n).copy_(v);
        return new Tensor[] {kb.narrow(0, 0, length + n), vb.narrow(0, 0, length + n)};
    }

    /**
     * Layer {@code layer}'s whole key buffer {@code [capacity, batch, kvHeads, headDim]}: for a fused step that writes
     * position {@link #length()} itself (as {@link #write} would) before the cache advances.
     */
    Tensor keyBuffer(int layer) {
        return live(keys, layer);
    }

    /** Layer {@code layer}'s whole value buffer, as {@link #keyBuffer}. */
    Tensor valueBuffer(int layer) {
        return live(values, layer);
    }

    /** Marks {@code n} more positions as filled once every layer has written them. */
    void advance(long n) {
        length += n;
    }

    @Override
    public void close() {
        Runnable action;
        synchronized (this) {
            action = closed ? null : onClose;
            closed = true;
            onClose = null;
        }
        for (int i = 0; i < keys.length; i++) {
            if (keys[i] != null) {
                keys[i].close();
                values[i].close();
                keys[i] = null;
                values[i] = null;
            }
        }
        if (action != null) {
            action.run();
        }
    }
}
