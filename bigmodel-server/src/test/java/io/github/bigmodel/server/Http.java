package io.github.bigmodel.server;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

/** A small JSON/SSE client for the tests (JDK HttpClient, loopback only). */
final class Http {

    static final ObjectMapper JSON = new ObjectMapper();
    private static final HttpClient CLIENT = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(10)).build();

    private Http() {
    }

    record Reply(int status, String body, java.net.http.HttpHeaders headers) {
        JsonNode json() {
            try {
                return JSON.readTree(body);
            } catch (IOException e) {
                throw new UncheckedIOException("not JSON: " + body, e);
            }
        }

        /** The {@code data:} payloads of a server-sent event stream, in order. */
        List<String> events() {
            List<String> out = new ArrayList<>();
            for (String block : body.split("\n\n")) {
                if (block.startsWith("data: ")) {
                    out.add(block.substring(6));
                }
            }
            return out;
        }

        /** The parsed chunks of a stream (every event but {@code [DONE]}). */
        List<JsonNode> chunks() {
            List<JsonNode> out = new ArrayList<>();
            for (String e : events()) {
                if (!e.equals("[DONE]")) {
                    try {
                        out.add(JSON.readTree(e));
                    } catch (IOException ex) {
                        throw new UncheckedIOException("bad chunk " + e, ex);
                    }
                }
            }
            return out;
        }

        /** The concatenated content deltas of a stream. */
        String streamedText() {
            StringBuilder s = new StringBuilder();
            for (JsonNode c : chunks()) {
                JsonNode d = c.path("choices").path(0).path("delta").path("content");
                if (d.isTextual()) {
                    s.append(d.textValue());
                }
            }
            return s.toString();
        }
    }

    static Reply post(OpenAiServer server, String path, String body, String... headers) {
        return post(server, path, body.getBytes(StandardCharsets.UTF_8), headers);
    }

    static Reply post(OpenAiServer server, String path, byte[] body, String... headers) {
        HttpRequest.Builder b = HttpRequest.newBuilder(URI.create(server.baseUrl() + path))
                .timeout(Duration.ofSeconds(60)).header("Content-Type", "application/json")
                .POST(HttpRequest.BodyPublishers.ofByteArray(body));
        for (int i = 0; i < headers.length; i += 2) {
            b.header(headers[i], headers[i + 1]);
        }
        return send(b.build());
    }

    static Reply get(OpenAiServer server, String path, String... headers) {
        HttpRequest.Builder b = HttpRequest.newBuilder(URI.create(server.baseUrl() + path))
                .timeout(Duration.ofSeconds(60)).GET();
        for (int i = 0; i < headers.length; i += 2) {
            b.header(headers[i], headers[i + 1]);
        }
        return send(b.build());
    }

    static Reply send(HttpRequest request) {
        try {
            HttpResponse<String> r = CLIENT.send(request, HttpResponse.BodyHandlers.ofString(StandardCharsets.UTF_8));
            return new Reply(r.statusCode(), r.body(), r.headers());
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException(e);
        }
    }

    /** A chat completion body: {@code messages} is JSON text of the array; extra is more top-level fields. */
    static String chat(String messages, String extra) {
        return "{\"model\": \"scripted\", \"messages\": " + messages + (extra.isEmpty() ? "" : ", " + extra) + "}";
    }

    static String user(String text) {
        return "[{\"role\": \"user\", \"content\": " + JSON.valueToTree(text) + "}]";
    }

    /** The value of one metric line of {@code /metrics}. */
    static double metric(OpenAiServer server, String name) {
        for (String line : get(server, "/metrics").body().split("\n")) {
            if (line.startsWith(name + " ")) {
                return Double.parseDouble(line.substring(name.length() + 1).trim());
            }
        }
        throw new AssertionError("no metric " + name);
    }
}
