package io.github.bigmodel.server;

import static io.github.bigmodel.server.Http.chat;
import static io.github.bigmodel.server.Http.user;
import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import java.io.ByteArrayInputStream;
import java.net.URI;
import java.net.http.HttpRequest;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/** Malformed and hostile bodies get a 4xx in OpenAI's error shape, and the server keeps serving. */
class HostileInputTest {

    private static OpenAiServer server;

    @BeforeAll
    static void start() {
        server = ScriptedModel.server(b -> b.maxBodyBytes(1 << 20));
    }

    @AfterAll
    static void stop() {
        server.close();
    }

    private static void assertError(Http.Reply r, int status, String param) {
        assertThat(r.status()).as(r.body()).isEqualTo(status);
        JsonNode e = r.json().get("error");
        assertThat(e.get("message").asText()).isNotBlank();
        assertThat(e.get("type").asText()).isNotBlank();
        assertThat(e.has("param")).isTrue();
        assertThat(e.has("code")).isTrue();
        if (param != null) {
            assertThat(e.get("param").asText()).isEqualTo(param);
        }
    }

    @Test
    void invalidUtf8IsRefused() {
        byte[] body = chat(user("hi XX"), "").getBytes(StandardCharsets.UTF_8);
        int at = new String(body, StandardCharsets.UTF_8).indexOf("XX");
        body[at] = (byte) 0xC3; // a lead byte followed by an ASCII byte
        body[at + 1] = (byte) 0x28;
        Http.Reply r = Http.post(server, "/v1/chat/completions", body);
        assertError(r, 400, null);
        assertThat(r.json().at("/error/message").asText()).contains("UTF-8");
        byte[] lone = chat(user("hi X"), "").getBytes(StandardCharsets.UTF_8);
        lone[new String(lone, StandardCharsets.UTF_8).indexOf('X')] = (byte) 0xFF;
        assertError(Http.post(server, "/v1/chat/completions", lone), 400, null);
    }

    @Test
    void deepNestingIsRefusedByTheParser() {
        String deep = "{\"model\": \"scripted\", \"messages\": " + "[".repeat(200_000) + "]".repeat(200_000) + "}";
        assertError(Http.post(server, "/v1/chat/completions", deep), 400, null);
        String deepObject = "{\"model\": \"scripted\", \"x\": " + "{\"a\":".repeat(5000) + "1" + "}".repeat(5000)
                + ", \"messages\": " + user("hi") + "}";
        assertError(Http.post(server, "/v1/chat/completions", deepObject), 400, null);
    }

    @Test
    void bodiesOverTheLimitGet413WithOrWithoutALength() {
        byte[] big = new byte[10 << 20];
        Arrays.fill(big, (byte) ' ');
        byte[] json = chat(user("hi"), "").getBytes(StandardCharsets.UTF_8);
        System.arraycopy(json, 0, big, 0, json.length);
        assertError(Http.post(server, "/v1/chat/completions", big), 413, null);
        // Chunked, no Content-Length: the server stops reading past its limit.
        HttpRequest chunked = HttpRequest.newBuilder(URI.create(server.baseUrl() + "/v1/chat/completions"))
                .timeout(Duration.ofSeconds(60)).header("Content-Type", "application/json")
                .POST(HttpRequest.BodyPublishers.ofInputStream(() -> new ByteArrayInputStream(big))).build();
        Http.Reply r = Http.send(chunked);
        assertError(r, 413, null);
        String longText = "x".repeat(2 << 20);
        assertError(Http.post(server, "/v1/chat/completions", chat(user(longText), "")), 413, null);
    }

    @Test
    void wrongTypesAndValuesNameTheField() {
        Map<String, String> cases = new LinkedHashMap<>();
        String m = user("hi");
        cases.put("{\"model\": 5, \"messages\": " + m + "}", "model");
        cases.put("{\"messages\": " + m + "}", "model");
        cases.put("{\"model\": \"scripted\", \"messages\": \"hi\"}", "messages");
        cases.put("{\"model\": \"scripted\", \"messages\": []}", "messages");
        cases.put("{\"model\": \"scripted\", \"messages\": [5]}", "messages[0]");
        cases.put(chat("[{\"role\": 7, \"content\": \"x\"}]", ""), "messages[0].role");
        cases.put(chat("[{\"role\": \"wizard\", \"content\": \"x\"}]", ""), "messages[0].role");
        cases.put(chat("[{\"role\": \"user\", \"content\": 5}]", ""), "messages[0].content");
        cases.put(chat("[{\"role\": \"user\"}]", ""), "messages[0].content");
        cases.put(chat("[{\"role\": \"user\", \"content\": [{\"type\": \"image_url\", \"image_url\": {}}]}]", ""),
                "messages[0].content[0]");
        cases.put(chat("[{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\", \"content\": \"b\"}]",
                ""), "messages[1].role");
        cases.put(chat("[{\"role\": \"tool\", \"content\": \"r\"}]", ""), "messages[0].tool_call_id");
        cases.put(chat("[{\"role\": \"user\", \"content\": \"a\", \"tool_calls\": []}]", ""),
                "messages[0].tool_calls");
        cases.put(chat("[{\"role\": \"assistant\", \"tool_calls\": [{\"id\": \"c\", \"type\": \"function\", "
                + "\"function\": {\"name\": \"f\", \"arguments\": \"{not json\"}}]}, {\"role\": \"user\", "
                + "\"content\": \"x\"}]", ""), "messages[0].tool_calls[0].function.arguments");
        cases.put(chat("[{\"role\": \"assistant\", \"tool_calls\": [{\"id\": \"c\", \"type\": \"function\", "
                + "\"function\": {\"name\": \"f\", \"arguments\": \"[1]\"}}]}, {\"role\": \"user\", "
                + "\"content\": \"x\"}]", ""), "messages[0].tool_calls[0].function.arguments");
        cases.put(chat("[{\"role\": \"assistant\", \"tool_calls\": [{\"id\": \"c\", \"type\": \"function\", "
                + "\"function\": {\"name\": \"f\", \"arguments\": \"{\\\"a-b\\\": 1}\"}}]}, {\"role\": \"user\", "
                + "\"content\": \"x\"}]", ""), "messages[0].tool_calls[0].function.arguments");
        cases.put(chat(m, "\"temperature\": \"hot\""), "temperature");
        cases.put(chat(m, "\"temperature\": 3"), "temperature");
        cases.put(chat(m, "\"top_p\": 0"), "top_p");
        cases.put(chat(m, "\"top_p\": 1.5"), "top_p");
        cases.put(chat(m, "\"max_tokens\": -1"), "max_tokens");
        cases.put(chat(m, "\"max_tokens\": 1.5"), "max_tokens");
        cases.put(chat(m, "\"max_tokens\": 99999999999"), "max_tokens");
        cases.put(chat(m, "\"max_completion_tokens\": \"ten\""), "max_completion_tokens");
        cases.put(chat(m, "\"n\": 0"), "n");
        cases.put(chat(m, "\"stream\": \"yes\""), "stream");
        cases.put(chat(m, "\"stream_options\": {\"include_usage\": true}"), "stream_options");
        cases.put(chat(m, "\"stop\": 5"), "stop");
        cases.put(chat(m, "\"stop\": [1]"), "stop");
        cases.put(chat(m, "\"stop\": [\"a\", \"b\", \"c\", \"d\", \"e\"]"), "stop");
        cases.put(chat(m, "\"stop\": \"\""), "stop");
        cases.put(chat(m, "\"seed\": \"x\""), "seed");
        cases.put(chat(m, "\"seed\": 1e300"), "seed");
        cases.put(chat(m, "\"logprobs\": true"), "logprobs");
        cases.put(chat(m, "\"presence_penalty\": 1"), "presence_penalty");
        cases.put(chat(m, "\"tools\": \"x\""), "tools");
        cases.put(chat(m, "\"tools\": [{\"type\": \"function\"}]"), "tools[0].function");
        cases.put(chat(m, "\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"bad name!\"}}]"),
                "tools[0].function.name");
        cases.put(chat(m, "\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", \"parameters\": 3}}]"),
                "tools[0].function.parameters");
        cases.put(chat(m, "\"tool_choice\": 5"), "tool_choice");
        cases.put(chat(m, "\"tool_choice\": \"required\""), "tool_choice");
        for (Map.Entry<String, String> c : cases.entrySet()) {
            Http.Reply r = Http.post(server, "/v1/chat/completions", c.getKey());
            assertError(r, 400, c.getValue());
        }
    }

    @Test
    void notJsonTrailingGarbageAndDuplicateKeysAreRefused() {
        for (String body : new String[] {"", "null", "[]", "\"text\"", "{", "{\"model\": \"scripted\"} x",
                "{\"model\": \"scripted\", \"model\": \"scripted\", \"messages\": " + user("hi") + "}", "\u0000"}) {
            assertError(Http.post(server, "/v1/chat/completions", body), 400, null);
        }
    }

    @Test
    void aPromptLongerThanTheModelIsA400() {
        String longPrompt = "x ".repeat(3000); // two tokens per "x " (byte pieces), over 2048 positions
        Http.Reply r = Http.post(server, "/v1/chat/completions", chat(user(longPrompt), ""));
        assertError(r, 400, "messages");
        assertThat(r.json().at("/error/code").asText()).isEqualTo("context_length_exceeded");
    }

    @Test
    void afterAllOfItTheServerStillAnswers() {
        wrongTypesAndValuesNameTheField();
        invalidUtf8IsRefused();
        Http.Reply ok = Http.post(server, "/v1/chat/completions", chat(user("hi"), "\"temperature\": 0"));
        assertThat(ok.json().at("/choices/0/message/content").asText()).isEqualTo(ScriptedModel.HELLO);
        assertThat(Http.metric(server, "bigmodel_active_sessions")).isZero();
        assertThat(Http.metric(server, "bigmodel_kv_cache_bytes")).isZero();
        assertThat(Http.get(server, "/metrics").body()).contains("bigmodel_requests_total{code=\"400\"}");
    }
}
