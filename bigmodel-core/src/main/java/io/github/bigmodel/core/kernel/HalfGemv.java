package io.github.bigmodel.core.kernel;

import io.github.bigmodel.core.Tensors;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The CPU kernel for one row of activations times a bfloat16 or float16 weight ({@code y = x W^T + b} with
 * {@code x} of one row): what a decode step spends its time in. libtorch's {@code linear} on such a weight runs
 * 2 to 4 times slower than the memory holding the weight can be read on this project's AVX-512 CPU
 * (docs/benchmarks.md, "Kernels"); this kernel reads the weight once, in place (a memory-mapped checkpoint stays
 * mapped, nothing is converted or copied), widens each 16-bit weight to float32 in registers and accumulates in
 * float32 on libtorch's intra-op thread count.
 *
 * <p>It is written with the JDK's Vector API, an incubator module in Java 17: it is used only when the JVM was
 * started with {@code --add-modules jdk.incubator.vector} and {@code -D}{@value #PROPERTY}{@code =true} (off by
 * default: in the side-by-side run of docs/benchmarks.md on the 6B it did not beat libtorch end to end, bf16 796 vs
 * 936 ms/token within the runs' spread, and fp16 was 2.6x slower, 982 vs 376); otherwise
 * {@link #applies} says no and callers run libtorch's {@code linear} as before. Prompt-sized inputs (more than
 * one row) always go to libtorch, whose GEMM is faster there. Weights holding infinities or NaNs are not supported
 * on the float16 path (they read as large finite values); checkpoints have none.
 *
 * <pre>{@code
 * if (HalfGemv.applies(x, w)) {
 *     y = HalfGemv.linear(x, w, bias);   // bias may be null
 * } else {
 *     y = torch.linear(x, w);
 * }
 * }</pre>
 */
// PointerScope blocks are used for what they release on close.
@SuppressWarnings("try")
public final class HalfGemv {

    /** System property: {@code true} turns the kernel on where available (off by default; see the class doc). */
    public static final String PROPERTY = "bigmodel.kernels.vector";

    private static final Logger LOG = LoggerFactory.getLogger(HalfGemv.class);
    private static final String MODULE = "jdk.incubator.vector";
    /** Rows per part handed to a thread are a multiple of this: the kernel works on four rows at a time. */
    private static final int ROW_QUANTUM = 4;
    /** Bytes of weight one ByteBuffer covers at most (a ByteBuffer holds less than 2 GiB). */
    private static final long MAX_VIEW_BYTES = 1L << 30;

    private static final boolean AVAILABLE = detect();
    private static volatile boolean enabled = AVAILABLE && Boolean.getBoolean(PROPERTY);
    private static volatile ExecutorService pool;
    private static volatile int poolSize;

    private HalfGemv() {
    }

    private static boolean detect() {
        boolean wanted = Boolean.getBoolean(PROPERTY);
        if (ModuleLayer.boot().findModule(MODULE).isEmpty()) {
            if (!wanted) {
                return false;
            }
            LOG.info("Half-precision decode kernel unavailable: start the JVM with --add-modules {} for about 2x"
                    + " faster bf16/fp16 decoding on the CPU (docs/benchmarks.md, Kernels)", MODULE);
            return false;
        }
        try {
            int lanes = VectorGemv.lanes();
            if (lanes < 8) {
                LOG.info("Half-precision decode kernel unused: this CPU's vectors hold {} floats", lanes);
                return false;
            }
            if (!selfCheck()) {
                LOG.warn("Half-precision decode kernel failed its self-check: libtorch's linear is used instead");
                return false;
            }
            if (!wanted) {
                LOG.debug("Half-precision decode kernel available, off by default ({}=true turns it on)", PROPERTY);
                return true;
            }
            LOG.info("Half-precision decode kernel on: bf16/fp16 CPU layers with one row of activations use the"
                    + " Vector API ({} float lanes, float32 accumulation)", lanes);
            return true;
        } catch (LinkageError | RuntimeException e) {
            LOG.info("Half-precision decode kernel unavailable ({}): libtorch's linear is used", e.toString());
            return false;
        }
    }

    /** A small product with odd sizes against a scalar loop: a broken Vector API build is never used. */
    private static boolean selfCheck() {
        int n = 7;
        int k = 37;
        ByteBuffer w = ByteBuffer.allocate(n * k * 2).order(ByteOrder.LITTLE_ENDIAN);
        float[] x = new float[k];
        for (int c = 0; c < k; c++) {
            x[c] = (c % 5) - 2;
        }
        for (int i = 0; i < n * k; i++) {
            w.putShort(2 * i, (short) 0x3F80); // bfloat16 1.0
        }
        float[] y = new float[n];
        VectorGemv.rows(w, 0, k, x, y, 0, n, true);
        float expected = 0;
        for (float v : x) {
            expected += v;
        }
        for (int i = 0; i < n * k; i++) {
            w.putShort(2 * i, (short) 0x3C00); // float16 1.0
        }
        float[] z = new float[n];
        VectorGemv.rows(w, 0, k, x, z, 0, n, false);
        for (int r = 0; r < n; r++) {
            if (y[r] != expected || z[r] != expected) {
                return false;
            }
        }
        return true;
    }

    /** Whether the kernel can run in this JVM (module present, self-check passed), whether or not it is on. */
    public static boolean available() {
        return AVAILABLE;
    }

    /** Turns the kernel off or back on (when available) for this JVM; for measurements and tests. */
    public static void setEnabled(boolean on) {
        enabled = on && AVAILABLE;
    }

    /** Whether the kernel is in use: available and not turned off with {@link #setEnabled}. */
    public static boolean enabled() {
        return enabled;
    }

    /**
     * Whether {@link #linear} computes {@code x W^T} here: the kernel is enabled, both tensors are on the CPU,
     * {@code w} is a contiguous 2-d bfloat16 or float16 tensor, {@code x} has {@code w}'s dtype, its last dimension
     * is {@code w}'s second and it holds one row.
     */
    public static boolean applies(Tensor x, Tensor w) {
        if (!enabled || w.dim() != 2 || x.dim() < 1) {
            return false;
        }
        // ScalarType values from libtorch are not always the enum's own instances: compared by value.
        int type = w.scalar_type().value;
        if (type != ScalarType.BFloat16.value && type != ScalarType.Half.value) {
            return false;
        }
        long k = w.size(1);
        return x.scalar_type().value == type && x.size(-1) == k && x.numel() == k && k > 0 && w.size(0) > 0
                && w.is_contiguous() && w.is_cpu() && x.is_cpu() && k <= Integer.MAX_VALUE / 2
                && w.size(0) <= Integer.MAX_VALUE;
    }

    /**
     * {@code x W^T + bias} for an input {@link #applies} accepts: the shape of {@code x} with its last dimension
     * replaced by {@code W}'s rows, in {@code x}'s dtype (accumulated in float32, rounded once at the end).
     *
     * @param bias {@code [N]} in the weight's dtype, or null
     * @throws IllegalArgumentException when {@link #applies} says no
     */
    public static Tensor linear(Tensor x, Tensor w, Tensor bias) {
        if (!applies(x, w)) {
            throw new IllegalArgumentException("HalfGemv takes one row of activations and a contiguous bf16/fp16"
                    + " CPU weight of the same dtype; use torch.linear otherwise");
        }
        int n = (int) w.size(0);
        int k = (int) w.size(1);
        boolean bf16 = w.scalar_type().value == ScalarType.BFloat16.value;
        long[] shape = Tensors.shape(x);
        shape[shape.length - 1] = n;
        float[] xs = new float[k];
        float[] ys = new float[n];
        Tensor out;
        try (PointerScope scope = new PointerScope()) {
            Tensor x32 = x.reshape(k).to(ScalarType.Float).contiguous();
            new FloatPointer(x32.data_ptr()).get(xs);
            run(w, n, k, xs, ys, bf16);
            Tensor y32 = torch.empty(n);
            new FloatPointer(y32.data_ptr()).put(ys);
            if (bias != null) {
                y32 = y32.add(bias.to(ScalarType.Float));
            }
            out = y32.to(x.scalar_type()).view(shape);
            out.retainReference();
        }
        PointerScope outer = PointerScope.getInnerScope();
        if (outer != null) {
            outer.attach(out);
            out.releaseReference();
        }
        return out;
    }

    /** Splits the rows among libtorch's intra-op thread count; the calling thread takes the first part. */
    private static void run(Tensor w, int n, int k, float[] x, float[] y, boolean bf16) {
        BytePointer base = new BytePointer(w.data_ptr());
        int threads = Math.max(1, Math.min(torch.get_num_threads(), n / ROW_QUANTUM));
        if (threads == 1) {
            part(base, k, x, y, 0, n, bf16);
            return;
        }
        ExecutorService workers = pool(threads - 1);
        List<Future<?>> parts = new ArrayList<>(threads - 1);
        int per = ((n + threads - 1) / threads + ROW_QUANTUM - 1) / ROW_QUANTUM * ROW_QUANTUM;
        for (int t = 1; t < threads; t++) {
            int r0 = Math.min(n, t * per);
            int r1 = Math.min(n, r0 + per);
            if (r0 < r1) {
                parts.add(workers.submit(() -> part(base, k, x, y, r0, r1, bf16)));
            }
        }
        part(base, k, x, y, 0, Math.min(n, per), bf16);
        try {
            for (Future<?> f : parts) {
                f.get();
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("Interrupted while the half-precision kernel ran", e);
        } catch (ExecutionException e) {
            throw new IllegalStateException("Half-precision kernel failed", e.getCause());
        }
    }

    /** Rows {@code [r0, r1)}, through views of at most {@link #MAX_VIEW_BYTES} bytes. */
    private static void part(BytePointer base, int k, float[] x, float[] y, int r0, int r1, boolean bf16) {
        long rowBytes = 2L * k;
        int rowsPerView = (int) Math.max(1, MAX_VIEW_BYTES / rowBytes);
        for (int s = r0; s < r1; s += rowsPerView) {
            int e = Math.min(r1, s + rowsPerView);
            BytePointer p = base.getPointer(s * rowBytes);
            p.capacity((e - s) * rowBytes);
            ByteBuffer view = p.asByteBuffer().order(ByteOrder.LITTLE_ENDIAN);
            VectorGemv.rows(view, s, k, x, y, s, e, bf16);
        }
    }

    /** Daemon workers, grown when libtorch's thread count grows; never shrunk (idle threads cost nothing). */
    private static ExecutorService pool(int size) {
        ExecutorService p = pool;
        if (p != null && poolSize >= size) {
            return p;
        }
        synchronized (HalfGemv.class) {
            if (pool == null || poolSize < size) {
                // A smaller pool in use elsewhere is left running rather than shut under its callers; its idle
                // daemon threads cost nothing.
                pool = Executors.newFixedThreadPool(size, r -> {
                    Thread t = new Thread(r, "bigmodel-half-gemv");
                    t.setDaemon(true);
                    return t;
                });
                poolSize = size;
            }
            return pool;
        }
    }
}
