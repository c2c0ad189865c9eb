package io.github.bigmodel.server;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Set;
import java.util.regex.Pattern;

/**
 * A validated {@code POST /v1/chat/completions} body. Every known field is type- and range-checked (a wrong one is
 * a 400 naming it); fields the server does not know are ignored, as OpenAI-compatible servers commonly do.
 */
record CompletionRequest(String model, List<Message> messages, boolean stream, boolean includeUsage,
                         Double temperature, Double topP, Integer maxTokens, List<String> stop, Long seed,
                         List<Tool> tools, ToolChoice toolChoice) {

    private static final Pattern FUNCTION_NAME = Pattern.compile("[A-Za-z0-9_-]{1,64}");
    private static final Set<String> ROLES = Set.of("system", "developer", "user", "assistant", "tool");

    /** One message; {@code content} is null only for an assistant message that calls tools. */
    record Message(String role, String content, List<ToolCallIn> toolCalls, String toolCallId) {
    }

    /** A call the assistant made earlier, sent back by the client. */
    record ToolCallIn(String id, String name, ObjectNode arguments) {
    }

    /** A declared function: name, description and JSON-schema parameters (absent: null). */
    record Tool(String name, String description, JsonNode parameters) {
    }

    /** {@code tool_choice}: none, auto, required, or one named function. */
    record ToolChoice(String mode, String function) {
        static final ToolChoice AUTO = new ToolChoice("auto", null);
    }

    static CompletionRequest parse(JsonNode body, com.fasterxml.jackson.databind.ObjectMapper json) {
        if (body == null || !body.isObject()) {
            throw ApiException.invalid(null, "The request body must be a JSON object");
        }
        String model = requiredString(body, "model");
        JsonNode msgs = body.get("messages");
        if (msgs == null || !msgs.isArray() || msgs.isEmpty()) {
            throw ApiException.invalid("messages", "'messages' must be a non-empty array");
        }
        List<Message> messages = new ArrayList<>();
        for (int i = 0; i < msgs.size(); i++) {
            messages.add(message(msgs.get(i), "messages[" + i + "]", json));
        }
        boolean stream = bool(body, "stream", false);
        boolean includeUsage = false;
        JsonNode so = present(body, "stream_options");
        if (so != null) {
            if (!so.isObject()) {
                throw ApiException.invalid("stream_options", "'stream_options' must be an object");
            }
            if (!stream) {
                throw ApiException.invalid("stream_options", "'stream_options' is only allowed with 'stream': true");
            }
            includeUsage = bool(so, "include_usage", false);
        }
        Double temperature = number(body, "temperature", 0, 2);
        Double topP = number(body, "top_p", 0, 1);
        if (topP != null && topP == 0) {
            throw ApiException.invalid("top_p", "'top_p' must be greater than 0");
        }
        Integer maxTokens = positiveInt(body, "max_completion_tokens");
        if (maxTokens == null) {
            maxTokens = positiveInt(body, "max_tokens");
        }
        Integer n = positiveInt(body, "n");
        if (n != null && n != 1) {
            throw ApiException.unsupported("n", "Only n=1 is supported: one choice per request");
        }
        JsonNode seedNode = present(body, "seed");
        Long seed = null;
        if (seedNode != null) {
            if (!seedNode.isIntegralNumber() || !seedNode.canConvertToLong()) {
                throw ApiException.invalid("seed", "'seed' must be an integer");
            }
            seed = seedNode.longValue();
        }
        for (String penalty : List.of("frequency_penalty", "presence_penalty")) {
            Double p = number(body, penalty, -2, 2);
            if (p != null && p != 0) {
                throw ApiException.unsupported(penalty, "'" + penalty + "' is not supported (only 0)");
            }
        }
        if (bool(body, "logprobs", false)) {
            throw ApiException.unsupported("logprobs", "'logprobs' is not supported");
        }
        List<String> stop = stop(body);
        List<Tool> tools = tools(body);
        ToolChoice choice = toolChoice(body, tools);
        return new CompletionRequest(model, List.copyOf(messages), stream, includeUsage, temperature, topP, maxTokens,
                stop, seed, tools, choice);
    }

    private static Message message(JsonNode m, String at, com.fasterxml.jackson.databind.ObjectMapper json) {
        if (m == null || !m.isObject()) {
            throw ApiException.invalid(at, at + " must be an object");
        }
        String role = requiredString(m, "role", at + ".role");
        if (!ROLES.contains(role)) {
            throw ApiException.invalid(at + ".role", "Unknown role '" + role + "': expected one of " + ROLES);
        }
        String content = content(m.get("content"), at + ".content");
        List<ToolCallIn> calls = List.of();
        JsonNode tc = present(m, "tool_calls");
        if (tc != null) {
            if (!role.equals("assistant")) {
                throw ApiException.invalid(at + ".tool_calls", "Only assistant messages carry 'tool_calls'");
            }
            if (!tc.isArray()) {
                throw ApiException.invalid(at + ".tool_calls", "'tool_calls' must be an array");
            }
            List<ToolCallIn> list = new ArrayList<>();
            for (int i = 0; i < tc.size(); i++) {
                list.add(toolCall(tc.get(i), at + ".tool_calls[" + i + "]", json));
            }
            calls = List.copyOf(list);
        }
        if (content == null && !(role.equals("assistant") && !calls.isEmpty())) {
            throw ApiException.invalid(at + ".content", at + " needs 'content' (a string or text parts)");
        }
        String toolCallId = null;
        if (role.equals("tool")) {
            toolCallId = requiredString(m, "tool_call_id", at + ".tool_call_id");
        }
        return new Message(role, content, calls, toolCallId);
    }

    /** A string, an array of {@code {"type": "text", "text"}} parts (joined), or null/absent. */
    private static String content(JsonNode c, String at) {
        if (c == null || c.isNull()) {
            return null;
        }
        if (c.isTextual()) {
            return c.textValue();
        }
        if (!c.isArray()) {
            throw ApiException.invalid(at, at + " must be a string or an array of text parts");
        }
        StringBuilder text = new StringBuilder();
        for (int i = 0; i < c.size(); i++) {
            JsonNode part = c.get(i);
            String p = at + "[" + i + "]";
            if (!part.isObject() || !"text".equals(part.path("type").asText(null))) {
                throw ApiException.unsupported(p, "Only text content parts are supported");
            }
            text.append(requiredString(part, "text", p + ".text"));
        }
        return text.toString();
    }

    private static ToolCallIn toolCall(JsonNode c, String at, com.fasterxml.jackson.databind.ObjectMapper json) {
        if (c == null || !c.isObject()) {
            throw ApiException.invalid(at, at + " must be an object");
        }
        String id = requiredString(c, "id", at + ".id");
        JsonNode type = present(c, "type");
        if (type != null && !"function".equals(type.asText(null))) {
            throw ApiException.unsupported(at + ".type", "Only 'function' tool calls are supported");
        }
        JsonNode fn = c.get("function");
        if (fn == null || !fn.isObject()) {
            throw ApiException.invalid(at + ".function", at + ".function must be an object");
        }
        String name = requiredString(fn, "name", at + ".function.name");
        String args = requiredString(fn, "arguments", at + ".function.arguments");
        JsonNode parsed;
        try {
            parsed = args.isBlank() ? json.createObjectNode() : json.readTree(args);
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            throw ApiException.invalid(at + ".function.arguments", "'arguments' is not valid JSON: "
                    + e.getOriginalMessage());
        }
        if (parsed == null || !parsed.isObject()) {
            throw ApiException.invalid(at + ".function.arguments", "'arguments' must be a JSON object");
        }
        return new ToolCallIn(id, name, (ObjectNode) parsed);
    }

    private static List<Tool> tools(JsonNode body) {
        JsonNode t = present(body, "tools");
        if (t == null) {
            return List.of();
        }
        if (!t.isArray()) {
            throw ApiException.invalid("tools", "'tools' must be an array");
        }
        List<Tool> out = new ArrayList<>();
        for (int i = 0; i < t.size(); i++) {
            String at = "tools[" + i + "]";
            JsonNode tool = t.get(i);
            if (!tool.isObject() || !"function".equals(tool.path("type").asText(null))) {
                throw ApiException.invalid(at, at + " must be {\"type\": \"function\", \"function\": {...}}");
            }
            JsonNode fn = tool.get("function");
            if (fn == null || !fn.isObject()) {
                throw ApiException.invalid(at + ".function", at + ".function must be an object");
            }
            String name = requiredString(fn, "name", at + ".function.name");
            if (!FUNCTION_NAME.matcher(name).matches()) {
                throw ApiException.invalid(at + ".function.name", "Function names are 1-64 of a-z, A-Z, 0-9, _ and -");
            }
            JsonNode d = present(fn, "description");
            if (d != null && !d.isTextual()) {
                throw ApiException.invalid(at + ".function.description", "'description' must be a string");
            }
            JsonNode params = present(fn, "parameters");
            if (params != null && !params.isObject()) {
                throw ApiException.invalid(at + ".function.parameters", "'parameters' must be a JSON schema object");
            }
            for (Tool earlier : out) {
                if (earlier.name().equals(name)) {
                    throw ApiException.invalid(at + ".function.name", "Function '" + name + "' is declared twice");
                }
            }
            out.add(new Tool(name, d == null ? null : d.textValue(), params));
        }
        return List.copyOf(out);
    }

    private static ToolChoice toolChoice(JsonNode body, List<Tool> tools) {
        JsonNode c = present(body, "tool_choice");
        if (c == null) {
            return ToolChoice.AUTO;
        }
        if (c.isTextual()) {
            String mode = c.textValue();
            if (!Set.of("none", "auto", "required").contains(mode)) {
                throw ApiException.invalid("tool_choice", "'tool_choice' must be none, auto, required or a function");
            }
            if (mode.equals("required") && tools.isEmpty()) {
                throw ApiException.invalid("tool_choice", "'tool_choice': 'required' needs 'tools'");
            }
            return new ToolChoice(mode, null);
        }
        if (c.isObject() && "function".equals(c.path("type").asText(null)) && c.path("function").isObject()) {
            String name = requiredString(c.get("function"), "name", "tool_choice.function.name");
            if (tools.stream().noneMatch(t -> t.name().equals(name))) {
                throw ApiException.invalid("tool_choice", "'tool_choice' names '" + name + "', which is not in 'tools'");
            }
            return new ToolChoice("function", name);
        }
        throw ApiException.invalid("tool_choice", "'tool_choice' must be none, auto, required or "
                + "{\"type\": \"function\", \"function\": {\"name\": ...}}");
    }

    private static List<String> stop(JsonNode body) {
        JsonNode s = present(body, "stop");
        if (s == null) {
            return List.of();
        }
        List<String> out = new ArrayList<>();
        if (s.isTextual()) {
            out.add(s.textValue());
        } else if (s.isArray() && s.size() <= 4) {
            for (Iterator<JsonNode> it = s.elements(); it.hasNext(); ) {
                JsonNode e = it.next();
                if (!e.isTextual()) {
                    throw ApiException.invalid("stop", "'stop' must be a string or up to 4 strings");
                }
                out.add(e.textValue());
            }
        } else {
            throw ApiException.invalid("stop", "'stop' must be a string or up to 4 strings");
        }
        if (out.stream().anyMatch(String::isEmpty)) {
            throw ApiException.invalid("stop", "'stop' strings must not be empty");
        }
        return List.copyOf(out);
    }

    /** The field, or null when absent or JSON null (OpenAI treats null as "not given"). */
    private static JsonNode present(JsonNode obj, String name) {
        JsonNode n = obj.get(name);
        return n == null || n.isNull() ? null : n;
    }

    private static String requiredString(JsonNode obj, String name) {
        return requiredString(obj, name, name);
    }

    private static String requiredString(JsonNode obj, String name, String param) {
        JsonNode n = obj.get(name);
        if (n == null || !n.isTextual()) {
            throw ApiException.invalid(param, "'" + param + "' must be a string");
        }
        return n.textValue();
    }

    private static boolean bool(JsonNode obj, String name, boolean absent) {
        JsonNode n = present(obj, name);
        if (n == null) {
            return absent;
        }
        if (!n.isBoolean()) {
            throw ApiException.invalid(name, "'" + name + "' must be true or false");
        }
        return n.booleanValue();
    }

    private static Double number(JsonNode obj, String name, double min, double max) {
        JsonNode n = present(obj, name);
        if (n == null) {
            return null;
        }
        if (!n.isNumber() || !Double.isFinite(n.doubleValue()) || n.doubleValue() < min || n.doubleValue() > max) {
            throw ApiException.invalid(name, "'" + name + "' must be a number from " + min + " to " + max);
        }
        return n.doubleValue();
    }

    private static Integer positiveInt(JsonNode obj, String name) {
        JsonNode n = present(obj, name);
        if (n == null) {
            return null;
        }
        if (!n.isIntegralNumber() || !n.canConvertToInt() || n.intValue() < 1) {
            throw ApiException.invalid(name, "'" + name + "' must be a positive integer");
        }
        return n.intValue();
    }
}
