package io.github.bigmodel.langchain4j;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.langchain4j.agent.tool.ToolExecutionRequest;
import dev.langchain4j.agent.tool.ToolSpecification;
import dev.langchain4j.data.message.AiMessage;
import dev.langchain4j.data.message.Content;
import dev.langchain4j.data.message.SystemMessage;
import dev.langchain4j.data.message.TextContent;
import dev.langchain4j.data.message.ToolExecutionResultMessage;
import dev.langchain4j.data.message.UserMessage;
import dev.langchain4j.exception.UnsupportedFeatureException;
import dev.langchain4j.internal.JsonSchemaElementJsonUtils;
import dev.langchain4j.model.chat.request.ChatRequest;
import dev.langchain4j.model.chat.request.ChatRequestParameters;
import dev.langchain4j.model.chat.request.ResponseFormatType;
import dev.langchain4j.model.chat.request.ToolChoice;
import dev.langchain4j.model.chat.response.ChatResponse;
import dev.langchain4j.model.output.FinishReason;
import dev.langchain4j.model.output.TokenUsage;
import io.github.bigmodel.chatglm.chat.ChatFormat;
import io.github.bigmodel.chatglm.chat.ChatGLM;
import io.github.bigmodel.chatglm.chat.ChatOptions;
import io.github.bigmodel.chatglm.chat.ChatStream;
import io.github.bigmodel.chatglm.chat.StopStrings;
import io.github.bigmodel.chatglm.chat.ToolCallWriter;
import io.github.bigmodel.chatglm.generation.GenerationConfig;
import io.github.bigmodel.chatglm.chat.AssistantReply;
import io.github.bigmodel.chatglm.tokenizer.ChatGLM3Tokenizer;
import io.github.bigmodel.chatglm.chat.ChatMessage;
import io.github.bigmodel.chatglm.tokenizer.TokenizerException;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Consumer;

/**
 * One LangChain4j request as a ChatGLM turn, and its run: what {@link ChatGlmChatModel} and
 * {@link ChatGlmStreamingChatModel} share.
 */
final class ChatGlmTurn {

    private static final ObjectMapper JSON = new ObjectMapper();
    private static final SecureRandom IDS = new SecureRandom();

    private final ChatGLM glm;
    private final List<ChatMessage> history;
    private final String query;
    private final String role;
    private final boolean toolsActive;
    private final ChatOptions options;
    private final List<String> stops;
    private final String modelName;

    private ChatGlmTurn(ChatGLM glm, List<ChatMessage> history, String query, String role, boolean toolsActive,
                        ChatOptions options, List<String> stops, String modelName) {
        this.glm = glm;
        this.history = history;
        this.query = query;
        this.role = role;
        this.toolsActive = toolsActive;
        this.options = options;
        this.stops = stops;
        this.modelName = modelName;
    }

    static ChatGlmTurn of(ChatGLM glm, ChatRequest request, Long seed) {
        ChatRequestParameters p = request.parameters();
        unsupported(p);
        List<dev.langchain4j.data.message.ChatMessage> messages = request.messages();
        if (messages == null || messages.isEmpty()) {
            throw new IllegalArgumentException("A chat request needs at least one message");
        }
        List<ToolSpecification> specs = p.toolSpecifications() == null ? List.of() : p.toolSpecifications();
        boolean tools = !specs.isEmpty() && p.toolChoice() != ToolChoice.NONE;
        if (!specs.isEmpty() && glm.format() != ChatFormat.CHATGLM3) {
            throw new UnsupportedFeatureException("Tools need a ChatGLM3 model; this one is " + glm.format());
        }
        List<ChatMessage> history = new ArrayList<>();
        if (tools) {
            history.add(ChatGLM.toolSystemMessage(toolsJson(specs)));
        }
        for (int i = 0; i < messages.size() - 1; i++) {
            history.addAll(turns(messages.get(i)));
        }
        dev.langchain4j.data.message.ChatMessage last = messages.get(messages.size() - 1);
        String query;
        String role;
        if (last instanceof UserMessage u) {
            query = text(u);
            role = "user";
        } else if (last instanceof ToolExecutionResultMessage t) {
            query = t.text();
            role = "observation";
        } else {
            throw new IllegalArgumentException("The last message must be a user message or a tool result, not "
                    + last.type());
        }
        return new ChatGlmTurn(glm, history, query, role, tools,
                ChatOptions.builder().role(role).generation(generation(glm, p, seed)).build(),
                p.stopSequences() == null ? List.of() : p.stopSequences(), p.modelName());
    }

    private static void unsupported(ChatRequestParameters p) {
        if (p.frequencyPenalty() != null && p.frequencyPenalty() != 0) {
            throw new UnsupportedFeatureException("frequencyPenalty is not supported by ChatGLM");
        }
        if (p.presencePenalty() != null && p.presencePenalty() != 0) {
            throw new UnsupportedFeatureException("presencePenalty is not supported by ChatGLM");
        }
        if (p.responseFormat() != null && p.responseFormat().type() == ResponseFormatType.JSON) {
            throw new UnsupportedFeatureException("JSON response format is not supported by ChatGLM");
        }
    }

    /** Temperature 0 is greedy; what the request leaves out takes THUDM's chat defaults. */
    private static GenerationConfig generation(ChatGLM glm, ChatRequestParameters p, Long seed) {
        return GenerationConfig.ofRequest(glm.model().config().version(), p.temperature(), p.topP(), p.topK(),
                p.maxOutputTokens(), seed);
    }

    private static ArrayNode toolsJson(List<ToolSpecification> specs) {
        ArrayNode out = JSON.createArrayNode();
        for (ToolSpecification s : specs) {
            ObjectNode f = out.addObject();
            f.put("name", s.name());
            if (s.description() != null) {
                f.put("description", s.description());
            }
            if (s.parameters() != null) {
                f.set("parameters", JSON.valueToTree(JsonSchemaElementJsonUtils.toMap(s.parameters())));
            } else {
                f.putObject("parameters").put("type", "object").putObject("properties");
            }
        }
        return out;
    }

    private static List<ChatMessage> turns(dev.langchain4j.data.message.ChatMessage m) {
        if (m instanceof SystemMessage s) {
            return List.of(ChatMessage.of("system", s.text()));
        }
        if (m instanceof UserMessage u) {
            return List.of(ChatMessage.of("user", text(u)));
        }
        if (m instanceof ToolExecutionResultMessage t) {
            return List.of(ChatMessage.of("observation", t.text()));
        }
        if (m instanceof AiMessage a) {
            List<ChatMessage> out = new ArrayList<>();
            if (a.text() != null && (!a.text().isEmpty() || !a.hasToolExecutionRequests())) {
                out.add(new ChatMessage("assistant", a.text(), "", null));
            }
            if (a.hasToolExecutionRequests()) {
                for (ToolExecutionRequest r : a.toolExecutionRequests()) {
                    JsonNode args;
                    try {
                        String raw = r.arguments();
                        args = raw == null || raw.isBlank() ? JSON.createObjectNode() : JSON.readTree(raw);
                    } catch (JsonProcessingException e) {
                        throw new IllegalArgumentException("Tool call arguments are not JSON: " + r.arguments(), e);
                    }
                    out.add(ToolCallWriter.assistantCall(r.name(), args));
                }
            }
            return out;
        }
        throw new UnsupportedFeatureException("Message type " + m.type() + " is not supported by ChatGLM");
    }

    private static String text(UserMessage u) {
        StringBuilder s = new StringBuilder();
        for (Content c : u.contents()) {
            if (!(c instanceof TextContent t)) {
                throw new UnsupportedFeatureException("ChatGLM reads text only, not " + c.type());
            }
            s.append(t.text());
        }
        return s.toString();
    }

    /**
     * Generates the reply, passing content deltas to {@code partial} as they come (none for a tool call: with
     * tools, a first line naming a tool makes the reply a call, as ChatGLM3 writes them).
     */
    ChatResponse run(Consumer<String> partial) {
        StopStrings stop = new StopStrings(stops);
        StringBuilder text = new StringBuilder();
        Consumer<String> sink = d -> {
            if (!d.isEmpty()) {
                text.append(d);
                partial.accept(d);
            }
        };
        try (ChatStream stream = glm.streamChat(query, history, options)) {
            Boolean call = toolsActive ? null : Boolean.FALSE;
            io.github.bigmodel.chatglm.chat.ChatResponse r;
            try {
                while (stream.hasNext()) {
                    String delta = stream.next();
                    if (call == null) {
                        call = namesTool(stream.generatedIds());
                    }
                    if (call) {
                        continue;
                    }
                    sink.accept(stop.push(delta));
                    if (stop.matched()) {
                        return response(AiMessage.from(text.toString()), FinishReason.STOP,
                                stream.generatedTokens(), stream);
                    }
                }
                r = stream.response();
            } catch (TokenizerException e) {
                // A tool name but no parsable call: the raw text is the answer.
                int[] ids = withoutStop(stream.generatedIds());
                sink.accept(glm.tokenizer().decode(known(ids)));
                return response(AiMessage.from(text.toString()), FinishReason.STOP, ids.length, stream);
            }
            int tokens = r.finishReason() == io.github.bigmodel.chatglm.chat.FinishReason.STOP
                    ? r.generatedIds().length - 1 : r.generatedIds().length;
            AssistantReply.ToolCall toolCall = toolsActive ? r.toolCall() : null;
            if (toolCall != null) {
                ToolExecutionRequest req = ToolExecutionRequest.builder().id("call_" + randomId())
                        .name(toolCall.name()).arguments(arguments(toolCall.parameters())).build();
                return response(AiMessage.from(List.of(req)), FinishReason.TOOL_EXECUTION, tokens, stream);
            }
            if (Boolean.TRUE.equals(call)) {
                sink.accept(r.text());
            } else {
                sink.accept(stop.flush());
            }
            FinishReason reason = r.finishReason() == io.github.bigmodel.chatglm.chat.FinishReason.STOP
                    ? FinishReason.STOP : FinishReason.LENGTH;
            return response(AiMessage.from(text.toString()), reason, tokens, stream);
        }
    }

    private ChatResponse response(AiMessage message, FinishReason reason, int outputTokens, ChatStream stream) {
        int input = glm.promptIds(query, history, role).length;
        return ChatResponse.builder().aiMessage(message).finishReason(reason)
                .tokenUsage(new TokenUsage(input, outputTokens)).modelName(modelName)
                .id("chatglm-" + randomId()).build();
    }

    private boolean namesTool(int[] ids) {
        String t = glm.tokenizer().decode(known(ids));
        int nl = t.indexOf('\n');
        return nl > 0 && !t.substring(0, nl).strip().isEmpty();
    }

    private int[] known(int[] ids) {
        int vocab = glm.tokenizer().vocabSize();
        return Arrays.stream(ids).filter(i -> i >= 0 && i < vocab).toArray();
    }

    private int[] withoutStop(int[] ids) {
        if (ids.length > 0 && glm.tokenizer() instanceof ChatGLM3Tokenizer t) {
            int last = ids[ids.length - 1];
            if (Arrays.stream(t.stopTokenIds()).anyMatch(s -> s == last)) {
                return Arrays.copyOf(ids, ids.length - 1);
            }
        }
        return ids;
    }

    private static String arguments(Map<String, Object> parameters) {
        try {
            return JSON.writeValueAsString(jsonSafe(parameters));
        } catch (JsonProcessingException e) {
            throw new IllegalStateException("Cannot write tool arguments as JSON", e);
        }
    }

    /** Python dict keys may be numbers; JSON keys are strings. */
    private static Object jsonSafe(Object v) {
        if (v instanceof Map<?, ?> m) {
            Map<String, Object> out = new LinkedHashMap<>();
            m.forEach((k, x) -> out.put(String.valueOf(k), jsonSafe(x)));
            return out;
        }
        if (v instanceof List<?> l) {
            return l.stream().map(ChatGlmTurn::jsonSafe).toList();
        }
        if (v instanceof Double d && !Double.isFinite(d)) {
            return d.toString();
        }
        return v;
    }

    private static String randomId() {
        return Long.toString(IDS.nextLong() & Long.MAX_VALUE, 36);
    }
}
