package io.github.bigmodel.langchain4j;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.langchain4j.agent.tool.P;
import dev.langchain4j.agent.tool.Tool;
import dev.langchain4j.agent.tool.ToolExecutionRequest;
import dev.langchain4j.agent.tool.ToolSpecification;
import dev.langchain4j.data.message.AiMessage;
import dev.langchain4j.data.message.ChatMessage;
import dev.langchain4j.data.message.SystemMessage;
import dev.langchain4j.data.message.ToolExecutionResultMessage;
import dev.langchain4j.data.message.UserMessage;
import dev.langchain4j.exception.UnsupportedFeatureException;
import dev.langchain4j.model.chat.request.ChatRequest;
import dev.langchain4j.model.chat.request.ToolChoice;
import dev.langchain4j.model.chat.request.json.JsonObjectSchema;
import dev.langchain4j.model.chat.response.ChatResponse;
import dev.langchain4j.model.chat.response.StreamingChatResponseHandler;
import dev.langchain4j.model.output.FinishReason;
import dev.langchain4j.service.AiServices;
import io.github.bigmodel.chatglm.model.ScriptedCheckpoint;
import io.github.bigmodel.chatglm.chat.ChatGLM;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The adapters over a scripted ChatGLM3 whose greedy replies are known, tool calls included. */
class ChatGlmLangChain4jTest {

    static final String HELLO = "Hello from a scripted model.";
    static final String WEATHER = "Sunny, 25 degrees.";

    @TempDir
    static Path dir;
    private static ChatGLM glm;

    @BeforeAll
    static void load() {
        ScriptedCheckpoint.builder()
                .reply("\n" + HELLO)
                .replyWhen("<|observation|>", "\n" + WEATHER)
                .loopWhen("forever", "\nla", " la")
                .toolCallWhen(ChatGLM.TOOL_SYSTEM_PROMPT, "get_weather", "tool_call(city='Beijing', days=2)")
                .write(dir);
        glm = ChatGLM.load(dir);
    }

    @AfterAll
    static void close() {
        glm.close();
    }

    interface Assistant {
        String chat(String message);
    }

    static final class WeatherTools {
        final List<String> calls = new CopyOnWriteArrayList<>();

        @Tool(name = "get_weather", value = "The weather in a city")
        String weather(@P(name = "city", value = "the city") String city,
                       @P(name = "days", value = "days ahead") int days) {
            calls.add(city + "/" + days);
            return "{\"sky\": \"clear\"}";
        }
    }

    private static ChatGlmChatModel greedy() {
        return ChatGlmChatModel.builder().chatGlm(glm).modelName("scripted").temperature(0.0).build();
    }

    @Test
    void aiServicesCompleteAToolLoopInProcess() {
        WeatherTools tools = new WeatherTools();
        Assistant assistant = AiServices.builder(Assistant.class).chatModel(greedy()).tools(tools).build();
        assertThat(assistant.chat("What is the weather in Beijing?")).isEqualTo(WEATHER);
        assertThat(tools.calls).containsExactly("Beijing/2");
    }

    @Test
    void toolSpecificationsBecomeToolCallsWithUsageAndFinishReasons() {
        ToolSpecification spec = ToolSpecification.builder().name("get_weather").description("weather")
                .parameters(JsonObjectSchema.builder().addStringProperty("city").addIntegerProperty("days")
                        .required("city").build()).build();
        List<ChatMessage> messages = new ArrayList<>(List.of(SystemMessage.from("Be brief."),
                UserMessage.from("Weather?")));
        ChatResponse first = greedy().chat(ChatRequest.builder().messages(messages).toolSpecifications(spec).build());
        assertThat(first.finishReason()).isEqualTo(FinishReason.TOOL_EXECUTION);
        ToolExecutionRequest call = first.aiMessage().toolExecutionRequests().get(0);
        assertThat(call.name()).isEqualTo("get_weather");
        assertThat(call.arguments()).isEqualTo("{\"city\":\"Beijing\",\"days\":2}");
        assertThat(call.id()).startsWith("call_");
        assertThat(first.tokenUsage().outputTokenCount()).isEqualTo(4);
        assertThat(first.tokenUsage().inputTokenCount()).isGreaterThan(20);
        assertThat(first.modelName()).isEqualTo("scripted");

        messages.add(first.aiMessage());
        messages.add(ToolExecutionResultMessage.from(call, "{\"sky\": \"clear\"}"));
        ChatResponse second = greedy().chat(ChatRequest.builder().messages(messages).toolSpecifications(spec).build());
        assertThat(second.aiMessage().text()).isEqualTo(WEATHER);
        assertThat(second.finishReason()).isEqualTo(FinishReason.STOP);
        assertThat(second.tokenUsage().outputTokenCount()).isEqualTo(3);

        ChatResponse none = greedy().chat(ChatRequest.builder().messages(UserMessage.from("Weather?"))
                .toolSpecifications(spec).toolChoice(ToolChoice.NONE).build());
        assertThat(none.aiMessage().text()).isEqualTo(HELLO);
        assertThat(none.aiMessage().hasToolExecutionRequests()).isFalse();
    }

    @Test
    void parametersLimitStopAndRefuseWhatChatGlmLacks() {
        ChatResponse cut = ChatGlmChatModel.builder().chatGlm(glm).temperature(0.0).maxOutputTokens(2).build()
                .chat(UserMessage.from("hi"));
        assertThat(cut.aiMessage().text()).isEqualTo("Hello from");
        assertThat(cut.finishReason()).isEqualTo(FinishReason.LENGTH);
        ChatResponse stopped = ChatGlmChatModel.builder().chatGlm(glm).temperature(0.0)
                .stopSequences(List.of("scripted")).build().chat(UserMessage.from("hi"));
        assertThat(stopped.aiMessage().text()).isEqualTo("Hello from a ");
        assertThat(stopped.finishReason()).isEqualTo(FinishReason.STOP);
        ChatGlmChatModel seeded = ChatGlmChatModel.builder().chatGlm(glm).temperature(1.2).seed(7L)
                .maxOutputTokens(30).build();
        assertThat(seeded.chat(UserMessage.from("sing forever")).aiMessage().text())
                .isEqualTo(seeded.chat(UserMessage.from("sing forever")).aiMessage().text());
        assertThatThrownBy(() -> greedy().chat(ChatRequest.builder().messages(UserMessage.from("hi"))
                .presencePenalty(0.5).build())).isInstanceOf(UnsupportedFeatureException.class);
        assertThatThrownBy(() -> greedy().chat(ChatRequest.builder().messages(UserMessage.from("hi"),
                AiMessage.from("x")).build())).isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("last message");
        assertThatThrownBy(() -> ChatGlmChatModel.builder().build()).isInstanceOf(IllegalArgumentException.class);
    }

    @Test
    void theStreamingModelSendsPartialsThenTheResponse() throws Exception {
        ChatGlmStreamingChatModel model = ChatGlmStreamingChatModel.builder().chatGlm(glm).temperature(0.0).build();
        List<String> partials = new CopyOnWriteArrayList<>();
        ChatResponse response = stream(model, ChatRequest.builder().messages(UserMessage.from("hi")).build(),
                partials);
        assertThat(partials).containsExactly("Hello", " from", " a", " scripted", " model.");
        assertThat(response.aiMessage().text()).isEqualTo(HELLO);
        assertThat(response.finishReason()).isEqualTo(FinishReason.STOP);
        assertThat(response.tokenUsage().totalTokenCount())
                .isEqualTo(glm.promptIds("hi", List.of(), "user").length + 5);

        partials.clear();
        ToolSpecification spec = ToolSpecification.builder().name("get_weather").build();
        ChatResponse call = stream(model, ChatRequest.builder().messages(UserMessage.from("Weather?"))
                .toolSpecifications(spec).build(), partials);
        assertThat(partials).isEmpty();
        assertThat(call.aiMessage().toolExecutionRequests()).hasSize(1);
        assertThat(call.finishReason()).isEqualTo(FinishReason.TOOL_EXECUTION);

        CompletableFuture<Throwable> error = new CompletableFuture<>();
        model.chat(ChatRequest.builder().messages(UserMessage.from("x")).frequencyPenalty(1.0).build(),
                new StreamingChatResponseHandler() {
                    @Override
                    public void onCompleteResponse(ChatResponse r) {
                        error.complete(null);
                    }

                    @Override
                    public void onError(Throwable t) {
                        error.complete(t);
                    }
                });
        assertThat(error.get(30, TimeUnit.SECONDS)).isInstanceOf(UnsupportedFeatureException.class);
    }

    private static ChatResponse stream(ChatGlmStreamingChatModel model, ChatRequest request, List<String> partials)
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
