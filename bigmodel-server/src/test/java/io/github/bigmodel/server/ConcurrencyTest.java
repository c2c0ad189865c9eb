package io.github.bigmodel.server;

import static io.github.bigmodel.server.Http.chat;
import static io.github.bigmodel.server.Http.user;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.BooleanSupplier;
import org.junit.jupiter.api.Test;

/** Sessions decode at once without mixing texts; the queue bound, client disconnects and shutdown. */
class ConcurrencyTest {

    private static final String GREEDY = "\"temperature\": 0, \"stream\": true";

    private static String request(int i) {
        return switch (i % 4) {
            case 0 -> chat(user("apple " + i), GREEDY);
            case 1 -> chat(user("banana " + i), GREEDY);
            case 2 -> chat(user("hi " + i), GREEDY);
            default -> chat(user("sing forever " + i), GREEDY + ", \"max_tokens\": " + (150 + i));
        };
    }

    private static void waitFor(BooleanSupplier condition, String what) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
        while (!condition.getAsBoolean()) {
            if (System.nanoTime() > deadline) {
                throw new AssertionError("timed out waiting for " + what);
            }
            Thread.sleep(10);
        }
    }

    @Test
    void sixteenConcurrentStreamsGetTheTextsOfSequentialRuns() throws Exception {
        try (OpenAiServer server = ScriptedModel.server(b -> b.maxSessions(16).maxQueue(16))) {
            List<String> sequential = new ArrayList<>();
            for (int i = 0; i < 16; i++) {
                sequential.add(Http.post(server, "/v1/chat/completions", request(i)).streamedText());
            }
            assertThat(sequential.get(0)).isEqualTo(ScriptedModel.APPLE);
            assertThat(sequential.get(1)).isEqualTo(ScriptedModel.BANANA);
            assertThat(sequential.get(2)).isEqualTo(ScriptedModel.HELLO);
            assertThat(sequential.get(3)).isEqualTo(("la " .repeat(153)).strip());

            AtomicInteger peak = new AtomicInteger();
            AtomicBoolean running = new AtomicBoolean(true);
            Thread watcher = new Thread(() -> {
                while (running.get()) {
                    peak.accumulateAndGet(server.activeSessions(), Math::max);
                    try {
                        Thread.sleep(1);
                    } catch (InterruptedException e) {
                        return;
                    }
                }
            });
            watcher.start();
            ExecutorService clients = Executors.newFixedThreadPool(16);
            try {
                CountDownLatch go = new CountDownLatch(1);
                List<Future<String>> futures = new ArrayList<>();
                for (int i = 0; i < 16; i++) {
                    int n = i;
                    futures.add(clients.submit(() -> {
                        go.await();
                        return Http.post(server, "/v1/chat/completions", request(n)).streamedText();
                    }));
                }
                go.countDown();
                for (int i = 0; i < 16; i++) {
                    assertThat(futures.get(i).get(120, TimeUnit.SECONDS)).as("client " + i)
                            .isEqualTo(sequential.get(i));
                }
            } finally {
                running.set(false);
                watcher.join();
                clients.shutdownNow();
            }
            assertThat(peak.get()).as("sessions decoding at once").isGreaterThan(1);
            assertThat(Http.metric(server, "bigmodel_kv_cache_bytes")).isZero();
        }
    }

    @Test
    void aDisconnectedClientCancelsItsGenerationAndFreesItsCache() throws Exception {
        try (OpenAiServer server = ScriptedModel.server(ScriptedModel.longGlm(), b -> { })) {
            double tokensBefore = Http.metric(server, "bigmodel_completion_tokens_total");
            try (RawStream stream = new RawStream(server, chat(user("sing forever"), GREEDY
                    + ", \"max_tokens\": 30000"))) {
                stream.readContentEvents(5);
                assertThat(Http.metric(server, "bigmodel_kv_cache_bytes")).isPositive();
                assertThat(Http.metric(server, "bigmodel_active_sessions")).isEqualTo(1);
            }
            waitFor(() -> Http.metric(server, "bigmodel_kv_cache_bytes") == 0
                    && Http.metric(server, "bigmodel_active_sessions") == 0, "the cancelled session to end");
            assertThat(Http.metric(server, "bigmodel_generations_cancelled_total")).isEqualTo(1);
            assertThat(Http.metric(server, "bigmodel_completion_tokens_total") - tokensBefore).isLessThan(30000);
            assertThat(Http.post(server, "/v1/chat/completions", chat(user("hi"), GREEDY)).streamedText())
                    .isEqualTo(ScriptedModel.HELLO);
        }
    }

    @Test
    void beyondTheQueueRequestsGet429AndQueuedOnesRunLater() throws Exception {
        try (OpenAiServer server = ScriptedModel.server(ScriptedModel.longGlm(), b -> b.maxSessions(1).maxQueue(1))) {
            HttpClient client = HttpClient.newHttpClient();
            CompletableFuture<HttpResponse<String>> queued;
            try (RawStream busy = new RawStream(server, chat(user("sing forever"), GREEDY
                    + ", \"max_tokens\": 30000"))) {
                busy.readContentEvents(2);
                queued = client.sendAsync(HttpRequest.newBuilder(URI.create(server.baseUrl()
                                + "/v1/chat/completions")).timeout(Duration.ofSeconds(60))
                        .POST(HttpRequest.BodyPublishers.ofString(chat(user("hi"), "\"temperature\": 0"))).build(),
                        HttpResponse.BodyHandlers.ofString());
                waitFor(() -> Http.metric(server, "bigmodel_queue_depth") == 1, "the second request to queue");
                Http.Reply refused = Http.post(server, "/v1/chat/completions", chat(user("hi"), ""));
                assertThat(refused.status()).isEqualTo(429);
                assertThat(refused.json().at("/error/code").asText()).isEqualTo("queue_full");
                assertThat(refused.headers().firstValue("Retry-After")).hasValue("1");
                assertThat(queued).isNotDone();
            }
            HttpResponse<String> later = queued.get(60, TimeUnit.SECONDS);
            assertThat(later.statusCode()).isEqualTo(200);
            assertThat(Http.JSON.readTree(later.body()).at("/choices/0/message/content").asText())
                    .isEqualTo(ScriptedModel.HELLO);
            waitFor(() -> Http.metric(server, "bigmodel_kv_cache_bytes") == 0, "caches to be freed");
        }
    }

    @Test
    void shutdownCancelsStreamsPastTheGracePeriodAndFreesTheirCaches() throws Exception {
        OpenAiServer server = ScriptedModel.server(ScriptedModel.longGlm(),
                b -> b.shutdownGrace(Duration.ofMillis(200)));
        int port = server.port();
        try (RawStream stream = new RawStream(server, chat(user("sing forever"), GREEDY + ", \"max_tokens\": 30000"))) {
            stream.readContentEvents(3);
            Thread closer = new Thread(server::close);
            closer.start();
            stream.readToEnd();
            closer.join(30_000);
            assertThat(stream.events.get(stream.events.size() - 1)).isEqualTo("[DONE]");
            assertThat(stream.events.get(stream.events.size() - 2)).contains("\"code\":\"shutting_down\"");
        }
        long kv = ScriptedModel.glm().memoryReport().sessions().stream().mapToLong(s -> s.kvBytes()).sum();
        assertThat(kv).isZero();
        assertThatThrownBy(() -> new java.net.Socket(java.net.InetAddress.getLoopbackAddress(), port).close())
                .isInstanceOf(IOException.class);
    }
}
