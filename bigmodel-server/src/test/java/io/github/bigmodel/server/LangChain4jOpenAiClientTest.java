package io.github.bigmodel.server;

import static org.assertj.core.api.Assertions.assertThat;

import dev.langchain4j.agent.tool.P;
import dev.langchain4j.agent.tool.Tool;
import dev.langchain4j.agent.tool.ToolExecutionRequest;
import dev.langchain4j.agent.tool.ToolSpecification;
import dev.langchain4j.data.message.AiMessage;
import dev.langchain4j.data.message.ChatMessage;
import dev.langchain4j.data.message.ToolExecutionResultMessage;
import dev.langchain4j.data.message.UserMessage;
import dev.langchain4j.model.chat.request.ChatRequest;
import dev.langchain4j.model.chat.request.json.JsonObjectSchema;
import dev.langchain4j.model.chat.response.ChatResponse;
import dev.langchain4j.model.chat.response.StreamingChatResponseHandler;
import dev.langchain4j.model.openai.OpenAiChatModel;
import dev.langchain4j.model.openai.OpenAiStreamingChatModel;
import dev.langchain4j.model.output.FinishReason;
import dev.langchain4j.service.AiServices;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * LangChain4j's own OpenAI client (a client nobody here wrote) completes a tool loop against the server: the
 * scripted model calls get_weather, LangChain4j runs the Java method, sends the result back as a tool message,
 * and the model answers.
 */
class LangChain4jOpenAiClientTest {

    private static OpenAiServer server;

    @BeforeAll
    static void start() {
        server = ScriptedModel.server(b -> b.apiKey("test-key"));
    }

    @AfterAll
    static void stop() {
        server.close();
    }

    interface Assistant {
        String chat(String message);
    }

    static final class WeatherTools {
        final List<String> calls = new CopyOnWriteArrayList<>();

        @Tool(name = "get_weather", value = "The current weather in a city")
        String weather(@P(name = "city", value = "the city") String city,
                       @P(name = "unit", value = "celsius or fahrenheit") String unit) {
            calls.add(city + "/" + unit);
            return "{\"sky\": \"clear\", \"temperature\": 25}";
        }
    }

    private static OpenAiChatModel.OpenAiChatModelBuilder chatModel() {
        return OpenAiChatModel.builder().baseUrl(server.baseUrl() + "/v1").apiKey("test-key").modelName("scripted")
                .temperature(0.0).timeout(Duration.ofSeconds(60));
    }

    @Test
    void aiServicesRunAToolLoopOverHttp() {
        WeatherTools tools = new WeatherTools();
        Assistant assistant = AiServices.builder(Assistant.class).chatModel(chatModel().build()).tools(tools).build();
        String answer = assistant.chat("What is the weather in Beijing?");
        assertThat(tools.calls).containsExactly("Beijing/celsius");
        assertThat(answer).isEqualTo(ScriptedModel.WEATHER);
    }

    @Test
    void theChatModelReportsToolCallsUsageAndFinishReasons() {
        OpenAiChatModel model = chatModel().build();
        ToolSpecification spec = ToolSpecification.builder().name("get_weather").description("weather")
                .parameters(JsonObjectSchema.builder().addStringProperty("city").addStringProperty("unit")
                        .required("city").build()).build();
        List<ChatMessage> messages = new ArrayList<>(List.of(UserMessage.from("Weather in Beijing?")));
        ChatResponse first = model.chat(ChatRequest.builder().messages(messages).toolSpecifications(spec).build());
        assertThat(first.finishReason()).isEqualTo(FinishReason.TOOL_EXECUTION);
        ToolExecutionRequest call = first.aiMessage().toolExecutionRequests().get(0);
        assertThat(call.name()).isEqualTo("get_weather");
        assertThat(call.arguments()).isEqualTo("{\"city\":\"Beijing\",\"unit\":\"celsius\"}");
        assertThat(first.tokenUsage().outputTokenCount()).isEqualTo(4);
        assertThat(first.tokenUsage().inputTokenCount()).isPositive();

        messages.add(first.aiMessage());
        messages.add(ToolExecutionResultMessage.from(call, "{\"sky\": \"clear\"}"));
        ChatResponse second = model.chat(ChatRequest.builder().messages(messages).toolSpecifications(spec).build());
        assertThat(second.aiMessage().text()).isEqualTo(ScriptedModel.WEATHER);
        assertThat(second.finishReason()).isEqualTo(FinishReason.STOP);
        assertThat(second.tokenUsage().outputTokenCount()).isEqualTo(3); // "\nSunny,", " 25", " degrees."
    }

    @Test
    void theStreamingClientGetsAToolCallThenStreamedText() throws Exception {
        OpenAiStreamingChatModel model = OpenAiStreamingChatModel.builder().baseUrl(server.baseUrl() + "/v1")
                .apiKey("test-key").modelName("scripted").temperature(0.0).timeout(Duration.ofSeconds(60)).build();
        ToolSpecification spec = ToolSpecification.builder().name("get_weather")
                .parameters(JsonObjectSchema.builder().addStringProperty("city").build()).build();
        List<ChatMessage> messages = new ArrayList<>(List.of(UserMessage.from("Weather in Beijing?")));
        List<String> partials = new CopyOnWriteArrayList<>();
        ChatResponse first = stream(model, ChatRequest.builder().messages(messages).toolSpecifications(spec).build(),
                partials);
        assertThat(first.finishReason()).isEqualTo(FinishReason.TOOL_EXECUTION);
        AiMessage ai = first.aiMessage();
        assertThat(ai.toolExecutionRequests()).hasSize(1);
        assertThat(ai.toolExecutionRequests().get(0).name()).isEqualTo("get_weather");
        assertThat(partials).isEmpty();

        messages.add(ai);
        messages.add(ToolExecutionResultMessage.from(ai.toolExecutionRequests().get(0), "clear"));
        ChatResponse second = stream(model, ChatRequest.builder().messages(messages).toolSpecifications(spec).build(),
                partials);
        assertThat(String.join("", partials)).isEqualTo(ScriptedModel.WEATHER);
        assertThat(partials).hasSizeGreaterThan(1);
        assertThat(second.aiMessage().text()).isEqualTo(ScriptedModel.WEATHER);
        assertThat(second.finishReason()).isEqualTo(FinishReason.STOP);
    }

    private static ChatResponse stream(OpenAiStreamingChatModel model, ChatRequest request, List<String> partials)
            throws Exception {
        CompletableFuture<ChatResponse> done = new CompletableFuture<>();
        model.chat(request, new StreamingChatResponseHandler() {
            @Override
            public void onPartialResponse(String partial) {
                partials.add(partial);
            }

            @Override
            public void onCompleteResponse(ChatResponse response) {
                done.complete(response);
            }

            @Override
            public void onError(Throwable error) {
                done.completeExceptionally(error);
            }
        });
        return done.get(60, TimeUnit.SECONDS);
    }
}
