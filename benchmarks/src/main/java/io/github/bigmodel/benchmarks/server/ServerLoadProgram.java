package io.github.bigmodel.benchmarks.server;

import io.github.bigmodel.chatglm.model.ScriptedCheckpoint;
import io.github.bigmodel.chatglm.chat.ChatGLM;
import io.github.bigmodel.chatglm.chat.ChatOptions;
import io.github.bigmodel.chatglm.chat.ChatStream;
import io.github.bigmodel.chatglm.generation.GenerationConfig;
import io.github.bigmodel.core.NativeRuntime;
import io.github.bigmodel.server.OpenAiServer;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.stream.Stream;

/**
 * A bounded load test of {@code bigmodel serve} on loopback with our own client: the scripted tiny ChatGLM3
 * streams a reply of a fixed number of tokens; for 1, 4 and 16 concurrent clients it reports requests per second
 * and the 50th/99th percentile of the time to the first content chunk, then the server's added latency per token:
 * how much a longer reply's total time grows per token over HTTP, minus the same growth in process (a slope, so
 * the fixed cost of a request and the client's batching of reads do not count as per-token cost).
 *
 * <pre>
 * mvn -B -ntp -q -pl benchmarks -am compile dependency:build-classpath -Dmdep.outputFile=target/cp.txt
 * java -cp benchmarks/target/classes:$(cat benchmarks/target/cp.txt) io.github.bigmodel.benchmarks.server.ServerLoadProgram \
 *     --tokens 64 --requests 48
 * </pre>
 */
public final class ServerLoadProgram {

    private ServerLoadProgram() {
    }

    record Timing(double ttftMs, double perTokenMs, int tokens, double totalMs) {
    }

    private static String body(int tokens) {
        return "{\"model\": \"scripted\", \"stream\": true, \"temperature\": 0, \"max_tokens\": " + tokens
                + ", \"messages\": [{\"role\": \"user\", \"content\": \"sing forever\"}]}";
    }

    /**
     * The same generation in process, from the call to the last delta, on a pool thread as the server's are (libtorch's
     * per-thread settings make the main thread a different baseline).
     */
    private static double inProcessTotal(ChatGLM glm, int tokens) throws Exception {
        return WORKER.submit(() -> {
            long t0 = System.nanoTime();
            inProcess(glm, tokens);
            return (System.nanoTime() - t0) / 1e6;
        }).get();
    }

    private static final ExecutorService WORKER = Executors.newSingleThreadExecutor(r -> {
        Thread t = new Thread(r, "in-process");
        t.setDaemon(true);
        return t;
    });

    public static void main(String[] args) throws Exception {
        int tokens = 64;
        int requests = 48;
        for (int i = 0; i < args.length; i += 2) {
            switch (args[i]) {
                case "--tokens" -> tokens = Integer.parseInt(args[i + 1]);
                case "--requests" -> requests = Integer.parseInt(args[i + 1]);
                default -> throw new IllegalArgumentException("unknown option " + args[i]);
            }
        }
        NativeRuntime.init();
        Path dir = Files.createTempDirectory("bigmodel-load");
        ScriptedCheckpoint.builder().reply("\nHello.").loopWhen("forever", "\nla", " la").write(dir);
        String body = body(tokens);
        try (ChatGLM glm = ChatGLM.load(dir);
             OpenAiServer server = OpenAiServer.builder(glm).modelId("scripted").port(0).maxSessions(16)
                     .maxQueue(64).build().start()) {
            HttpClient client = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(10)).build();
            URI uri = URI.create(server.baseUrl() + "/v1/chat/completions");
            for (int i = 0; i < 20; i++) { // warm-up: JIT, allocator
                request(client, uri, body);
                inProcessTotal(glm, tokens);
            }
            System.out.printf(Locale.ROOT, "%d tokens per reply, %d requests per row, %d cores%n%n", tokens, requests,
                    Runtime.getRuntime().availableProcessors());
            System.out.println("| clients | requests/s | TTFT p50 (ms) | TTFT p99 (ms) | ms per token (HTTP) |");
            System.out.println("| ---: | ---: | ---: | ---: | ---: |");
            for (int clients : new int[] {1, 4, 16}) {
                row(client, uri, body, clients, requests);
            }
            // Added latency per token: the slope of total time over reply length, over HTTP minus in process,
            // so fixed costs (connection, parsing) and the client's read batching drop out.
            int shortReply = 32;
            int longReply = 256;
            // Interleaved, so the load of a shared machine drifts over all four alike.
            double[][] samples = new double[4][30];
            for (int i = 0; i < 30; i++) {
                samples[0][i] = inProcessTotal(glm, shortReply);
                samples[1][i] = request(client, uri, body(shortReply)).totalMs();
                samples[2][i] = inProcessTotal(glm, longReply);
                samples[3][i] = request(client, uri, body(longReply)).totalMs();
            }
            double inShort = median(samples[0]);
            double httpShort = median(samples[1]);
            double inLong = median(samples[2]);
            double httpLong = median(samples[3]);
            double inSlope = (inLong - inShort) / (longReply - shortReply);
            double httpSlope = (httpLong - httpShort) / (longReply - shortReply);
            System.out.printf(Locale.ROOT, "%none client, median of 30 each: %d tokens in process %.1f ms, over HTTP %.1f"
                    + " ms; %d tokens in process %.1f ms, over HTTP %.1f ms%n", shortReply, inShort, httpShort,
                    longReply, inLong, httpLong);
            System.out.printf(Locale.ROOT, "per token: in process %.3f ms, over HTTP %.3f ms, added by the server "
                    + "%.3f ms; fixed cost per request %.1f ms%n", inSlope, httpSlope, httpSlope - inSlope,
                    httpShort - inShort - shortReply * (httpSlope - inSlope));
        }
    }

    private static void row(HttpClient client, URI uri, String body, int clients, int requests) throws Exception {
        ExecutorService pool = Executors.newFixedThreadPool(clients);
        List<Timing> timings = Collections.synchronizedList(new ArrayList<>());
        int each = Math.max(1, requests / clients);
        long start = System.nanoTime();
        try {
            List<Future<?>> futures = new ArrayList<>();
            for (int c = 0; c < clients; c++) {
                futures.add(pool.submit(() -> {
                    for (int r = 0; r < each; r++) {
                        timings.add(request(client, uri, body));
                    }
                    return null;
                }));
            }
            for (Future<?> f : futures) {
                f.get();
            }
        } finally {
            pool.shutdown();
        }
        double seconds = (System.nanoTime() - start) / 1e9;
        double[] ttft = timings.stream().mapToDouble(Timing::ttftMs).toArray();
        double[] perToken = timings.stream().mapToDouble(Timing::perTokenMs).toArray();
        System.out.printf(Locale.ROOT, "| %d | %.1f | %.2f | %.2f | %.3f |%n", clients, timings.size() / seconds,
                percentile(ttft, 50), percentile(ttft, 99), median(perToken));
    }

    /** One streamed request: time to the first content chunk, then the mean time between content chunks. */
    private static Timing request(HttpClient client, URI uri, String body) throws Exception {
        long t0 = System.nanoTime();
        HttpResponse<Stream<String>> r = client.send(HttpRequest.newBuilder(uri).timeout(Duration.ofSeconds(120))
                .header("Content-Type", "application/json").POST(HttpRequest.BodyPublishers.ofString(body)).build(),
                HttpResponse.BodyHandlers.ofLines());
        if (r.statusCode() != 200) {
            throw new IllegalStateException("HTTP " + r.statusCode());
        }
        long first = 0;
        long last = 0;
        int chunks = 0;
        try (Stream<String> lines = r.body()) {
            for (String line : (Iterable<String>) lines::iterator) {
                if (line.startsWith("data: ") && line.contains("\"content\":\"") && !line.contains("\"content\":\"\"")) {
                    last = System.nanoTime();
                    if (chunks++ == 0) {
                        first = last;
                    }
                }
            }
        }
        return new Timing((first - t0) / 1e6, chunks > 1 ? (last - first) / 1e6 / (chunks - 1) : 0, chunks,
                (System.nanoTime() - t0) / 1e6);
    }

    /** The same generation in process: mean time between deltas. */
    private static double inProcess(ChatGLM glm, int tokens) {
        ChatOptions options = ChatOptions.builder()
                .generation(GenerationConfig.builder().maxNewTokens(tokens).build()).build();
        long[] times = new long[tokens + 2];
        int[] n = {0};
        try (ChatStream s = glm.streamChat("sing forever", List.of(), options)) {
            s.drain(d -> times[n[0]++] = System.nanoTime());
        }
        return n[0] > 1 ? (times[n[0] - 1] - times[0]) / 1e6 / (n[0] - 1) : 0;
    }

    private static double percentile(double[] values, double p) {
        double[] v = values.clone();
        Arrays.sort(v);
        int i = (int) Math.ceil(p / 100.0 * v.length) - 1;
        return v[Math.max(0, Math.min(v.length - 1, i))];
    }

    private static double median(double[] values) {
        return percentile(values, 50);
    }
}
