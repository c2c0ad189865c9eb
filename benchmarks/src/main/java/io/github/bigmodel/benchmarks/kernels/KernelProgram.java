package io.github.bigmodel.benchmarks.kernels;

import io.github.bigmodel.core.NativeRuntime;
import io.github.bigmodel.core.kernel.NativeKernels;
import io.github.bigmodel.core.kernel.NativeKernels.Format;
import io.github.bigmodel.core.quant.WeightQuantizer;
import io.github.bigmodel.core.quant.QuantKernels;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptional;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * Times the linear layers of one chatglm3-6b decode step on the CPU with each candidate kernel, against the memory
 * read bandwidth measured in the same run: 28 layers of 4096->4608 (QKV), 4096->4096 (dense), 4096->27392
 * (h-to-4h) and 13696->4096 (4h-to-h), plus the 4096->65024 output layer. The weights are random; {@code --copies}
 * distinct copies of a layer's four weights (two by default, 0.8 GB in 16 bits) are cycled through so that no weight
 * is read from a cache. Candidates run interleaved within each repetition so that a drifting machine load hits them
 * alike; the figures are medians over the repetitions.
 *
 * <p>Candidates, by the weights' precision (int8/int4 steps keep the output layer in bfloat16, THUDM's recipe, and
 * run it with the chosen half-precision kernel):
 * <ul>
 *   <li>{@code torch-linear-bf16}, {@code torch-linear-fp16}: libtorch's {@code linear}, activations in the
 *       weight's dtype (what bigmodel ran before the kernel choice);</li>
 *   <li>{@code native-bf16}, {@code native-fp16}, {@code native-int8}, {@code native-int4}: {@link NativeKernels}
 *       (bigmodel's own kernels, reading THUDM's int8/int4 layouts in place), with the conversions of x and y a
 *       layer does around them;</li>
 *   <li>{@code fbgemm-fp16} ({@code --fbgemm}): libtorch's fbgemm packed-fp16 GEMM with float32 activations, for
 *       comparison only: packing the 6B's weights takes minutes and a second copy of them;</li>
 *   <li>{@code int8-bf16act}, {@code int4-bf16act}: the weight-only kernels of {@link QuantKernels}.</li>
 * </ul>
 * With {@code --rows 16,512} it also times one layer's four linears for prompt-sized inputs (libtorch's GEMM in
 * bf16 and fp16, fp16 through float32, the quantized kernels, and the native kernels).
 *
 * <pre>{@code
 * java --add-modules jdk.incubator.vector -Xmx2g -cp benchmarks/target/benchmarks.jar \
 *     io.github.bigmodel.benchmarks.kernels.KernelProgram --threads 2 --repeats 7
 * }</pre>
 */
// PointerScope blocks are used for what they release on close.
@SuppressWarnings("try")
public final class KernelProgram {

    static final int LAYERS = 28;
    static final long HIDDEN = 4096;
    static final long[][] LAYER_SHAPES = {{4608, 4096}, {4096, 4096}, {27392, 4096}, {4096, 13696}};
    static final long[] OUTPUT_SHAPE = {65024, 4096};

    private KernelProgram() {
    }

    /** One way of computing a step: the linear of weight {@code i} of copy {@code c}, and of the output layer. */
    interface Step {
        void layer(int copy, int i);

        void output();
    }

    public static void main(String[] args) {
        int threads = 2;
        int repeats = 7;
        int copies = 2;
        boolean fbgemm = false;
        boolean quant = true;
        int[] rows = {};
        for (int a = 0; a < args.length; a++) {
            switch (args[a]) {
                case "--threads" -> threads = Integer.parseInt(args[++a]);
                case "--repeats" -> repeats = Integer.parseInt(args[++a]);
                case "--copies" -> copies = Integer.parseInt(args[++a]);
                case "--fbgemm" -> fbgemm = true;
                case "--no-quant" -> quant = false;
                case "--rows" -> rows = Arrays.stream(args[++a].split(",")).mapToInt(Integer::parseInt).toArray();
                default -> {
                    System.err.println("usage: KernelProgram [--threads N] [--repeats N] [--copies N] [--fbgemm]"
                            + " [--no-quant] [--rows 16,512]");
                    System.exit(2);
                }
            }
        }
        NativeRuntime.init();
        NativeRuntime.setThreads(threads);
        System.out.printf(Locale.ROOT, "# threads %d, copies %d, repeats %d, native kernels %s%n", threads, copies,
                repeats, NativeKernels.available() ? "available" : "UNAVAILABLE");
        System.out.printf(Locale.ROOT, "# load average at start: %s%n", loadAverage());
        torch.manual_seed(7);
        checkAccuracy();
        halfPrecision(copies, repeats, fbgemm);
        if (quant) {
            quantized(copies, repeats);
        }
        for (int m : rows) {
            prompt(m, Math.max(3, repeats / 2));
        }
        System.out.printf(Locale.ROOT, "# load average at end: %s%n", loadAverage());
        System.exit(0);
    }

    static long layerParams() {
        long n = 0;
        for (long[] s : LAYER_SHAPES) {
            n += s[0] * s[1];
        }
        return n;
    }

    static double stepParams() {
        return (double) LAYERS * layerParams() + OUTPUT_SHAPE[0] * OUTPUT_SHAPE[1];
    }

    private static Tensor random(long[] shape) {
        return torch.randn(shape).mul(new Scalar(0.02));
    }

    /** Kernel against a float32 reference on odd and real shapes: the largest error relative to the output's scale. */
    static void checkAccuracy() {
        if (!NativeKernels.available()) {
            return;
        }
        try (PointerScope scope = new PointerScope()) {
            for (long[] s : new long[][] {{4608, 4096}, {37, 1001}}) {
                Tensor w = random(s);
                Tensor x = torch.randn(1, s[1]);
                for (ScalarType t : new ScalarType[] {ScalarType.BFloat16, ScalarType.Half}) {
                    Tensor wt = w.to(t);
                    Tensor ref = torch.linear(x.to(t).to(ScalarType.Float), wt.to(ScalarType.Float));
                    Tensor got = nativeLinear(t == ScalarType.Half ? Format.FP16 : Format.BF16, x.to(t), wt, null)
                            .to(ScalarType.Float);
                    double err = got.sub(ref).abs().max().item_double() / ref.abs().max().item_double();
                    System.out.printf(Locale.ROOT, "# accuracy %s %dx%d: max |kernel - fp32 reference| = %.2e of max"
                            + " |y| (%s output rounding)%n", t == ScalarType.Half ? "fp16" : "bf16", s[0], s[1], err,
                            t == ScalarType.Half ? "fp16" : "bf16");
                }
            }
        }
    }

    static void halfPrecision(int copies, int repeats, boolean fbgemm) {
        try (PointerScope scope = new PointerScope()) {
            Tensor[][] wb = new Tensor[copies][4];
            Tensor[][] wh = new Tensor[copies][4];
            Tensor[][] packed = fbgemm ? new Tensor[copies][4] : null;
            Tensor ob;
            Tensor oh;
            Tensor op = null;
            long packStart = System.nanoTime();
            for (int c = 0; c < copies; c++) {
                for (int i = 0; i < 4; i++) {
                    Tensor w = random(LAYER_SHAPES[i]);
                    wb[c][i] = w.to(ScalarType.BFloat16);
                    wh[c][i] = w.to(ScalarType.Half);
                    if (fbgemm) {
                        packed[c][i] = torch.fbgemm_pack_gemm_matrix_fp16(wh[c][i].to(ScalarType.Float));
                    }
                    w.close();
                }
            }
            Tensor w = random(OUTPUT_SHAPE);
            ob = w.to(ScalarType.BFloat16);
            oh = w.to(ScalarType.Half);
            if (fbgemm) {
                op = torch.fbgemm_pack_gemm_matrix_fp16(oh.to(ScalarType.Float));
                System.out.printf(Locale.ROOT, "# fbgemm packing (with the rest of the setup): %.1f s for %.0f M"
                        + " parameters%n", (System.nanoTime() - packStart) / 1e9,
                        (copies * layerParams() + OUTPUT_SHAPE[0] * OUTPUT_SHAPE[1]) / 1e6);
            }
            w.close();
            Tensor[] xb = new Tensor[4];
            Tensor[] xh = new Tensor[4];
            Tensor[] x32 = new Tensor[4];
            for (int i = 0; i < 4; i++) {
                x32[i] = torch.randn(1, 1, LAYER_SHAPES[i][1]);
                xb[i] = x32[i].to(ScalarType.BFloat16);
                xh[i] = x32[i].to(ScalarType.Half);
            }
            Tensor oxb = torch.randn(1, 1, HIDDEN).to(ScalarType.BFloat16);
            Tensor oxh = oxb.to(ScalarType.Half);
            Tensor ox32 = oxb.to(ScalarType.Float);
            Map<String, Step> steps = new LinkedHashMap<>();
            steps.put("torch-linear-bf16", step((c, i) -> torch.linear(xb[i], wb[c][i]), () -> torch.linear(oxb, ob)));
            steps.put("torch-linear-fp16", step((c, i) -> torch.linear(xh[i], wh[c][i]), () -> torch.linear(oxh, oh)));
            if (NativeKernels.available()) {
                steps.put("native-bf16", step((c, i) -> nativeLinear(Format.BF16, xb[i], wb[c][i], null),
                        () -> nativeLinear(Format.BF16, oxb, ob, null)));
                steps.put("native-fp16", step((c, i) -> nativeLinear(Format.FP16, xh[i], wh[c][i], null),
                        () -> nativeLinear(Format.FP16, oxh, oh, null)));
            }
            if (fbgemm) {
                Tensor opk = op;
                steps.put("fbgemm-fp16", step(
                        (c, i) -> torch.fbgemm_linear_fp16_weight_fp32_activation(x32[i], packed[c][i],
                                new TensorOptional()),
                        () -> torch.fbgemm_linear_fp16_weight_fp32_activation(ox32, opk, new TensorOptional())));
            }
            report("16-bit weights, one decode step (batch 1)", steps, copies, repeats, 2.0 * stepParams());
        }
    }

    static void quantized(int copies, int repeats) {
        try (PointerScope scope = new PointerScope()) {
            Tensor[][] w8 = new Tensor[copies][4];
            Tensor[][] s8 = new Tensor[copies][4];
            Tensor[][] tiles = new Tensor[copies][4];
            Tensor[][] sz = new Tensor[copies][4];
            Tensor[][] p4 = new Tensor[copies][4];
            Tensor[][] s32 = new Tensor[copies][4];
            long[] groups = new long[4];
            for (int c = 0; c < copies; c++) {
                for (int i = 0; i < 4; i++) {
                    long[] s = LAYER_SHAPES[i];
                    w8[c][i] = torch.randint(-127, 128, s).to(ScalarType.Char);
                    Tensor scale = torch.rand(s[0]).mul(new Scalar(1e-3)).add(new Scalar(1e-4));
                    s8[c][i] = scale.to(ScalarType.BFloat16);
                    groups[i] = QuantKernels.int4GroupSize(s[1]);
                    Tensor codes4 = torch.randint(-8, 8, s);
                    tiles[c][i] = QuantKernels.int4ToCpuTiles(codes4);
                    p4[c][i] = WeightQuantizer.packInt4(codes4);
                    s32[c][i] = scale.to(ScalarType.Float).contiguous();
                    sz[c][i] = QuantKernels.int4ScalesAndZeros(scale, s[1], groups[i], ScalarType.BFloat16);
                }
            }
            Tensor ob = random(OUTPUT_SHAPE).to(ScalarType.BFloat16);
            Tensor[] xb = new Tensor[4];
            for (int i = 0; i < 4; i++) {
                xb[i] = torch.randn(1, LAYER_SHAPES[i][1]).to(ScalarType.BFloat16);
            }
            Tensor oxb = torch.randn(1, 1, HIDDEN).to(ScalarType.BFloat16);
            Runnable output = () -> torch.linear(oxb, ob);
            Runnable nativeOutput = () -> nativeLinear(Format.BF16, oxb, ob, null);
            Map<String, Step> int8 = new LinkedHashMap<>();
            int8.put("int8-bf16act", step((c, i) -> QuantKernels.int8Mm(xb[i], w8[c][i], s8[c][i]), output::run));
            if (NativeKernels.available()) {
                int8.put("native-int8", step((c, i) -> nativeLinear(Format.INT8, xb[i], w8[c][i], s32[c][i]),
                        nativeOutput::run));
            }
            double outBytes = 2.0 * OUTPUT_SHAPE[0] * OUTPUT_SHAPE[1];
            report("int8 weights (output layer bf16)", int8, copies, repeats, LAYERS * layerParams() + outBytes);
            Map<String, Step> int4 = new LinkedHashMap<>();
            int4.put("int4-bf16act", step((c, i) -> QuantKernels.int4Mm(xb[i], tiles[c][i], groups[i], sz[c][i]),
                    output::run));
            if (NativeKernels.available()) {
                int4.put("native-int4", step((c, i) -> nativeLinear(Format.INT4, xb[i], p4[c][i], s32[c][i]),
                        nativeOutput::run));
            }
            report("int4 weights (output layer bf16)", int4, copies, repeats, LAYERS * layerParams() / 2.0 + outBytes);
            // What a float16 model's quantized layers ran before they switched to bf16 activations: one layer only,
            // the fp16 kernels being an order of magnitude slower.
            Tensor[] xh = new Tensor[4];
            Tensor[] s8h = new Tensor[4];
            Tensor[] szh = new Tensor[4];
            for (int i = 0; i < 4; i++) {
                xh[i] = xb[i].to(ScalarType.Half);
                s8h[i] = s8[0][i].to(ScalarType.Half);
                szh[i] = sz[0][i].to(ScalarType.Half);
            }
            Map<String, Runnable> layer = new LinkedHashMap<>();
            layer.put("int8 bf16 activations", () -> {
                for (int i = 0; i < 4; i++) {
                    QuantKernels.int8Mm(xb[i], w8[0][i], s8[0][i]);
                }
            });
            layer.put("int8 fp16 activations", () -> {
                for (int i = 0; i < 4; i++) {
                    QuantKernels.int8Mm(xh[i], w8[0][i], s8h[i]);
                }
            });
            layer.put("int4 bf16 activations", () -> {
                for (int i = 0; i < 4; i++) {
                    QuantKernels.int4Mm(xb[i], tiles[0][i], groups[i], sz[0][i]);
                }
            });
            layer.put("int4 fp16 activations", () -> {
                for (int i = 0; i < 4; i++) {
                    QuantKernels.int4Mm(xh[i], tiles[0][i], groups[i], szh[i]);
                }
            });
            timeLayer("one layer's four quantized linears, batch 1, by activation dtype", layer, 3);
        }
    }

    static void prompt(int m, int repeats) {
        try (PointerScope scope = new PointerScope()) {
            Tensor[] wb = new Tensor[4];
            Tensor[] wh = new Tensor[4];
            Tensor[] xb = new Tensor[4];
            Tensor[] xh = new Tensor[4];
            for (int i = 0; i < 4; i++) {
                Tensor w = random(LAYER_SHAPES[i]);
                wb[i] = w.to(ScalarType.BFloat16);
                wh[i] = w.to(ScalarType.Half);
                xb[i] = torch.randn(m, 1, LAYER_SHAPES[i][1]).to(ScalarType.BFloat16);
                xh[i] = xb[i].to(ScalarType.Half);
            }
            Map<String, Runnable> c = new LinkedHashMap<>();
            c.put("torch-linear-bf16", () -> {
                for (int i = 0; i < 4; i++) {
                    torch.linear(xb[i], wb[i]);
                }
            });
            c.put("torch-linear-fp16", () -> {
                for (int i = 0; i < 4; i++) {
                    torch.linear(xh[i], wh[i]);
                }
            });
            c.put("torch-linear-fp16 via fp32", () -> {
                for (int i = 0; i < 4; i++) {
                    torch.linear(xh[i].to(ScalarType.Float), wh[i].to(ScalarType.Float)).to(ScalarType.Half);
                }
            });
            Tensor[] w8 = new Tensor[4];
            Tensor[] s8 = new Tensor[4];
            Tensor[] s32 = new Tensor[4];
            Tensor[] p4 = new Tensor[4];
            Tensor[] tiles = new Tensor[4];
            Tensor[] sz = new Tensor[4];
            long[] groups = new long[4];
            for (int i = 0; i < 4; i++) {
                long[] s = LAYER_SHAPES[i];
                w8[i] = torch.randint(-127, 128, s).to(ScalarType.Char);
                Tensor scale = torch.rand(s[0]).mul(new Scalar(1e-3)).add(new Scalar(1e-4));
                s8[i] = scale.to(ScalarType.BFloat16);
                s32[i] = scale.to(ScalarType.Float).contiguous();
                Tensor codes4 = torch.randint(-8, 8, s);
                groups[i] = QuantKernels.int4GroupSize(s[1]);
                tiles[i] = QuantKernels.int4ToCpuTiles(codes4);
                p4[i] = WeightQuantizer.packInt4(codes4);
                sz[i] = QuantKernels.int4ScalesAndZeros(scale, s[1], groups[i], ScalarType.BFloat16);
            }
            c.put("torch int8 (bf16 act)", () -> {
                for (int i = 0; i < 4; i++) {
                    QuantKernels.int8Mm(xb[i].reshape(m, -1), w8[i], s8[i]);
                }
            });
            c.put("torch int4 tiles (bf16 act)", () -> {
                for (int i = 0; i < 4; i++) {
                    QuantKernels.int4Mm(xb[i].reshape(m, -1), tiles[i], groups[i], sz[i]);
                }
            });
            if (NativeKernels.available()) {
                c.put("native-bf16", () -> {
                    for (int i = 0; i < 4; i++) {
                        nativeLinear(Format.BF16, xb[i], wb[i], null);
                    }
                });
                c.put("native-fp16", () -> {
                    for (int i = 0; i < 4; i++) {
                        nativeLinear(Format.FP16, xh[i], wh[i], null);
                    }
                });
                c.put("native-int8", () -> {
                    for (int i = 0; i < 4; i++) {
                        nativeLinear(Format.INT8, xb[i], w8[i], s32[i]);
                    }
                });
                c.put("native-int4", () -> {
                    for (int i = 0; i < 4; i++) {
                        nativeLinear(Format.INT4, xb[i], p4[i], s32[i]);
                    }
                });
            }
            timeLayer("prompt of " + m + " rows, one layer's four linears", c, repeats);
        }
    }

    /** What a layer does around the native kernel: x to float32 rows, the product, back to x's dtype and shape. */
    static Tensor nativeLinear(Format format, Tensor x, Tensor w, Tensor scale) {
        return NativeKernels.linear(format, x, w, scale, null);
    }

    /** Runs each candidate {@code repeats} times after a warm-up, interleaved; prints medians per layer and x28. */
    static void timeLayer(String title, Map<String, Runnable> c, int repeats) {
        Map<String, double[]> times = new LinkedHashMap<>();
        c.keySet().forEach(k -> times.put(k, new double[repeats]));
        for (int r = 0; r <= repeats; r++) {
            for (Map.Entry<String, Runnable> e : c.entrySet()) {
                long t0 = System.nanoTime();
                try (PointerScope s = new PointerScope()) {
                    e.getValue().run();
                }
                if (r > 0) {
                    times.get(e.getKey())[r - 1] = (System.nanoTime() - t0) / 1e6;
                }
            }
        }
        System.out.printf(Locale.ROOT, "%n## %s (ms, median [min-max])%n", title);
        for (Map.Entry<String, double[]> e : times.entrySet()) {
            double[] t = e.getValue();
            System.out.printf(Locale.ROOT, "%-22s %9.1f [%.1f-%.1f]  x28 layers: %.0f ms%n", e.getKey(), median(t),
                    min(t), max(t), LAYERS * median(t));
        }
    }

    interface LayerOp {
        void run(int copy, int i);
    }

    private static Step step(LayerOp layer, Runnable output) {
        return new Step() {
            @Override
            public void layer(int copy, int i) {
                layer.run(copy, i);
            }

            @Override
            public void output() {
                output.run();
            }
        };
    }

    /** Runs every candidate once per repetition (after one warm-up) with a bandwidth reading in between. */
    static void report(String title, Map<String, Step> steps, int copies, int repeats, double bytesPerStep) {
        Map<String, double[]> ms = new LinkedHashMap<>();
        steps.keySet().forEach(k -> ms.put(k, new double[repeats]));
        double[] bw = new double[repeats];
        for (int r = 0; r <= repeats; r++) {
            if (r > 0) {
                bw[r - 1] = torchRead(800L << 20);
            }
            for (Map.Entry<String, Step> e : steps.entrySet()) {
                long t0 = System.nanoTime();
                for (int l = 0; l < LAYERS; l++) {
                    try (PointerScope s = new PointerScope()) {
                        for (int i = 0; i < 4; i++) {
                            e.getValue().layer(l % copies, i);
                        }
                    }
                }
                try (PointerScope s = new PointerScope()) {
                    e.getValue().output();
                }
                if (r > 0) {
                    ms.get(e.getKey())[r - 1] = (System.nanoTime() - t0) / 1e6;
                }
            }
        }
        double bandwidth = median(bw);
        double floorMs = bytesPerStep / bandwidth * 1e3;
        System.out.printf(Locale.ROOT, "%n## %s: %.2f GB per step; bandwidth median %.1f GB/s [%.1f-%.1f], floor"
                + " %.0f ms%n", title, bytesPerStep / 1e9, bandwidth / 1e9, min(bw) / 1e9, max(bw) / 1e9, floorMs);
        System.out.println("| kernel | ms/step, median [min-max] | ratio to floor |");
        System.out.println("|---|---|---|");
        for (Map.Entry<String, double[]> e : ms.entrySet()) {
            double med = median(e.getValue());
            System.out.printf(Locale.ROOT, "| %s | %.0f [%.0f-%.0f] | %.2fx |%n", e.getKey(), med, min(e.getValue()),
                    max(e.getValue()), med / floorMs);
        }
    }

    /** libtorch summing a float32 tensor of {@code bytes} (larger than every cache): read bytes per second. */
    static double torchRead(long bytes) {
        try (PointerScope scope = new PointerScope()) {
            Tensor t = torch.ones(bytes / 4);
            t.sum().item_double();
            long t0 = System.nanoTime();
            double sum = t.sum().item_double();
            long took = System.nanoTime() - t0;
            if (sum != bytes / 4) {
                throw new IllegalStateException("sum of ones was " + sum);
            }
            return bytes / (took / 1e9);
        }
    }

    private static String loadAverage() {
        try {
            return java.nio.file.Files.readString(java.nio.file.Path.of("/proc/loadavg")).trim();
        } catch (java.io.IOException | RuntimeException e) {
            return "unknown";
        }
    }

    static double median(double[] v) {
        double[] s = v.clone();
        Arrays.sort(s);
        return s.length % 2 == 1 ? s[s.length / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
    }

    static double min(double[] v) {
        return Arrays.stream(v).min().orElse(Double.NaN);
    }

    static double max(double[] v) {
        return Arrays.stream(v).max().orElse(Double.NaN);
    }
}
