package io.github.bigmodel.pipeline.internal;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.Tensors;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.LongPointer;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * The pipeline's messages. Every message starts with a header of {@value #HEADER_LONGS} int64 values; what follows
 * depends on its operation:
 *
 * <pre>
 * FORWARD  header, positions (int64 [B,L] or [B,2,L]), mask (uint8 [B,1,L,past+L], when present), hidden [L,B,H]
 * RESULT   header, payload (the hidden state or the logits, dtype and shape in the header; the header's position
 *          rows slot is 1 for logits, 0 for a hidden state)
 * ERROR    header, message (uint8, UTF-8)
 * FREE, PING, SHUTDOWN   header only
 * </pre>
 *
 * Messages go round a ring: rank 0 sends to 1, rank r to r+1, the last rank back to 0.
 */
public final class Wire {

    public static final int HEADER_LONGS = 16;
    /** First value of every header: the protocol's magic and version; a peer speaking another is refused. */
    public static final long MAGIC = 0x42474D5050000001L;

    public static final int FORWARD = 1;
    public static final int RESULT = 2;
    public static final int ERROR = 3;
    public static final int FREE = 4;
    public static final int PING = 5;
    public static final int SHUTDOWN = 6;

    // Header slots.
    static final int MAGIC_SLOT = 0;
    static final int OP = 1;
    static final int SESSION = 2;
    static final int BATCH = 3;
    static final int LENGTH = 4;
    static final int PAST = 5;
    static final int CAPACITY = 6;
    static final int LAST_ONLY = 7;
    static final int FROM_LAYER = 8;
    static final int POSITION_ROWS = 9;
    static final int HAS_MASK = 10;
    static final int DTYPE = 11;
    static final int D0 = 12;
    static final int D1 = 13;
    static final int D2 = 14;
    static final int MESSAGE_BYTES = 15;

    private Wire() {
    }

    /** A decoded header. */
    public record Header(int op, long session, int batch, int length, long past, long capacity,
            boolean lastLogitOnly, int fromLayer, int positionRows, boolean hasMask, int dtype, long[] shape,
            int messageBytes) {

        /** Whether a RESULT carries logits (else the hidden state after the last block). */
        public boolean carriesLogits() {
            return op == RESULT && positionRows == 1;
        }

        public static Header control(int op, long session) {
            return new Header(op, session, 0, 0, 0, 0, false, 0, 0, false, 0, new long[3], 0);
        }

        long[] encode() {
            long[] h = new long[HEADER_LONGS];
            h[MAGIC_SLOT] = MAGIC;
            h[OP] = op;
            h[SESSION] = session;
            h[BATCH] = batch;
            h[LENGTH] = length;
            h[PAST] = past;
            h[CAPACITY] = capacity;
            h[LAST_ONLY] = lastLogitOnly ? 1 : 0;
            h[FROM_LAYER] = fromLayer;
            h[POSITION_ROWS] = positionRows;
            h[HAS_MASK] = hasMask ? 1 : 0;
            h[DTYPE] = dtype;
            h[D0] = shape[0];
            h[D1] = shape[1];
            h[D2] = shape[2];
            h[MESSAGE_BYTES] = messageBytes;
            return h;
        }

        static Header decode(long[] h) {
            if (h[MAGIC_SLOT] != MAGIC) {
                throw new IllegalStateException("Not a bigmodel-pipeline message of this protocol version (magic "
                        + Long.toHexString(h[MAGIC_SLOT]) + ", expected " + Long.toHexString(MAGIC) + ")");
            }
            return new Header((int) h[OP], h[SESSION], (int) h[BATCH], (int) h[LENGTH], h[PAST], h[CAPACITY],
                    h[LAST_ONLY] != 0, (int) h[FROM_LAYER], (int) h[POSITION_ROWS], h[HAS_MASK] != 0, (int) h[DTYPE],
                    new long[] {h[D0], h[D1], h[D2]}, (int) h[MESSAGE_BYTES]);
        }
    }

    public static void sendHeader(GlooGroup g, Header h, int dst, Duration timeout) {
        try (Tensor t = longs(h.encode())) {
            g.send(t, dst, timeout);
        }
    }

    public static Header recvHeader(GlooGroup g, int src, Duration timeout) {
        try (Tensor t = Tensors.empty(DType.INT64, Device.CPU, HEADER_LONGS)) {
            g.recv(t, src, timeout);
            long[] out = new long[HEADER_LONGS];
            new LongPointer(t.data_ptr_long()).capacity(HEADER_LONGS).get(out);
            return Header.decode(out);
        }
    }

    /** Sends a tensor as a contiguous CPU copy (a GPU stage's tensors cross through host memory). */
    public static void sendTensor(GlooGroup g, Tensor t, int dst, Duration timeout) {
        Tensor cpu = Tensors.deviceOf(t).isCuda() ? t.to(Tensors.toTorch(Device.CPU), t.scalar_type()) : t;
        Tensor c = cpu.contiguous();
        g.send(c, dst, timeout);
    }

    /** Receives a CPU tensor of this dtype and shape. */
    public static Tensor recvTensor(GlooGroup g, ScalarType type, long[] shape, int src, Duration timeout) {
        Tensor t = Tensors.empty(DType.of(type), Device.CPU, shape);
        g.recv(t, src, timeout);
        return t;
    }

    public static void sendMessage(GlooGroup g, String message, int dst, Duration timeout) {
        byte[] bytes = message.getBytes(StandardCharsets.UTF_8);
        sendHeader(g, new Header(ERROR, 0, 0, 0, 0, 0, false, 0, 0, false, 0, new long[3], bytes.length), dst,
                timeout);
        if (bytes.length > 0) {
            try (Tensor t = Tensors.empty(DType.UINT8, Device.CPU, bytes.length)) {
                new BytePointer(t.data_ptr_byte()).capacity(bytes.length).put(bytes);
                g.send(t, dst, timeout);
            }
        }
    }

    /** The message of an ERROR header, received after it. */
    public static String recvMessage(GlooGroup g, Header h, int src, Duration timeout) {
        if (h.messageBytes() == 0) {
            return "";
        }
        try (Tensor t = Tensors.empty(DType.UINT8, Device.CPU, h.messageBytes())) {
            g.recv(t, src, timeout);
            byte[] bytes = new byte[h.messageBytes()];
            new BytePointer(t.data_ptr_byte()).capacity(bytes.length).get(bytes);
            return new String(bytes, StandardCharsets.UTF_8);
        }
    }

    private static Tensor longs(long[] values) {
        Tensor t = Tensors.empty(DType.INT64, Device.CPU, values.length);
        new LongPointer(t.data_ptr_long()).capacity(values.length).put(values);
        return t;
    }
}
