package io.github.bigmodel.server;

import static io.github.bigmodel.server.Http.chat;
import static io.github.bigmodel.server.Http.user;
import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import io.github.bigmodel.chatglm.chat.ChatGLM;
import io.github.bigmodel.chatglm.chat.ChatMessage;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/** Request and response shapes of every supported field, against the scripted model's known replies. */
class ChatCompletionsTest {

    static final String TOOLS = "\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", "
            + "\"description\": \"Current weather\", \"parameters\": {\"type\": \"object\", \"properties\": "
            + "{\"city\": {\"type\": \"string\"}, \"unit\": {\"type\": \"string\"}}, \"required\": [\"city\"]}}}, "
            + "{\"type\": \"function\", \"function\": {\"name\": \"get_time\", \"parameters\": {\"type\": "
            + "\"object\", \"properties\": {}}}}]";
    static final String GREEDY = "\"temperature\": 0";

    private static OpenAiServer server;

    @BeforeAll
    static void start() {
        server = ScriptedModel.server(b -> { });
    }

    @AfterAll
    static void stop() {
        server.close();
    }

    @Test
    void aCompletionHasOpenAisShapeAndTheModelsReply() {
        Http.Reply r = Http.post(server, "/v1/chat/completions", chat(user("hi"), GREEDY));
        assertThat(r.status()).isEqualTo(200);
        assertThat(r.headers().firstValue("Content-Type")).hasValue("application/json");
        JsonNode j = r.json();
        assertThat(j.get("id").asText()).startsWith("chatcmpl-");
        assertThat(j.get("object").asText()).isEqualTo("chat.completion");
        assertThat(j.get("model").asText()).isEqualTo("scripted");
        assertThat(j.get("created").asLong()).isPositive();
        JsonNode choice = j.get("choices").get(0);
        assertThat(j.get("choices")).hasSize(1);
        assertThat(choice.get("index").asInt()).isZero();
        assertThat(choice.get("message").get("role").asText()).isEqualTo("assistant");
        assertThat(choice.get("message").get("content").asText()).isEqualTo(ScriptedModel.HELLO);
        assertThat(choice.get("message").has("tool_calls")).isFalse();
        assertThat(choice.get("finish_reason").asText()).isEqualTo("stop");
        int prompt = ScriptedModel.glm().promptIds("hi", List.of(), "user").length;
        JsonNode usage = j.get("usage");
        assertThat(usage.get("prompt_tokens").asInt()).isEqualTo(prompt);
        // "\nHello", " from", " a", " scripted", " model." (the stop token is not counted)
        assertThat(usage.get("completion_tokens").asInt()).isEqualTo(5);
        assertThat(usage.get("total_tokens").asInt()).isEqualTo(prompt + 5);
    }

    @Test
    void aStreamSendsRoleThenContentDeltasThenFinishThenUsageThenDone() {
        Http.Reply r = Http.post(server, "/v1/chat/completions", chat(user("apple, tell me about it"),
                GREEDY + ", \"stream\": true, \"stream_options\": {\"include_usage\": true}"));
        assertThat(r.status()).isEqualTo(200);
        assertThat(r.headers().firstValue("Content-Type").orElse("")).startsWith("text/event-stream");
        List<String> events = r.events();
        assertThat(events.get(events.size() - 1)).isEqualTo("[DONE]");
        List<JsonNode> chunks = r.chunks();
        assertThat(chunks.size()).isEqualTo(events.size() - 1);
        String id = chunks.get(0).get("id").asText();
        for (JsonNode c : chunks) {
            assertThat(c.get("id").asText()).isEqualTo(id);
            assertThat(c.get("object").asText()).isEqualTo("chat.completion.chunk");
            assertThat(c.get("model").asText()).isEqualTo("scripted");
            assertThat(c.has("usage")).isTrue();
        }
        JsonNode first = chunks.get(0).get("choices").get(0);
        assertThat(first.get("delta").get("role").asText()).isEqualTo("assistant");
        assertThat(first.get("finish_reason").isNull()).isTrue();
        assertThat(r.streamedText()).isEqualTo(ScriptedModel.APPLE);
        // "Apples", " are", " red.": one delta per token after the first line.
        List<JsonNode> content = chunks.stream().filter(c -> c.path("choices").path(0).path("delta")
                .path("content").asText("").length() > 0).toList();
        assertThat(content).hasSize(3);
        JsonNode finish = chunks.get(chunks.size() - 2);
        assertThat(finish.get("choices").get(0).get("finish_reason").asText()).isEqualTo("stop");
        assertThat(finish.get("choices").get(0).get("delta").size()).isZero();
        assertThat(finish.get("usage").isNull()).isTrue();
        JsonNode usage = chunks.get(chunks.size() - 1);
        assertThat(usage.get("choices")).isEmpty();
        assertThat(usage.get("usage").get("completion_tokens").asInt()).isEqualTo(3);
        assertThat(usage.get("usage").get("prompt_tokens").asInt())
                .isEqualTo(ScriptedModel.glm().promptIds("apple, tell me about it", List.of(), "user").length);
    }

    @Test
    void withoutIncludeUsageChunksCarryNoUsage() {
        Http.Reply r = Http.post(server, "/v1/chat/completions", chat(user("banana?"), GREEDY + ", \"stream\": true"));
        assertThat(r.streamedText()).isEqualTo(ScriptedModel.BANANA);
        assertThat(r.chunks()).allSatisfy(c -> assertThat(c.has("usage")).isFalse());
    }

    @Test
    void maxTokensCutsTheReplyWithFinishReasonLength() {
        for (String field : List.of("max_tokens", "max_completion_tokens")) {
            JsonNode j = Http.post(server, "/v1/chat/completions", chat(user("hi"), GREEDY + ", \"" + field
                    + "\": 2")).json();
            assertThat(j.at("/choices/0/message/content").asText()).isEqualTo("Hello from");
            assertThat(j.at("/choices/0/finish_reason").asText()).isEqualTo("length");
            assertThat(j.at("/usage/completion_tokens").asInt()).isEqualTo(2);
        }
        Http.Reply s = Http.post(server, "/v1/chat/completions", chat(user("sing forever"),
                GREEDY + ", \"stream\": true, \"max_tokens\": 7"));
        assertThat(s.streamedText()).isEqualTo("la la la la la la la");
        assertThat(s.chunks().get(s.chunks().size() - 1).at("/choices/0/finish_reason").asText()).isEqualTo("length");
    }

    @Test
    void stopStringsEndTheReplyBeforeThemInBothModes() {
        JsonNode j = Http.post(server, "/v1/chat/completions", chat(user("hi"), GREEDY + ", \"stop\": "
                + "[\"scripted\", \"zzz\"]")).json();
        assertThat(j.at("/choices/0/message/content").asText()).isEqualTo("Hello from a ");
        assertThat(j.at("/choices/0/finish_reason").asText()).isEqualTo("stop");
        Http.Reply s = Http.post(server, "/v1/chat/completions", chat(user("hi"), GREEDY
                + ", \"stream\": true, \"stop\": \"a scr\""));
        assertThat(s.streamedText()).isEqualTo("Hello from ");
        Http.Reply never = Http.post(server, "/v1/chat/completions", chat(user("hi"), GREEDY
                + ", \"stream\": true, \"stop\": \"model.!\""));
        assertThat(never.streamedText()).isEqualTo(ScriptedModel.HELLO);
    }

    @Test
    void samplingSettingsAreAcceptedAndASeedRepeats() {
        String body = chat(user("sing forever"), "\"temperature\": 1.3, \"top_p\": 1, \"seed\": 1234, "
                + "\"max_tokens\": 60, \"n\": 1, \"frequency_penalty\": 0, \"presence_penalty\": 0, \"user\": \"x\"");
        JsonNode a = Http.post(server, "/v1/chat/completions", body).json();
        JsonNode b = Http.post(server, "/v1/chat/completions", body).json();
        assertThat(a.at("/choices/0/message/content").asText())
                .isEqualTo(b.at("/choices/0/message/content").asText());
        assertThat(a.at("/usage/completion_tokens").asInt()).isEqualTo(b.at("/usage/completion_tokens").asInt())
                .isBetween(1, 60);
    }

    @Test
    void moreThanOneChoiceIsRefused() {
        Http.Reply r = Http.post(server, "/v1/chat/completions", chat(user("hi"), "\"n\": 2"));
        assertThat(r.status()).isEqualTo(400);
        assertThat(r.json().at("/error/param").asText()).isEqualTo("n");
        assertThat(r.json().at("/error/type").asText()).isEqualTo("invalid_request_error");
    }

    @Test
    void aToolCallComesBackAsToolCallsWithJsonArguments() throws Exception {
        JsonNode j = Http.post(server, "/v1/chat/completions", chat(user("Weather in Beijing?"), GREEDY + ", "
                + TOOLS)).json();
        JsonNode message = j.at("/choices/0/message");
        assertThat(j.at("/choices/0/finish_reason").asText()).isEqualTo("tool_calls");
        assertThat(message.get("content").isNull()).isTrue();
        JsonNode call = message.get("tool_calls").get(0);
        assertThat(message.get("tool_calls")).hasSize(1);
        assertThat(call.get("id").asText()).startsWith("call_");
        assertThat(call.get("type").asText()).isEqualTo("function");
        assertThat(call.at("/function/name").asText()).isEqualTo("get_weather");
        assertThat(Http.JSON.readTree(call.at("/function/arguments").asText()))
                .isEqualTo(Http.JSON.readTree("{\"city\": \"Beijing\", \"unit\": \"celsius\"}"));
        // "get_weather\n", "```python\n", the call, "\n```"
        assertThat(j.at("/usage/completion_tokens").asInt()).isEqualTo(4);
    }

    @Test
    void aStreamedToolCallIsIndexedToolCallDeltas() throws Exception {
        Http.Reply r = Http.post(server, "/v1/chat/completions", chat(user("Weather in Beijing?"), GREEDY + ", "
                + TOOLS + ", \"stream\": true"));
        assertThat(r.streamedText()).isEmpty();
        StringBuilder args = new StringBuilder();
        String name = null;
        String id = null;
        for (JsonNode c : r.chunks()) {
            for (JsonNode tc : c.at("/choices/0/delta/tool_calls")) {
                assertThat(tc.get("index").asInt()).isZero();
                if (tc.has("id")) {
                    id = tc.get("id").asText();
                    name = tc.at("/function/name").asText();
                    assertThat(tc.get("type").asText()).isEqualTo("function");
                }
                args.append(tc.at("/function/arguments").asText());
            }
        }
        assertThat(id).startsWith("call_");
        assertThat(name).isEqualTo("get_weather");
        assertThat(Http.JSON.readTree(args.toString()))
                .isEqualTo(Http.JSON.readTree("{\"city\": \"Beijing\", \"unit\": \"celsius\"}"));
        List<JsonNode> chunks = r.chunks();
        assertThat(chunks.get(chunks.size() - 1).at("/choices/0/finish_reason").asText()).isEqualTo("tool_calls");
    }

    @Test
    void aToolResultBecomesAnObservationAndTheModelAnswers() {
        String messages = "[{\"role\": \"system\", \"content\": \"Be brief.\"}, "
                + "{\"role\": \"user\", \"content\": \"Weather in Beijing?\"}, "
                + "{\"role\": \"assistant\", \"content\": null, \"tool_calls\": [{\"id\": \"call_1\", \"type\": "
                + "\"function\", \"function\": {\"name\": \"get_weather\", \"arguments\": "
                + "\"{\\\"city\\\": \\\"Beijing\\\", \\\"unit\\\": \\\"celsius\\\"}\"}}]}, "
                + "{\"role\": \"tool\", \"tool_call_id\": \"call_1\", \"content\": \"{\\\"sky\\\": \\\"clear\\\"}\"}]";
        JsonNode j = Http.post(server, "/v1/chat/completions", chat(messages, GREEDY + ", " + TOOLS)).json();
        assertThat(j.at("/choices/0/message/content").asText()).isEqualTo(ScriptedModel.WEATHER);
        assertThat(j.at("/choices/0/finish_reason").asText()).isEqualTo("stop");
    }

    @Test
    void theToolHistoryIsWrittenAsThudmsPrompt() throws Exception {
        String body = chat("[{\"role\": \"system\", \"content\": \"Be brief.\"}, "
                + "{\"role\": \"user\", \"content\": \"Weather?\"}, "
                + "{\"role\": \"assistant\", \"tool_calls\": [{\"id\": \"c\", \"type\": \"function\", \"function\": "
                + "{\"name\": \"get_weather\", \"arguments\": \"{\\\"city\\\": \\\"O'Hare\\\\n\\\", \\\"days\\\": 2, "
                + "\\\"metric\\\": true, \\\"extra\\\": null, \\\"tags\\\": [1.5, \\\"x\\\"]}\"}}]}, "
                + "{\"role\": \"tool\", \"tool_call_id\": \"c\", \"content\": \"rain\"}]", TOOLS);
        CompletionRequest req = CompletionRequest.parse(Http.JSON.readTree(body), Http.JSON);
        Conversation c = Conversation.of(req, ScriptedModel.glm().format(), Http.JSON);
        JsonNode functions = Http.JSON.readTree("[{\"name\": \"get_weather\", \"description\": \"Current weather\", "
                + "\"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}, "
                + "\"unit\": {\"type\": \"string\"}}, \"required\": [\"city\"]}}, {\"name\": \"get_time\", "
                + "\"parameters\": {\"type\": \"object\", \"properties\": {}}}]");
        List<ChatMessage> expected = new ArrayList<>();
        expected.add(ChatGLM.toolSystemMessage(functions));
        expected.add(ChatMessage.of("system", "Be brief."));
        expected.add(ChatMessage.of("user", "Weather?"));
        expected.add(new ChatMessage("assistant", "```python\ntool_call(city='O\\'Hare\\n', days=2, metric=True, "
                + "extra=None, tags=[1.5, 'x'])\n```", "get_weather", null));
        assertThat(c.history()).isEqualTo(expected);
        assertThat(c.query()).isEqualTo("rain");
        assertThat(c.role()).isEqualTo("observation");
        assertThat(c.toolsActive()).isTrue();
    }

    @Test
    void toolChoiceNoneHidesTheToolsAndANamedChoiceKeepsOnlyThatFunction() throws Exception {
        JsonNode none = Http.post(server, "/v1/chat/completions", chat(user("Weather?"), GREEDY + ", " + TOOLS
                + ", \"tool_choice\": \"none\"")).json();
        assertThat(none.at("/choices/0/message/content").asText()).isEqualTo(ScriptedModel.HELLO);
        String named = chat(user("Weather?"), TOOLS + ", \"tool_choice\": {\"type\": \"function\", \"function\": "
                + "{\"name\": \"get_weather\"}}");
        Conversation c = Conversation.of(CompletionRequest.parse(Http.JSON.readTree(named), Http.JSON),
                ScriptedModel.glm().format(), Http.JSON);
        assertThat(c.history().get(0).tools()).hasSize(1);
        assertThat(c.history().get(0).tools().get(0).get("name").asText()).isEqualTo("get_weather");
        JsonNode call = Http.post(server, "/v1/chat/completions", named.replace("\"messages\"",
                GREEDY + ", \"messages\"")).json();
        assertThat(call.at("/choices/0/finish_reason").asText()).isEqualTo("tool_calls");
        Http.Reply unknown = Http.post(server, "/v1/chat/completions", chat(user("x"), TOOLS
                + ", \"tool_choice\": {\"type\": \"function\", \"function\": {\"name\": \"nope\"}}"));
        assertThat(unknown.status()).isEqualTo(400);
        assertThat(unknown.json().at("/error/param").asText()).isEqualTo("tool_choice");
    }

    @Test
    void olderModelsRefuseToolsSystemAndToolMessages() throws Exception {
        for (var format : List.of(io.github.bigmodel.chatglm.chat.ChatFormat.CHATGLM2,
                io.github.bigmodel.chatglm.chat.ChatFormat.CHATGLM_6B)) {
            CompletionRequest withTools = CompletionRequest.parse(Http.JSON.readTree(chat(user("x"), TOOLS)),
                    Http.JSON);
            org.assertj.core.api.Assertions.assertThatThrownBy(() -> Conversation.of(withTools, format, Http.JSON))
                    .isInstanceOfSatisfying(ApiException.class, e -> {
                        assertThat(e.status).isEqualTo(400);
                        assertThat(e.param).isEqualTo("tools");
                        assertThat(e.getMessage()).contains("ChatGLM3");
                    });
            CompletionRequest system = CompletionRequest.parse(Http.JSON.readTree(chat("[{\"role\": \"system\", "
                    + "\"content\": \"s\"}, {\"role\": \"user\", \"content\": \"u\"}]", "")), Http.JSON);
            org.assertj.core.api.Assertions.assertThatThrownBy(() -> Conversation.of(system, format, Http.JSON))
                    .isInstanceOf(ApiException.class).hasMessageContaining("only user and assistant");
            CompletionRequest pairs = CompletionRequest.parse(Http.JSON.readTree(chat("[{\"role\": \"user\", "
                    + "\"content\": \"a\"}, {\"role\": \"assistant\", \"content\": \"b\"}, {\"role\": \"user\", "
                    + "\"content\": \"c\"}]", "")), Http.JSON);
            assertThat(Conversation.of(pairs, format, Http.JSON).history())
                    .containsExactly(ChatMessage.of("user", "a"), ChatMessage.of("assistant", "b"));
        }
    }

    @Test
    void modelsHealthAndMetrics() {
        JsonNode models = Http.get(server, "/v1/models").json();
        assertThat(models.get("object").asText()).isEqualTo("list");
        assertThat(models.at("/data/0/id").asText()).isEqualTo("scripted");
        assertThat(models.at("/data/0/object").asText()).isEqualTo("model");
        assertThat(models.at("/data/0/owned_by").asText()).isEqualTo("bigmodel");
        assertThat(Http.get(server, "/v1/models/scripted").json().get("id").asText()).isEqualTo("scripted");
        Http.Reply missing = Http.get(server, "/v1/models/gpt-4");
        assertThat(missing.status()).isEqualTo(404);
        assertThat(missing.json().at("/error/code").asText()).isEqualTo("model_not_found");

        JsonNode health = Http.get(server, "/health").json();
        assertThat(health.get("status").asText()).isEqualTo("ok");
        assertThat(health.get("model").asText()).isEqualTo("scripted");

        double before = Http.metric(server, "bigmodel_completion_tokens_total");
        Http.post(server, "/v1/chat/completions", chat(user("hi"), GREEDY));
        assertThat(Http.metric(server, "bigmodel_completion_tokens_total")).isEqualTo(before + 6); // 5 + stop id
        String metrics = Http.get(server, "/metrics").body();
        assertThat(metrics).contains("# TYPE bigmodel_requests_total counter", "bigmodel_requests_total{code=\"200\"}",
                "bigmodel_prompt_tokens_total ", "bigmodel_tokens_per_second ", "bigmodel_queue_depth 0",
                "bigmodel_active_sessions 0", "bigmodel_kv_cache_bytes 0");
        JsonNode info = Http.get(server, "/api/model").json();
        assertThat(info.get("format").asText()).isEqualTo("CHATGLM3");
        assertThat(info.get("device_map").get("").asText()).isEqualTo("cpu");
        assertThat(info.get("memory_report").asText()).isNotBlank();
        assertThat(Http.get(server, "/").body()).contains("<title>bigmodel chat</title>");
    }

    @Test
    void unknownModelsPathsAndMethodsGetOpenAiErrors() {
        Http.Reply model = Http.post(server, "/v1/chat/completions",
                "{\"model\": \"gpt-4o\", \"messages\": " + user("x") + "}");
        assertThat(model.status()).isEqualTo(404);
        assertThat(model.json().at("/error/param").asText()).isEqualTo("model");
        assertThat(model.json().at("/error/message").asText()).contains("gpt-4o", "scripted");
        Http.Reply path = Http.get(server, "/v1/completions");
        assertThat(path.status()).isEqualTo(404);
        assertThat(path.json().at("/error/code").asText()).isEqualTo("not_found");
        Http.Reply method = Http.get(server, "/v1/chat/completions");
        assertThat(method.status()).isEqualTo(405);
        assertThat(method.json().get("error").has("message")).isTrue();
    }

    @Test
    void anApiKeyGuardsTheApiButNotHealth() {
        try (OpenAiServer guarded = ScriptedModel.server(b -> b.apiKey("s3cret"))) {
            Http.Reply none = Http.post(guarded, "/v1/chat/completions", chat(user("hi"), GREEDY));
            assertThat(none.status()).isEqualTo(401);
            assertThat(none.json().at("/error/code").asText()).isEqualTo("invalid_api_key");
            assertThat(Http.post(guarded, "/v1/chat/completions", chat(user("hi"), GREEDY), "Authorization",
                    "Bearer wrong").status()).isEqualTo(401);
            assertThat(Http.get(guarded, "/v1/models").status()).isEqualTo(401);
            Http.Reply ok = Http.post(guarded, "/v1/chat/completions", chat(user("hi"), GREEDY), "Authorization",
                    "Bearer s3cret");
            assertThat(ok.json().at("/choices/0/message/content").asText()).isEqualTo(ScriptedModel.HELLO);
            assertThat(Http.get(guarded, "/health").status()).isEqualTo(200);
        }
    }
}
