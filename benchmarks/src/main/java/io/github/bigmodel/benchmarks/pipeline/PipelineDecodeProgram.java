package io.github.bigmodel.benchmarks.pipeline;

import io.github.bigmodel.chatglm.ChatGLMFamily;
import io.github.bigmodel.chatglm.generation.GenerationRequest;
import io.github.bigmodel.chatglm.generation.Generator;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.NativeRuntime;
import io.github.bigmodel.dispatch.BigModel;
import io.github.bigmodel.dispatch.DispatchOptions;
import io.github.bigmodel.dispatch.DispatchedModel;
import io.github.bigmodel.dispatch.plan.DeviceMap;
import io.github.bigmodel.pipeline.PipelineCoordinator;
import io.github.bigmodel.pipeline.PipelineWorker;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;

/**
 * Decode speed of one model in one process against the same model as a pipeline of processes, and the round trip of
 * an empty message through the ring (the per-hop overhead without a hidden state).
 *
 * <pre>{@code
 * # the whole model here:
 * java -cp benchmarks/target/benchmarks.jar io.github.bigmodel.benchmarks.pipeline.PipelineDecodeProgram \
 *     single --model /data/glm3-4l --dtype bf16 --prompt 16 --tokens 16 --threads 1
 * # a worker (another terminal or host), then the coordinator:
 * java -cp ... PipelineDecodeProgram worker --model /data/glm3-4l --map pipeline.json --store 127.0.0.1:29511 \
 *     --rank 1 --world 2 --dtype bf16 --threads 1
 * java -cp ... PipelineDecodeProgram coordinator --model /data/glm3-4l --map pipeline.json \
 *     --store 127.0.0.1:29511 --dtype bf16 --prompt 16 --tokens 16 --threads 1
 * }</pre>
 *
 * Prints one line per run: mode, prompt ms, decode ms/token (median of the steps after the first), and for the
 * coordinator the median ring round trip of 50 pings.
 */
public final class PipelineDecodeProgram {

    private PipelineDecodeProgram() {
    }

    public static void main(String[] args) throws Exception {
        String mode = args[0];
        Path model = null;
        Path map = null;
        String store = "127.0.0.1:29511";
        int rank = 1;
        int world = 2;
        DType dtype = DType.BFLOAT16;
        int prompt = 16;
        int tokens = 16;
        for (int i = 1; i < args.length; i += 2) {
            String v = args[i + 1];
            switch (args[i]) {
                case "--model" -> model = Path.of(v);
                case "--map" -> map = Path.of(v);
                case "--store" -> store = v;
                case "--rank" -> rank = Integer.parseInt(v);
                case "--world" -> world = Integer.parseInt(v);
                case "--dtype" -> dtype = DType.parse(v);
                case "--prompt" -> prompt = Integer.parseInt(v);
                case "--tokens" -> tokens = Integer.parseInt(v);
                case "--threads" -> NativeRuntime.setThreads(Integer.parseInt(v));
                default -> throw new IllegalArgumentException("Unknown option " + args[i]);
            }
        }
        DispatchOptions options = DispatchOptions.builder().dtype(dtype).build();
        String host = store.substring(0, store.lastIndexOf(':'));
        int port = Integer.parseInt(store.substring(store.lastIndexOf(':') + 1));
        switch (mode) {
            case "single" -> {
                ChatGLMLanguageModel m = ChatGLMFamily.ofFolder(model).createModel(dtype);
                try (DispatchedModel<ChatGLMLanguageModel> d = BigModel.loadCheckpointAndDispatch(m, model,
                        options.toBuilder().deviceMap("{\"\": \"cpu\"}").build())) {
                    measure("single", d.model(), prompt, tokens, Double.NaN);
                }
            }
            case "worker" -> {
                DeviceMap hostMap = DeviceMap.fromJson(Files.readString(map));
                try (PipelineWorker w = PipelineWorker.load(model, hostMap, options, new PipelineWorker.Options(host,
                        port, rank, world, host, Duration.ofMinutes(10), Duration.ofMinutes(5)))) {
                    System.out.println("worker rank " + rank + " holds " + w.span());
                    w.serve();
                }
            }
            case "coordinator" -> {
                DeviceMap hostMap = DeviceMap.fromJson(Files.readString(map));
                try (PipelineCoordinator c = PipelineCoordinator.start(model, hostMap,
                        PipelineCoordinator.Options.of(host, port).withTimeouts(Duration.ofMinutes(10),
                                Duration.ofMinutes(5)));
                     DispatchedModel<ChatGLMLanguageModel> d = c.loadModel(options)) {
                    double[] pings = new double[50];
                    for (int i = 0; i < pings.length; i++) {
                        pings[i] = c.ping();
                    }
                    measure("pipeline " + c.plan().world() + " ranks", d.model(), prompt, tokens, median(pings));
                    c.shutdownWorkers();
                }
            }
            default -> throw new IllegalArgumentException("mode: single, worker or coordinator");
        }
    }

    private static void measure(String what, ChatGLMLanguageModel m, int prompt, int tokens, double pingMs) {
        long[] ids = new long[prompt];
        for (int i = 0; i < prompt; i++) {
            ids[i] = 100 + 37L * i % 30000;
        }
        GenerationRequest request = GenerationRequest.builder(new long[][] {ids}).maxNewTokens(tokens)
                .stopAtEos(false).build();
        Generator generator = new Generator(m);
        generator.generate(GenerationRequest.builder(new long[][] {ids}).maxNewTokens(2).stopAtEos(false).build());
        double[] steps = new double[tokens];
        long start = System.nanoTime();
        try (Generator.Session session = generator.start(request)) {
            // Step 0 runs the prompt, each later step one token.
            for (int i = 0; i < tokens && !session.isFinished(); i++) {
                long t = System.nanoTime();
                session.step();
                steps[i] = (System.nanoTime() - t) / 1e6;
            }
        }
        double totalMs = (System.nanoTime() - start) / 1e6;
        double promptMs = steps[0];
        double decode = median(Arrays.copyOfRange(steps, 1, steps.length));
        System.out.printf("%s: threads %d, prompt %d tokens %.1f ms, decode %.1f ms/token (median of %d), total %.0f ms,"
                + " ring round trip %.3f ms%n", what, NativeRuntime.threads(), prompt, promptMs, decode,
                steps.length - 1, totalMs, pingMs);
    }

    private static double median(double[] values) {
        double[] s = values.clone();
        Arrays.sort(s);
        return s.length == 0 ? Double.NaN : s[s.length / 2];
    }
}
