package io.github.bigmodel.server;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.StreamReadConstraints;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import io.github.bigmodel.chatglm.model.ChatGLMMemoryReport;
import io.github.bigmodel.chatglm.chat.ChatGLM;
import io.github.bigmodel.chatglm.chat.ChatStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.URI;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.ThreadFactory;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * An OpenAI-compatible HTTP server over one loaded {@link ChatGLM}: {@code POST /v1/chat/completions} (streaming
 * and not, tools on ChatGLM3), {@code GET /v1/models}, {@code GET /health}, {@code GET /metrics} (Prometheus text)
 * and a chat page at {@code /}. Built on the JDK's {@code com.sun.net.httpserver} and Jackson only.
 *
 * <pre>{@code
 * try (ChatGLM glm = ChatGLM.load(Path.of("chatglm3-6b"), options);
 *      OpenAiServer server = OpenAiServer.builder(glm).modelId("chatglm3-6b").port(8000).build().start()) {
 *     System.out.println("Serving at " + server.baseUrl());
 *     server.awaitShutdown();
 * }
 * }</pre>
 *
 * <p>Concurrency: up to {@code maxSessions} generations decode at once, each with its own KV cache; up to
 * {@code maxQueue} more requests wait for a slot, and further ones get 429. A streaming client that disconnects
 * stops its generation and frees its cache with its next chunk. {@link #close()} refuses new completions (503),
 * lets running ones finish for the grace period, then cancels the rest and stops.
 */
public final class OpenAiServer implements AutoCloseable {

    private static final Logger LOG = LoggerFactory.getLogger(OpenAiServer.class);
    /** The most bytes of an oversized body read (and dropped) so its sender gets the 413. */
    private static final long DRAIN_LIMIT = 64L << 20;

    private final ChatGLM glm;
    private final String modelId;
    private final String host;
    private final int requestedPort;
    private final int maxSessions;
    private final int maxQueue;
    private final int maxBodyBytes;
    private final byte[] apiKey;
    private final Duration shutdownGrace;
    private final ObjectMapper json;
    private final long created = System.currentTimeMillis() / 1000;
    private final Admission admission;
    final ServerMetrics metrics = new ServerMetrics();
    private final AtomicInteger active = new AtomicInteger();
    private final Set<ChatStream> live = ConcurrentHashMap.newKeySet();
    private final Completions completions;
    private final Object lifecycle = new Object();
    private volatile boolean shuttingDown;
    private boolean closed;
    private HttpServer server;
    private ExecutorService pool;

    private OpenAiServer(Builder b) {
        this.glm = b.glm;
        this.modelId = b.modelId;
        this.host = b.host;
        this.requestedPort = b.port;
        this.maxSessions = b.maxSessions;
        this.maxQueue = b.maxQueue;
        this.maxBodyBytes = b.maxBodyBytes;
        this.apiKey = b.apiKey == null ? null : b.apiKey.getBytes(StandardCharsets.UTF_8);
        this.shutdownGrace = b.shutdownGrace;
        this.admission = new Admission(maxSessions, maxQueue);
        // Hostile bodies: deep nesting and trailing garbage are refused by the parser itself.
        JsonFactory factory = JsonFactory.builder()
                .streamReadConstraints(StreamReadConstraints.builder().maxNestingDepth(b.maxJsonDepth).build())
                .enable(com.fasterxml.jackson.core.StreamReadFeature.STRICT_DUPLICATE_DETECTION)
                .build();
        this.json = new ObjectMapper(factory).enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS);
        this.json.configure(JsonParser.Feature.INCLUDE_SOURCE_IN_LOCATION, false);
        this.completions = new Completions(glm, modelId, json, metrics, live, () -> shuttingDown);
    }

    /** A builder for a server over {@code glm}, which the caller keeps and closes after the server. */
    public static Builder builder(ChatGLM glm) {
        if (glm == null) {
            throw new IllegalArgumentException("glm must not be null");
        }
        return new Builder(glm);
    }

    /** Binds the port and starts serving; returns this. */
    public OpenAiServer start() throws IOException {
        synchronized (lifecycle) {
            if (server != null) {
                throw new IllegalStateException("The server is already started");
            }
            AtomicInteger n = new AtomicInteger();
            ThreadFactory threads = r -> {
                Thread t = new Thread(r, "bigmodel-http-" + n.incrementAndGet());
                t.setDaemon(true);
                return t;
            };
            // Enough threads for every admitted and queued generation plus a few for cheap requests and refusals.
            pool = Executors.newFixedThreadPool(maxSessions + maxQueue + 8, threads);
            server = HttpServer.create(new InetSocketAddress(host, requestedPort), 128);
            server.createContext("/", this::dispatch);
            server.setExecutor(pool);
            server.start();
            LOG.info("Serving {} at {} ({} sessions, queue {})", modelId, baseUrl(), maxSessions, maxQueue);
            return this;
        }
    }

    /** The bound port (useful with port 0). */
    public int port() {
        synchronized (lifecycle) {
            if (server == null) {
                throw new IllegalStateException("The server is not started");
            }
            return server.getAddress().getPort();
        }
    }

    /** {@code http://host:port}. */
    public URI baseUrl() {
        String h = host.contains(":") ? "[" + host + "]" : host;
        return URI.create("http://" + h + ":" + port());
    }

    public String modelId() {
        return modelId;
    }

    /** Blocks until {@link #close()} was called (from another thread or a shutdown hook). */
    public void awaitShutdown() throws InterruptedException {
        synchronized (lifecycle) {
            while (!closed) {
                lifecycle.wait();
            }
        }
    }

    /** Generations running now. */
    public int activeSessions() {
        return active.get();
    }

    /**
     * Graceful stop: new completions get 503, running ones may finish within the grace period, the rest are
     * cancelled (streams end with an error event), then the port is released. Idempotent; the model stays open.
     */
    @Override
    public void close() {
        HttpServer s;
        synchronized (lifecycle) {
            if (closed) {
                return;
            }
            shuttingDown = true;
            s = server;
        }
        long deadline = System.nanoTime() + shutdownGrace.toNanos();
        while (active.get() > 0 && System.nanoTime() < deadline) {
            try {
                Thread.sleep(10);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                break;
            }
        }
        for (ChatStream stream : live) {
            stream.close();
        }
        if (s != null) {
            s.stop(1);
            pool.shutdown();
            try {
                pool.awaitTermination(5, TimeUnit.SECONDS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
        synchronized (lifecycle) {
            closed = true;
            lifecycle.notifyAll();
        }
        LOG.info("Server for {} stopped", modelId);
    }

    private void dispatch(HttpExchange ex) {
        try {
            route(ex);
        } catch (ApiException e) {
            error(ex, e);
        } catch (IOException e) {
            LOG.debug("Client connection failed: {}", e.toString());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            error(ex, new ApiException(503, "server_error", null, "shutting_down", "The server is shutting down"));
        } catch (RuntimeException e) {
            LOG.error("Request {} {} failed", ex.getRequestMethod(), ex.getRequestURI(), e);
            error(ex, new ApiException(500, "server_error", null, "internal_error",
                    "Internal error: " + e.getClass().getSimpleName()));
        } finally {
            ex.close();
        }
    }

    private void route(HttpExchange ex) throws IOException, InterruptedException {
        String path = ex.getRequestURI().getPath();
        String method = ex.getRequestMethod();
        switch (path) {
            case "/", "/index.html" -> {
                get(method);
                page(ex);
            }
            case "/health" -> {
                get(method);
                ObjectNode h = json.createObjectNode();
                h.put("status", shuttingDown ? "shutting_down" : "ok");
                h.put("model", modelId);
                h.put("active_sessions", active.get());
                h.put("queued", admission.queued());
                send(ex, shuttingDown ? 503 : 200, h);
            }
            case "/metrics" -> {
                get(method);
                byte[] body = metrics.render(active.get(), admission.queued(), kvBytes(), maxSessions, maxQueue)
                        .getBytes(StandardCharsets.UTF_8);
                ex.getResponseHeaders().set("Content-Type", "text/plain; version=0.0.4; charset=utf-8");
                respond(ex, 200, body);
            }
            case "/v1/models" -> {
                authorize(ex);
                get(method);
                ObjectNode list = json.createObjectNode();
                list.put("object", "list");
                list.putArray("data").add(modelObject());
                send(ex, 200, list);
            }
            case "/v1/chat/completions" -> {
                authorize(ex);
                if (!method.equals("POST")) {
                    throw methodNotAllowed(method);
                }
                chat(ex);
            }
            case "/api/model" -> {
                authorize(ex);
                get(method);
                send(ex, 200, modelInfo());
            }
            default -> {
                if (path.startsWith("/v1/models/")) {
                    authorize(ex);
                    get(method);
                    String id = path.substring("/v1/models/".length());
                    if (!id.equals(modelId)) {
                        throw modelNotFound(id);
                    }
                    send(ex, 200, modelObject());
                } else {
                    throw new ApiException(404, "invalid_request_error", null, "not_found", "No route for " + path);
                }
            }
        }
    }

    private void chat(HttpExchange ex) throws IOException, InterruptedException {
        JsonNode body = readJson(ex);
        CompletionRequest req = CompletionRequest.parse(body, json);
        if (!req.model().equals(modelId)) {
            throw modelNotFound(req.model());
        }
        Completions.Prepared prepared = completions.prepare(req);
        if (shuttingDown) {
            throw new ApiException(503, "server_error", null, "shutting_down", "The server is shutting down");
        }
        if (!admission.enter()) {
            ex.getResponseHeaders().set("Retry-After", "1");
            throw new ApiException(429, "rate_limit_exceeded", null, "queue_full", "All " + maxSessions
                    + " sessions are busy and " + maxQueue + " requests are waiting; retry later");
        }
        active.incrementAndGet();
        try {
            completions.run(ex, prepared);
        } finally {
            active.decrementAndGet();
            admission.leave();
        }
    }

    private JsonNode readJson(HttpExchange ex) throws IOException {
        String length = ex.getRequestHeaders().getFirst("Content-Length");
        if (length != null) {
            long declared;
            try {
                declared = Long.parseLong(length.trim());
            } catch (NumberFormatException e) {
                throw ApiException.invalid(null, "Bad Content-Length");
            }
            if (declared > maxBodyBytes) {
                throw tooLarge(ex);
            }
        }
        byte[] bytes = ex.getRequestBody().readNBytes(maxBodyBytes + 1);
        if (bytes.length > maxBodyBytes) {
            throw tooLarge(ex);
        }
        String text;
        try {
            text = StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT).decode(ByteBuffer.wrap(bytes)).toString();
        } catch (CharacterCodingException e) {
            throw ApiException.invalid(null, "The request body is not valid UTF-8");
        }
        try {
            return json.readTree(text);
        } catch (JsonProcessingException e) {
            throw ApiException.invalid(null, "The request body is not valid JSON: " + e.getOriginalMessage());
        }
    }

    /**
     * The 413 for a body over the limit. A client still sending would see a reset instead of the answer, so a
     * body of moderate size is read and dropped first; beyond {@link #DRAIN_LIMIT} the connection is just closed.
     */
    private ApiException tooLarge(HttpExchange ex) throws IOException {
        InputStream in = ex.getRequestBody();
        long skipped = 0;
        byte[] sink = new byte[64 << 10];
        int n;
        while (skipped < DRAIN_LIMIT && (n = in.read(sink)) > 0) {
            skipped += n;
        }
        ex.getResponseHeaders().set("Connection", "close");
        return new ApiException(413, "invalid_request_error", null, "request_too_large",
                "The request body exceeds " + maxBodyBytes + " bytes");
    }

    private void authorize(HttpExchange ex) {
        if (apiKey == null) {
            return;
        }
        String auth = ex.getRequestHeaders().getFirst("Authorization");
        byte[] given = auth != null && auth.startsWith("Bearer ")
                ? auth.substring(7).trim().getBytes(StandardCharsets.UTF_8) : new byte[0];
        if (!MessageDigest.isEqual(given, apiKey)) {
            ex.getResponseHeaders().set("WWW-Authenticate", "Bearer");
            throw new ApiException(401, "invalid_request_error", null, "invalid_api_key",
                    "Missing or wrong API key: send 'Authorization: Bearer <key>'");
        }
    }

    private static void get(String method) {
        if (!method.equals("GET") && !method.equals("HEAD")) {
            throw methodNotAllowed(method);
        }
    }

    private static ApiException methodNotAllowed(String method) {
        return new ApiException(405, "invalid_request_error", null, "method_not_allowed",
                "Method " + method + " is not allowed here");
    }

    private ApiException modelNotFound(String id) {
        return new ApiException(404, "invalid_request_error", "model", "model_not_found",
                "The model '" + id + "' does not exist; this server serves '" + modelId + "'");
    }

    private ObjectNode modelObject() {
        ObjectNode m = json.createObjectNode();
        m.put("id", modelId);
        m.put("object", "model");
        m.put("created", created);
        m.put("owned_by", "bigmodel");
        return m;
    }

    private ObjectNode modelInfo() throws IOException {
        ObjectNode info = json.createObjectNode();
        info.put("id", modelId);
        info.put("format", glm.format().name());
        info.put("max_positions", glm.model().config().maxPositions());
        info.put("max_sessions", maxSessions);
        info.set("device_map", json.readTree(glm.hfDeviceMap().toJson()));
        info.put("memory_report", glm.memoryReport().toString());
        return info;
    }

    private long kvBytes() {
        long sum = 0;
        for (ChatGLMMemoryReport.Session s : glm.memoryReport().sessions()) {
            sum += s.kvBytes();
        }
        return sum;
    }

    private void page(HttpExchange ex) throws IOException {
        byte[] body;
        try (InputStream in = OpenAiServer.class.getResourceAsStream("page/index.html")) {
            if (in == null) {
                throw new IllegalStateException("The chat page is missing from the jar");
            }
            body = in.readAllBytes();
        }
        ex.getResponseHeaders().set("Content-Type", "text/html; charset=utf-8");
        ex.getResponseHeaders().set("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline';"
                + " script-src 'self' 'unsafe-inline'");
        respond(ex, 200, body);
    }

    private void send(HttpExchange ex, int status, JsonNode body) throws IOException {
        ex.getResponseHeaders().set("Content-Type", "application/json");
        respond(ex, status, json.writeValueAsBytes(body));
    }

    private void respond(HttpExchange ex, int status, byte[] body) throws IOException {
        metrics.response(status);
        boolean head = ex.getRequestMethod().equals("HEAD");
        ex.sendResponseHeaders(status, head ? -1 : body.length == 0 ? -1 : body.length);
        if (!head) {
            try (OutputStream os = ex.getResponseBody()) {
                os.write(body);
            }
        }
    }

    /** OpenAI's error object; after a stream has started, the error cannot change the status and is dropped. */
    private void error(HttpExchange ex, ApiException e) {
        if (ex.getResponseCode() != -1) {
            LOG.debug("Error after the response started: {}", e.getMessage());
            return;
        }
        try {
            send(ex, e.status, errorBody(json, e));
        } catch (IOException io) {
            LOG.debug("Could not send error {}: {}", e.status, io.toString());
        }
    }

    static ObjectNode errorBody(ObjectMapper json, ApiException e) {
        ObjectNode root = json.createObjectNode();
        ObjectNode err = root.putObject("error");
        err.put("message", e.getMessage());
        err.put("type", e.type);
        err.put("param", e.param);
        err.put("code", e.code);
        return root;
    }

    /** Settings of an {@link OpenAiServer}; every setter validates its value. */
    public static final class Builder {
        private final ChatGLM glm;
        private String modelId = "bigmodel";
        private String host = "127.0.0.1";
        private int port = 8000;
        private int maxSessions = 4;
        private int maxQueue = 16;
        private int maxBodyBytes = 4 << 20;
        private int maxJsonDepth = 64;
        private String apiKey;
        private Duration shutdownGrace = Duration.ofSeconds(30);

        private Builder(ChatGLM glm) {
            this.glm = glm;
        }

        /** The id clients name in {@code model} (default {@code bigmodel}). */
        public Builder modelId(String modelId) {
            if (modelId == null || modelId.isBlank()) {
                throw new IllegalArgumentException("modelId must be a non-blank name");
            }
            this.modelId = modelId;
            return this;
        }

        /** The address to bind (default 127.0.0.1, loopback only). */
        public Builder host(String host) {
            if (host == null || host.isBlank()) {
                throw new IllegalArgumentException("host must not be blank");
            }
            this.host = host;
            return this;
        }

        /** The port (default 8000; 0 picks a free one). */
        public Builder port(int port) {
            if (port < 0 || port > 65535) {
                throw new IllegalArgumentException("port must be 0..65535, got " + port);
            }
            this.port = port;
            return this;
        }

        /** Generations decoding at once (default 4). */
        public Builder maxSessions(int maxSessions) {
            if (maxSessions < 1 || maxSessions > 1024) {
                throw new IllegalArgumentException("maxSessions must be 1..1024, got " + maxSessions);
            }
            this.maxSessions = maxSessions;
            return this;
        }

        /** Requests that may wait for a session before 429 (default 16; 0: refuse at once when all are busy). */
        public Builder maxQueue(int maxQueue) {
            if (maxQueue < 0 || maxQueue > 4096) {
                throw new IllegalArgumentException("maxQueue must be 0..4096, got " + maxQueue);
            }
            this.maxQueue = maxQueue;
            return this;
        }

        /** The largest request body in bytes (default 4 MiB); larger ones get 413. */
        public Builder maxBodyBytes(int maxBodyBytes) {
            if (maxBodyBytes < 1024) {
                throw new IllegalArgumentException("maxBodyBytes must be >= 1024, got " + maxBodyBytes);
            }
            this.maxBodyBytes = maxBodyBytes;
            return this;
        }

        /** The deepest JSON nesting accepted (default 64). */
        public Builder maxJsonDepth(int maxJsonDepth) {
            if (maxJsonDepth < 8) {
                throw new IllegalArgumentException("maxJsonDepth must be >= 8, got " + maxJsonDepth);
            }
            this.maxJsonDepth = maxJsonDepth;
            return this;
        }

        /** When set, {@code /v1/*} and {@code /api/*} need {@code Authorization: Bearer <key>} (else 401). */
        public Builder apiKey(String apiKey) {
            if (apiKey != null && apiKey.isBlank()) {
                throw new IllegalArgumentException("apiKey must not be blank");
            }
            this.apiKey = apiKey;
            return this;
        }

        /** How long {@link #close()} lets running generations finish before cancelling them (default 30 s). */
        public Builder shutdownGrace(Duration grace) {
            if (grace == null || grace.isNegative()) {
                throw new IllegalArgumentException("shutdownGrace must be >= 0");
            }
            this.shutdownGrace = grace;
            return this;
        }

        public OpenAiServer build() {
            return new OpenAiServer(this);
        }
    }
}
