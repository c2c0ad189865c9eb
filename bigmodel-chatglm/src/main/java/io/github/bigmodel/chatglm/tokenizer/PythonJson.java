package io.github.bigmodel.chatglm.tokenizer;

import com.fasterxml.jackson.databind.JsonNode;

import java.math.BigDecimal;
import java.util.Iterator;
import java.util.Map;

/**
 * Python's {@code json.dumps(value, indent=4, ensure_ascii=False)} over a Jackson tree, which is how ChatGLM3
 * renders tool definitions into the system prompt: 4-space indent, {@code ": "} after keys, empty containers
 * inline, floats as Python {@code repr}, only {@code "}, {@code \} and C0 controls escaped.
 *
 * <pre>{@code
 * String text = PythonJson.dumps(new ObjectMapper().readTree("[{\"name\": \"get_weather\"}]"));
 * }</pre>
 */
public final class PythonJson {

    private PythonJson() {
    }

    /** The text Python's {@code json.dumps(value, indent=4, ensure_ascii=False)} gives. */
    public static String dumps(JsonNode value) {
        StringBuilder out = new StringBuilder();
        write(value, 0, out);
        return out.toString();
    }

    private static void write(JsonNode node, int depth, StringBuilder out) {
        if (node == null || node.isNull() || node.isMissingNode()) {
            out.append("null");
        } else if (node.isBoolean()) {
            out.append(node.booleanValue() ? "true" : "false");
        } else if (node.isIntegralNumber()) {
            out.append(node.bigIntegerValue().toString());
        } else if (node.isNumber()) {
            out.append(floatRepr(node.doubleValue()));
        } else if (node.isTextual()) {
            writeString(node.textValue(), out);
        } else if (node.isArray()) {
            if (node.isEmpty()) {
                out.append("[]");
                return;
            }
            out.append('[');
            boolean first = true;
            for (JsonNode item : node) {
                out.append(first ? "\n" : ",\n");
                first = false;
                indent(depth + 1, out);
                write(item, depth + 1, out);
            }
            out.append('\n');
            indent(depth, out);
            out.append(']');
        } else if (node.isObject()) {
            if (node.isEmpty()) {
                out.append("{}");
                return;
            }
            out.append('{');
            boolean first = true;
            for (Iterator<Map.Entry<String, JsonNode>> it = node.fields(); it.hasNext(); ) {
                Map.Entry<String, JsonNode> e = it.next();
                out.append(first ? "\n" : ",\n");
                first = false;
                indent(depth + 1, out);
                writeString(e.getKey(), out);
                out.append(": ");
                write(e.getValue(), depth + 1, out);
            }
            out.append('\n');
            indent(depth, out);
            out.append('}');
        } else {
            throw new IllegalArgumentException("not a JSON value: " + node.getNodeType());
        }
    }

    private static void indent(int depth, StringBuilder out) {
        for (int i = 0; i < depth * 4; i++) {
            out.append(' ');
        }
    }

    static void writeString(String s, StringBuilder out) {
        out.append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"' -> out.append("\\\"");
                case '\\' -> out.append("\\\\");
                case '\n' -> out.append("\\n");
                case '\r' -> out.append("\\r");
                case '\t' -> out.append("\\t");
                case '\b' -> out.append("\\b");
                case '\f' -> out.append("\\f");
                default -> {
                    if (c < 0x20) {
                        out.append(String.format("\\u%04x", (int) c));
                    } else {
                        out.append(c);
                    }
                }
            }
        }
        out.append('"');
    }

    /** Python's {@code repr(float)} (shortest round-trip digits; exponent form below 1e-4 or from 1e16). */
    static String floatRepr(double v) {
        if (Double.isNaN(v)) {
            return "NaN";
        }
        if (Double.isInfinite(v)) {
            return v > 0 ? "Infinity" : "-Infinity";
        }
        if (v == 0) {
            return (1 / v < 0) ? "-0.0" : "0.0";
        }
        BigDecimal d = new BigDecimal(Double.toString(Math.abs(v))).stripTrailingZeros();
        String digits = d.unscaledValue().toString();
        // value = 0.digits * 10^decpt
        int decpt = digits.length() - d.scale();
        StringBuilder out = new StringBuilder();
        if (v < 0) {
            out.append('-');
        }
        if (decpt > -4 && decpt <= 16) {
            if (decpt <= 0) {
                out.append("0.");
                out.append("0".repeat(-decpt));
                out.append(digits);
            } else if (decpt >= digits.length()) {
                out.append(digits).append("0".repeat(decpt - digits.length())).append(".0");
            } else {
                out.append(digits, 0, decpt).append('.').append(digits.substring(decpt));
            }
        } else {
            out.append(digits.charAt(0));
            if (digits.length() > 1) {
                out.append('.').append(digits.substring(1));
            }
            int exp = decpt - 1;
            out.append('e').append(exp < 0 ? '-' : '+');
            String e = Integer.toString(Math.abs(exp));
            if (e.length() < 2) {
                out.append('0');
            }
            out.append(e);
        }
        return out.toString();
    }
}
