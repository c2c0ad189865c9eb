package io.github.bigmodel.core.quant;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.NativeRuntime;
import io.github.bigmodel.core.Tensors;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ForkJoinPool;
import java.util.concurrent.RecursiveAction;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.pytorch.Tensor;

/**
 * THUDM's per-row quantization of a CPU weight, computed in one read of the weight's bytes straight into the codes
 * and scales: no float32 copy of the weight, no temporaries, so quantizing while loading needs only the quantized
 * result's memory, and rows are split over {@link NativeRuntime#threads()} threads.
 *
 * <p>The arithmetic is {@link WeightQuantizer#quantize}'s, step for step in float32: each value is first rounded to
 * the weight's dtype {@code own} (what {@code weight.to(own)} does to a checkpoint stored in another dtype), the row
 * scale is {@code max|w| / max} rounded to {@code own}, each quotient {@code w / scale} is rounded to {@code own}
 * and then half to even, and saturated to the code range; an all-zero row divides by 1. The codes and scales are
 * the libtorch road's bit for bit (WeightQuantizerTest compares them).
 *
 * <pre>{@code
 * try (PointerScope scope = new PointerScope()) {   // owns what quantize makes
 *     QuantizedWeight q = RowQuantizer.quantize(mappedBf16Weight, DType.BFLOAT16, Precision.INT8);
 * }
 * }</pre>
 */
final class RowQuantizer {

    /** Rows per task: enough work to amortize a task (a few hundred KB of weights), small enough to balance. */
    private static final long ROWS_PER_TASK = 16;

    private RowQuantizer() {
    }

    /** Whether {@link #quantize} takes this tensor: a CPU tensor of a float dtype it reads. */
    static boolean accepts(Tensor weight) {
        if (!Tensors.deviceOf(weight).isCpu()) {
            return false;
        }
        // By DType: the enum constants libtorch hands back are not always the same objects as ScalarType's.
        DType t = DType.of(weight.scalar_type());
        return t == DType.FLOAT32 || t == DType.BFLOAT16 || t == DType.FLOAT16;
    }

    /**
     * The codes and scales of a 2-d CPU weight {@code [out, in]} as if it were converted to {@code own} first;
     * scales in {@code own}. The caller has checked the shape, and the evenness of {@code in} for int4.
     */
    static QuantizedWeight quantize(Tensor weight, DType own, Precision precision) {
        long[] shape = Tensors.shape(weight);
        long rows = shape[0];
        long cols = shape[1];
        // Runs inside the caller's pointer scope, which owns the tensors made here (also on failure).
        Tensor src = weight.is_contiguous() ? weight : weight.contiguous();
        long storedCols = precision == Precision.INT4 ? cols / 2 : cols;
        // The codes are what decode streams: in 2 MiB pages, as a converted folder's mapped codes are.
        Tensor packed = Tensors.emptyWeight(DType.INT8, Device.CPU, rows, storedCols);
        Tensor scale = Tensors.empty(own, Device.CPU, rows);
        Job job = new Job(src, packed, scale, DType.of(src.scalar_type()), own, precision, cols);
        forRows(rows, job::rows);
        return new QuantizedWeight(packed, scale, precision, cols);
    }

    /**
     * The codes of THUDM-packed int4 bytes {@code [out, in/2]} as int32 {@code [out, in]} stored unsigned
     * ({@code code + 8}, in {@code [0, 15]}): what libtorch's CPU int4 packing operator reads, in one pass on the
     * intra-op threads instead of a chain of whole-tensor integer ops. Runs inside the caller's pointer scope.
     */
    static Tensor unsignedInt4(Tensor packed) {
        long[] shape = Tensors.shape(packed);
        long rows = shape[0];
        long half = shape[1];
        Tensor src = packed.is_contiguous() ? packed : packed.contiguous();
        Tensor out = Tensors.empty(DType.INT32, Device.CPU, rows, half * 2);
        BytePointer in = new BytePointer(src.data_ptr());
        BytePointer to = new BytePointer(out.data_ptr());
        RowRange unpack = (r0, r1) -> {
            int n = Math.toIntExact(half);
            byte[] bytes = new byte[n];
            int[] codes = new int[2 * n];
            for (long r = r0; r < r1; r++) {
                Job.buffer(in, r * half, half).get(bytes);
                for (int j = 0; j < n; j++) {
                    int b = bytes[j];
                    // high nibble first; flipping the sign bit of a 4-bit two's complement value adds 8
                    codes[2 * j] = ((b >>> 4) & 0xf) ^ 8;
                    codes[2 * j + 1] = (b & 0xf) ^ 8;
                }
                Job.buffer(to, r * half * 8, half * 8).asIntBuffer().put(codes);
            }
        };
        forRows(rows, unpack);
        return out;
    }

    /** Work on a range of rows {@code [r0, r1)}. */
    @FunctionalInterface
    private interface RowRange {
        void rows(long r0, long r1);
    }

    /** Runs {@code work} over {@code rows} rows in tasks of {@link #ROWS_PER_TASK} on the intra-op threads. */
    private static void forRows(long rows, RowRange work) {
        int threads = Math.max(1, NativeRuntime.threads());
        long tasks = (rows + ROWS_PER_TASK - 1) / ROWS_PER_TASK;
        if (threads == 1 || tasks == 1) {
            work.rows(0, rows);
            return;
        }
        try {
            pool(threads).submit(new Rows(work, rows, 0, tasks)).get();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("Interrupted while converting a weight", e);
        } catch (ExecutionException e) {
            throw e.getCause() instanceof RuntimeException ? (RuntimeException) e.getCause()
                    : new IllegalStateException("Converting a weight failed", e.getCause());
        }
    }

    private static ForkJoinPool pool;

    /** One pool of {@code threads} daemon workers, replaced when the thread count changes. */
    private static synchronized ForkJoinPool pool(int threads) {
        if (pool == null || pool.getParallelism() != threads) {
            ForkJoinPool old = pool;
            pool = new ForkJoinPool(threads, p -> {
                var t = ForkJoinPool.defaultForkJoinWorkerThreadFactory.newThread(p);
                t.setDaemon(true);
                t.setName("bigmodel-quantize-" + t.getPoolIndex());
                return t;
            }, null, false);
            if (old != null) {
                old.shutdown();
            }
        }
        return pool;
    }

    /** Splits task indexes {@code [from, to)} in halves down to one task of {@link #ROWS_PER_TASK} rows. */
    private static final class Rows extends RecursiveAction {
        private static final long serialVersionUID = 1L;
        private final transient RowRange work;
        private final long rowCount;
        private final long from;
        private final long to;

        Rows(RowRange work, long rowCount, long from, long to) {
            this.work = work;
            this.rowCount = rowCount;
            this.from = from;
            this.to = to;
        }

        @Override
        protected void compute() {
            if (to - from == 1) {
                long r0 = from * ROWS_PER_TASK;
                work.rows(r0, Math.min(rowCount, r0 + ROWS_PER_TASK));
                return;
            }
            long mid = (from + to) >>> 1;
            invokeAll(new Rows(work, rowCount, from, mid), new Rows(work, rowCount, mid, to));
        }
    }

    /** The addresses and types of one weight being quantized; {@link #rows} fills a range of rows. */
    private static final class Job {
        private final BytePointer srcBase;
        private final BytePointer packedBase;
        private final BytePointer scaleBase;
        private final int srcBytes;
        private final DType stored;
        private final DType own;
        private final Precision precision;
        private final long cols;
        private final float max;

        Job(Tensor src, Tensor packed, Tensor scale, DType stored, DType own, Precision precision, long cols) {
            this.srcBase = new BytePointer(src.data_ptr());
            this.packedBase = new BytePointer(packed.data_ptr());
            this.scaleBase = new BytePointer(scale.data_ptr());
            this.srcBytes = stored.bits() / 8;
            this.stored = stored;
            this.own = own;
            this.precision = precision;
            this.cols = cols;
            this.max = precision.maxQuantized();
        }

        /** {@code bytes} bytes at {@code offset} from {@code base}, in native order (a view, no copy). */
        static ByteBuffer buffer(BytePointer base, long offset, long bytes) {
            // A new pointer per call: position and limit are per object, and several threads read one base. The
            // buffer JavaCPP makes starts at the base with its position at the offset: slice() starts it there.
            return new BytePointer(base).position(offset).limit(offset + bytes).asByteBuffer().slice()
                    .order(ByteOrder.nativeOrder());
        }

        /** Quantizes rows {@code [r0, r1)}. */
        void rows(long r0, long r1) {
            int n = Math.toIntExact(cols);
            float[] w = new float[n];
            byte[] codes = new byte[precision == Precision.INT4 ? n / 2 : n];
            int ownBytes = own.bits() / 8;
            ByteBuffer scales = buffer(scaleBase, r0 * ownBytes, (r1 - r0) * ownBytes);
            for (long r = r0; r < r1; r++) {
                ByteBuffer in = buffer(srcBase, r * cols * srcBytes, cols * srcBytes);
                read(in, w);
                float amax = 0f;
                for (int i = 0; i < n; i++) {
                    amax = Math.max(amax, Math.abs(w[i]));
                }
                float s = round(amax / max);
                int at = (int) (r - r0) * ownBytes;
                if (own == DType.FLOAT32) {
                    scales.putFloat(at, s);
                } else {
                    scales.putShort(at, own == DType.BFLOAT16 ? HalfFloats.toBFloat16(s) : HalfFloats.toHalf(s));
                }
                float divisor = s == 0f ? 1f : s;
                if (precision == Precision.INT4) {
                    for (int i = 0; i < n; i += 2) {
                        int hi = code(w[i], divisor);
                        int lo = code(w[i + 1], divisor);
                        codes[i >> 1] = (byte) ((hi << 4) | (lo & 0xf));
                    }
                } else {
                    for (int i = 0; i < n; i++) {
                        codes[i] = (byte) code(w[i], divisor);
                    }
                }
                buffer(packedBase, r * codes.length, codes.length).put(codes);
            }
        }

        /** One row's values as float32, each rounded to {@link #own}. */
        private void read(ByteBuffer in, float[] w) {
            int n = w.length;
            if (stored == DType.BFLOAT16) {
                for (int i = 0; i < n; i++) {
                    w[i] = HalfFloats.bfloat16ToFloat(in.getShort(i << 1));
                }
            } else if (stored == DType.FLOAT16) {
                for (int i = 0; i < n; i++) {
                    w[i] = HalfFloats.halfToFloat(in.getShort(i << 1));
                }
            } else {
                for (int i = 0; i < n; i++) {
                    w[i] = in.getFloat(i << 2);
                }
            }
            if (own != stored) {
                for (int i = 0; i < n; i++) {
                    w[i] = round(w[i]);
                }
            }
        }

        /** {@code v} rounded to {@link #own} (nearest, ties to even), as a float. */
        private float round(float v) {
            if (own == DType.BFLOAT16) {
                return HalfFloats.bfloat16ToFloat(HalfFloats.toBFloat16(v));
            }
            if (own == DType.FLOAT16) {
                return HalfFloats.halfToFloat(HalfFloats.toHalf(v));
            }
            return v;
        }

        /** The saturated code of {@code v / divisor}: the quotient rounded to {@link #own}, then half to even. */
        private int code(float v, float divisor) {
            float q = (float) Math.rint(round(v / divisor));
            return (int) Math.max(-max - 1f, Math.min(max, q));
        }
    }
}
