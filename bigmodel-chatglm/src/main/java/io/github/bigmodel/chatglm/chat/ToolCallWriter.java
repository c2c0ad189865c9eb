package io.github.bigmodel.chatglm.chat;

import com.fasterxml.jackson.databind.JsonNode;
import java.util.Iterator;
import java.util.Map;
import java.util.regex.Pattern;

/**
 * Writes a tool call back into a ChatGLM3 history as the model writes it: an assistant turn whose metadata is the
 * tool's name and whose content is {@code ```python\ntool_call(city='Beijing', days=2)\n```}, the JSON arguments as
 * Python keyword literals. For clients (OpenAI's API, LangChain4j) that send earlier calls back as JSON; the
 * model's own calls are read by the tokenizer's parser, never evaluated.
 *
 * <pre>{@code
 * history.add(ToolCallWriter.assistantCall("get_weather", mapper.readTree("{\"city\": \"Beijing\"}")));
 * }</pre>
 */
public final class ToolCallWriter {

    private static final Pattern IDENTIFIER = Pattern.compile("[A-Za-z_][A-Za-z0-9_]*");

    private ToolCallWriter() {
    }

    /**
     * The assistant turn of a call.
     *
     * @throws IllegalArgumentException when the arguments are not a JSON object or a name is not a Python identifier
     */
    public static ChatMessage assistantCall(String name, JsonNode arguments) {
        if (name == null || name.isBlank() || name.indexOf('\n') >= 0) {
            throw new IllegalArgumentException("A tool name must be one non-blank line, got '" + name + "'");
        }
        return new ChatMessage("assistant", "```python\n" + pythonCall(arguments) + "\n```", name, null);
    }

    /**
     * {@code tool_call(k=v, ...)} of a JSON object's fields.
     *
     * @throws IllegalArgumentException when {@code arguments} is not an object or a key is not a Python identifier
     */
    public static String pythonCall(JsonNode arguments) {
        if (arguments == null || !arguments.isObject()) {
            throw new IllegalArgumentException("Tool arguments must be a JSON object");
        }
        StringBuilder out = new StringBuilder("tool_call(");
        boolean first = true;
        for (Iterator<Map.Entry<String, JsonNode>> it = arguments.fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> e = it.next();
            if (!IDENTIFIER.matcher(e.getKey()).matches()) {
                throw new IllegalArgumentException("Argument name '" + e.getKey()
                        + "' cannot be a ChatGLM3 tool_call keyword (letters, digits and _ only)");
            }
            if (!first) {
                out.append(", ");
            }
            first = false;
            out.append(e.getKey()).append('=');
            write(e.getValue(), out);
        }
        return out.append(')').toString();
    }

    private static void write(JsonNode v, StringBuilder out) {
        if (v == null || v.isNull()) {
            out.append("None");
        } else if (v.isBoolean()) {
            out.append(v.booleanValue() ? "True" : "False");
        } else if (v.isIntegralNumber()) {
            out.append(v.bigIntegerValue());
        } else if (v.isNumber()) {
            out.append(v.asText());
        } else if (v.isTextual()) {
            string(v.textValue(), out);
        } else if (v.isArray()) {
            out.append('[');
            for (int i = 0; i < v.size(); i++) {
                if (i > 0) {
                    out.append(", ");
                }
                write(v.get(i), out);
            }
            out.append(']');
        } else {
            out.append('{');
            boolean first = true;
            for (Iterator<Map.Entry<String, JsonNode>> it = v.fields(); it.hasNext(); ) {
                Map.Entry<String, JsonNode> e = it.next();
                if (!first) {
                    out.append(", ");
                }
                first = false;
                string(e.getKey(), out);
                out.append(": ");
                write(e.getValue(), out);
            }
            out.append('}');
        }
    }

    /** A single-quoted Python string with every character that needs it escaped. */
    private static void string(String s, StringBuilder out) {
        out.append('\'');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '\\' -> out.append("\\\\");
                case '\'' -> out.append("\\'");
                case '\n' -> out.append("\\n");
                case '\r' -> out.append("\\r");
                case '\t' -> out.append("\\t");
                default -> {
                    if (c < 0x20 || c == 0x7f) {
                        out.append(String.format(java.util.Locale.ROOT, "\\x%02x", (int) c));
                    } else {
                        out.append(c);
                    }
                }
            }
        }
        out.append('\'');
    }
}
