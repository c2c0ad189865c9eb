package io.github.bigmodel.core.quant;

import static org.assertj.core.api.Assertions.assertThat;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.kernel.NativeKernels;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CyclicBarrier;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;

/**
 * The CPU kernel tables of an int8/int4 layer are built lazily by the first forward; sessions sharing an in-memory
 * layer make that first call at the same time. Eight threads race on it, half with float32 and half with bfloat16
 * activations (two tables): each dtype gets exactly one table, and every thread's output equals a single-threaded
 * run. Before the lock, racing threads each built a table (one leaked) and a thread of the other dtype freed the
 * table another thread was reading.
 */
class QuantizedLinearTablesTest {

    private static final int THREADS = 8;
    private static final int ROUNDS = 25;

    @Test
    void racingFirstForwardsShareOneTablePerActivationDtype() throws Exception {
        ExecutorService pool = Executors.newFixedThreadPool(THREADS);
        try (PointerScope scope = new PointerScope()) {
            torch.manual_seed(5);
            long in = 256;
            long out = 64;
            Tensor w = torch.randn(out, in);
            Tensor x = torch.randn(3, in);
            ScalarType[] types = {ScalarType.Float, ScalarType.BFloat16};
            for (Precision p : new Precision[] {Precision.INT8, Precision.INT4}) {
                QuantizedLinear fc = new QuantizedLinear(in, out, false, DType.FLOAT32);
                fc.planPrecision(p, DType.FLOAT32);
                fc.setQuantized(WeightQuantizer.quantize(w, p));
                boolean usesTables = p == Precision.INT8 ? QuantKernels.hasInt8Cpu() : fc.usesCpuTiles(Device.CPU);
                // bigmodel's native kernels take float32 scales whatever the activations: one table
                int tables = NativeKernels.available() ? 1 : usesTables ? types.length : 0;
                float[][] want = new float[types.length][];
                for (int t = 0; t < types.length; t++) {
                    want[t] = floats(fc.forward(x.to(types[t])));
                }
                for (int round = 0; round < ROUNDS; round++) {
                    fc.setQuantized(WeightQuantizer.quantize(w, p)); // drops the tables: the next forward builds
                    assertThat(fc.kernelTableCount()).isZero();
                    CyclicBarrier start = new CyclicBarrier(THREADS);
                    List<Future<float[]>> outs = new ArrayList<>();
                    for (int i = 0; i < THREADS; i++) {
                        ScalarType type = types[i % types.length];
                        outs.add(pool.submit(() -> {
                            start.await(30, TimeUnit.SECONDS);
                            try (PointerScope s = new PointerScope()) {
                                return floats(fc.forward(x.to(type)));
                            }
                        }));
                    }
                    for (int i = 0; i < THREADS; i++) {
                        float[] got = outs.get(i).get(60, TimeUnit.SECONDS);
                        float[] expected = want[i % types.length];
                        double worst = 0;
                        for (int k = 0; k < got.length; k++) {
                            worst = Math.max(worst, Math.abs(got[k] - expected[k]));
                        }
                        assertThat(worst).as("%s round %d thread %d", p, round, i).isLessThanOrEqualTo(1e-5);
                    }
                    assertThat(fc.kernelTableCount()).as("%s round %d: tables", p, round)
                            .isEqualTo(tables);
                }
                fc.toMeta();
                assertThat(fc.kernelTableCount()).isZero();
            }
        } finally {
            pool.shutdownNow();
        }
    }

    /** Runs inside the caller's pointer scope, which frees the copies. */
    private static float[] floats(Tensor t) {
        Tensor c = t.to(ScalarType.Float).contiguous();
        float[] out = new float[(int) c.numel()];
        c.data_ptr_float().get(out);
        return out;
    }
}
