package io.github.bigmodel.server;

import com.fasterxml.jackson.databind.JsonNode;
import java.util.Iterator;
import java.util.Map;
import java.util.regex.Pattern;

/**
 * JSON values as the Python literals ChatGLM3 writes in its tool calls ({@code tool_call(city='Beijing', days=2)}),
 * for putting a client's earlier call back into the prompt; the model's own calls are read by the tokenizer's
 * parser, never evaluated.
 */
final class PythonLiteral {

    private static final Pattern IDENTIFIER = Pattern.compile("[A-Za-z_][A-Za-z0-9_]*");

    private PythonLiteral() {
    }

    /** {@code tool_call(k=v, ...)} of a JSON object's fields; keys must be Python identifiers. */
    static String toolCall(JsonNode arguments, String param) {
        StringBuilder out = new StringBuilder("tool_call(");
        boolean first = true;
        for (Iterator<Map.Entry<String, JsonNode>> it = arguments.fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> e = it.next();
            if (!IDENTIFIER.matcher(e.getKey()).matches()) {
                throw ApiException.invalid(param, "Argument name '" + e.getKey()
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

    static void write(JsonNode v, StringBuilder out) {
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
    static void string(String s, StringBuilder out) {
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
                        out.append(String.format("\\x%02x", (int) c));
                    } else {
                        out.append(c);
                    }
                }
            }
        }
        out.append('\'');
    }
}
