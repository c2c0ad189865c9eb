package io.github.bigmodel.server;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.sun.net.httpserver.HttpExchange;
import io.github.bigmodel.chatglm.chat.ChatGLM;
import io.github.bigmodel.chatglm.chat.ChatOptions;
import io.github.bigmodel.chatglm.chat.ChatResponse;
import io.github.bigmodel.chatglm.chat.ChatStream;
import io.github.bigmodel.chatglm.chat.FinishReason;
import io.github.bigmodel.chatglm.chat.PromptTooLongException;
import io.github.bigmodel.chatglm.chat.StopStrings;
import io.github.bigmodel.chatglm.generation.GenerationConfig;
import io.github.bigmodel.chatglm.chat.AssistantReply;
import io.github.bigmodel.chatglm.tokenizer.ChatGLM3Tokenizer;
import io.github.bigmodel.chatglm.tokenizer.TokenizerException;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.security.SecureRandom;
import java.util.Arrays;
import java.util.Map;
import java.util.Set;
import java.util.function.BooleanSupplier;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/** Runs one chat completion on the model and writes it as a JSON response or as server-sent events. */
final class Completions {

    private static final Logger LOG = LoggerFactory.getLogger(Completions.class);
    private static final SecureRandom IDS = new SecureRandom();
    private static final char[] ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789".toCharArray();

    private final ChatGLM glm;
    private final String modelId;
    private final ObjectMapper json;
    private final ServerMetrics metrics;
    private final Set<ChatStream> live;
    private final BooleanSupplier shuttingDown;

    Completions(ChatGLM glm, String modelId, ObjectMapper json, ServerMetrics metrics, Set<ChatStream> live,
                BooleanSupplier shuttingDown) {
        this.glm = glm;
        this.modelId = modelId;
        this.json = json;
        this.metrics = metrics;
        this.live = live;
        this.shuttingDown = shuttingDown;
    }

    /** A request turned into a ChatGLM turn, checked against the model before any slot is taken. */
    record Prepared(CompletionRequest request, Conversation conversation, ChatOptions options, int promptTokens) {
    }

    /** What a generation produced. */
    private record Outcome(String content, AssistantReply.ToolCall call, String finishReason, int completionTokens) {
    }

    @FunctionalInterface
    private interface Sink {
        void content(String delta) throws IOException;
    }

    Prepared prepare(CompletionRequest req) {
        Conversation conv = Conversation.of(req, glm.format(), json);
        ChatOptions options = ChatOptions.builder().role(conv.role()).generation(generation(req)).build();
        int promptTokens;
        try {
            promptTokens = glm.promptIds(conv.query(), conv.history(), conv.role()).length;
        } catch (IllegalArgumentException e) {
            throw ApiException.invalid("messages", e.getMessage());
        }
        int positions = glm.model().config().maxPositions();
        if (promptTokens >= positions) {
            throw new ApiException(400, "invalid_request_error", "messages", "context_length_exceeded",
                    "The prompt has " + promptTokens + " tokens; the model has " + positions + " positions");
        }
        return new Prepared(req, conv, options, promptTokens);
    }

    /**
     * Decoding settings: temperature 0 is greedy; otherwise sampling with the request's temperature and top_p, and
     * THUDM's chat defaults for what the request leaves out (ChatGLM2/3: 0.8 and 0.8; ChatGLM-6B: 0.95 and 0.7).
     */
    private GenerationConfig generation(CompletionRequest req) {
        return GenerationConfig.ofRequest(glm.model().config().version(), req.temperature(), req.topP(), null,
                req.maxTokens(), req.seed());
    }

    void run(HttpExchange ex, Prepared p) throws IOException {
        ChatStream stream;
        try {
            stream = glm.streamChat(p.conversation().query(), p.conversation().history(), p.options());
        } catch (PromptTooLongException e) {
            throw new ApiException(400, "invalid_request_error", "messages", "context_length_exceeded",
                    e.getMessage());
        } catch (IllegalArgumentException e) {
            throw ApiException.invalid("messages", e.getMessage());
        }
        live.add(stream);
        long started = System.nanoTime();
        boolean finished = false;
        try {
            if (p.request().stream()) {
                streamed(ex, p, stream);
            } else {
                whole(ex, p, stream);
            }
            finished = true;
        } finally {
            live.remove(stream);
            stream.close();
            int generated = stream.generatedTokens();
            metrics.generated(p.promptTokens(), generated, System.nanoTime() - started);
            if (!finished) {
                metrics.cancelled.increment();
                LOG.debug("Generation stopped after {} tokens: the client went away or the server is stopping",
                        generated);
            }
        }
    }

    private void whole(HttpExchange ex, Prepared p, ChatStream stream) throws IOException {
        StringBuilder text = new StringBuilder();
        Outcome o = generate(stream, p, text::append);
        ObjectNode root = json.createObjectNode();
        root.put("id", "chatcmpl-" + randomId(24));
        root.put("object", "chat.completion");
        root.put("created", System.currentTimeMillis() / 1000);
        root.put("model", modelId);
        ObjectNode choice = root.putArray("choices").addObject();
        choice.put("index", 0);
        ObjectNode message = choice.putObject("message");
        message.put("role", "assistant");
        if (o.call() != null) {
            message.putNull("content");
            ArrayNode calls = message.putArray("tool_calls");
            ObjectNode call = calls.addObject();
            call.put("id", "call_" + randomId(24));
            call.put("type", "function");
            ObjectNode fn = call.putObject("function");
            fn.put("name", o.call().name());
            fn.put("arguments", arguments(o.call()));
        } else {
            message.put("content", text.toString());
        }
        message.putNull("refusal");
        choice.putNull("logprobs");
        choice.put("finish_reason", o.finishReason());
        root.set("usage", usage(p.promptTokens(), o.completionTokens()));
        byte[] body = json.writeValueAsBytes(root);
        ex.getResponseHeaders().set("Content-Type", "application/json");
        metrics.response(200);
        ex.sendResponseHeaders(200, body.length);
        try (OutputStream os = ex.getResponseBody()) {
            os.write(body);
        }
    }

    private void streamed(HttpExchange ex, Prepared p, ChatStream stream) throws IOException {
        ex.getResponseHeaders().set("Content-Type", "text/event-stream; charset=utf-8");
        ex.getResponseHeaders().set("Cache-Control", "no-cache");
        ex.getResponseHeaders().set("X-Accel-Buffering", "no");
        metrics.response(200);
        ex.sendResponseHeaders(200, 0);
        OutputStream os = ex.getResponseBody();
        String id = "chatcmpl-" + randomId(24);
        long created = System.currentTimeMillis() / 1000;
        boolean usage = p.request().includeUsage();
        ObjectNode first = json.createObjectNode();
        first.put("role", "assistant");
        first.put("content", "");
        event(os, chunk(id, created, first, null, usage));
        Outcome o;
        try {
            o = generate(stream, p, delta -> {
                ObjectNode d = json.createObjectNode();
                d.put("content", delta);
                event(os, chunk(id, created, d, null, usage));
            });
        } catch (ApiException e) {
            // Headers are out: the error goes as an event, then the stream ends as OpenAI's do.
            event(os, json.writeValueAsString(OpenAiServer.errorBody(json, e)));
            os.write("data: [DONE]\n\n".getBytes(StandardCharsets.UTF_8));
            os.close();
            return;
        }
        if (o.call() != null) {
            ObjectNode d = json.createObjectNode();
            ObjectNode call = d.putArray("tool_calls").addObject();
            call.put("index", 0);
            call.put("id", "call_" + randomId(24));
            call.put("type", "function");
            ObjectNode fn = call.putObject("function");
            fn.put("name", o.call().name());
            fn.put("arguments", "");
            event(os, chunk(id, created, d, null, usage));
            ObjectNode args = json.createObjectNode();
            ObjectNode argCall = args.putArray("tool_calls").addObject();
            argCall.put("index", 0);
            argCall.putObject("function").put("arguments", arguments(o.call()));
            event(os, chunk(id, created, args, null, usage));
        }
        event(os, chunk(id, created, json.createObjectNode(), o.finishReason(), usage));
        if (usage) {
            ObjectNode last = json.createObjectNode();
            last.put("id", id);
            last.put("object", "chat.completion.chunk");
            last.put("created", created);
            last.put("model", modelId);
            last.putArray("choices");
            last.set("usage", usage(p.promptTokens(), o.completionTokens()));
            event(os, json.writeValueAsString(last));
        }
        os.write("data: [DONE]\n\n".getBytes(StandardCharsets.UTF_8));
        os.flush();
        os.close();
    }

    /**
     * Pulls the reply. With tools in the prompt, the reply's first line decides: a tool name (ChatGLM3's metadata)
     * makes it a call, whose text is not content; otherwise the content streams as it comes. Stop strings cut the
     * content and end generation.
     */
    private Outcome generate(ChatStream stream, Prepared p, Sink sink) throws IOException {
        StopStrings stop = new StopStrings(p.request().stop());
        Boolean call = p.conversation().toolsActive() ? null : Boolean.FALSE;
        ChatResponse response = null;
        try {
            while (stream.hasNext()) {
                String delta;
                try {
                    delta = stream.next();
                } catch (java.util.NoSuchElementException e) {
                    break; // closed from another thread (shutdown) between hasNext and next
                }
                if (call == null) {
                    call = namesTool(stream.generatedIds());
                }
                if (call) {
                    continue;
                }
                String out = stop.push(delta);
                if (!out.isEmpty()) {
                    sink.content(out);
                }
                if (stop.matched()) {
                    return new Outcome(null, null, "stop", stream.generatedTokens());
                }
            }
            if (shuttingDown.getAsBoolean() && !isComplete(stream)) {
                throw new ApiException(503, "server_error", null, "shutting_down",
                        "The server stopped this generation while shutting down");
            }
            response = stream.response();
        } catch (TokenizerException e) {
            // The model wrote a tool name but no parsable call: its raw text is the answer.
            LOG.debug("Unparsable tool call, answered as text: {}", e.getMessage());
            sink.content(rawText(stream.generatedIds()));
            return new Outcome(null, null, "stop", withoutStop(stream.generatedIds()).length);
        }
        int tokens = response.finishReason() == FinishReason.STOP ? response.generatedIds().length - 1
                : response.generatedIds().length;
        AssistantReply.ToolCall toolCall = p.conversation().toolsActive() ? response.toolCall() : null;
        if (toolCall != null) {
            return new Outcome(null, toolCall, "tool_calls", tokens);
        }
        if (Boolean.TRUE.equals(call)) {
            sink.content(response.text()); // a named reply that is not a call: its text was held back
        } else {
            String tail = stop.flush();
            if (!tail.isEmpty()) {
                sink.content(tail);
            }
        }
        return new Outcome(null, null, response.finishReason() == FinishReason.STOP ? "stop" : "length", tokens);
    }

    private static boolean isComplete(ChatStream stream) {
        try {
            stream.response();
            return true;
        } catch (IllegalStateException e) {
            return false;
        }
    }

    /** Whether the reply's first line (ChatGLM3's metadata) names something, i.e. the reply is a tool call. */
    private boolean namesTool(int[] ids) {
        String text = glm.tokenizer().decode(known(ids));
        int nl = text.indexOf('\n');
        return nl > 0 && !text.substring(0, nl).strip().isEmpty();
    }

    private String rawText(int[] ids) {
        return glm.tokenizer().decode(known(withoutStop(ids)));
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

    /** The ids the tokenizer knows (the model's padded vocabulary decodes to nothing, as THUDM's decode does). */
    private int[] known(int[] ids) {
        int vocab = glm.tokenizer().vocabSize();
        return Arrays.stream(ids).filter(i -> i >= 0 && i < vocab).toArray();
    }

    private String arguments(AssistantReply.ToolCall call) throws JsonProcessingException {
        return json.writeValueAsString(jsonSafe(call.parameters()));
    }

    /** Python dict keys may be numbers or tuples; JSON object keys are strings. */
    private static Object jsonSafe(Object v) {
        if (v instanceof Map<?, ?> m) {
            Map<String, Object> out = new java.util.LinkedHashMap<>();
            m.forEach((k, x) -> out.put(String.valueOf(k), jsonSafe(x)));
            return out;
        }
        if (v instanceof java.util.List<?> l) {
            return l.stream().map(Completions::jsonSafe).toList();
        }
        if (v instanceof Double d && !Double.isFinite(d)) {
            return d.toString();
        }
        return v;
    }

    private ObjectNode usage(int prompt, int completion) {
        ObjectNode u = json.createObjectNode();
        u.put("prompt_tokens", prompt);
        u.put("completion_tokens", completion);
        u.put("total_tokens", prompt + completion);
        return u;
    }

    private String chunk(String id, long created, ObjectNode delta, String finishReason, boolean usageField)
            throws JsonProcessingException {
        ObjectNode c = json.createObjectNode();
        c.put("id", id);
        c.put("object", "chat.completion.chunk");
        c.put("created", created);
        c.put("model", modelId);
        ObjectNode choice = c.putArray("choices").addObject();
        choice.put("index", 0);
        choice.set("delta", delta);
        choice.putNull("logprobs");
        if (finishReason == null) {
            choice.putNull("finish_reason");
        } else {
            choice.put("finish_reason", finishReason);
        }
        if (usageField) {
            c.putNull("usage");
        }
        return json.writeValueAsString(c);
    }

    private static void event(OutputStream os, String data) throws IOException {
        os.write(("data: " + data + "\n\n").getBytes(StandardCharsets.UTF_8));
        os.flush();
    }

    static String randomId(int n) {
        char[] c = new char[n];
        for (int i = 0; i < n; i++) {
            c[i] = ALPHABET[IDS.nextInt(ALPHABET.length)];
        }
        return new String(c);
    }
}
