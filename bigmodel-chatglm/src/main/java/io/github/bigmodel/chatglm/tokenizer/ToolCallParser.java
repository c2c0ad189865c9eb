package io.github.bigmodel.chatglm.tokenizer;

import java.math.BigInteger;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Parses what ChatGLM3's {@code process_response} evaluates with Python's {@code eval}: a call
 * {@code tool_call(name=value, ...)} whose values are Python literals (strings, ints, floats, {@code True},
 * {@code False}, {@code None}, lists, tuples, dicts). No code is executed; anything else is a
 * {@link TokenizerException} with {@code MALFORMED_TOOL_CALL}. Values map to {@link String}, {@link Long} or
 * {@link BigInteger}, {@link Double}, {@link Boolean}, {@code null}, {@link List} and {@link Map}.
 */
final class ToolCallParser {

    private final String src;
    private int pos;

    private ToolCallParser(String src) {
        this.src = src;
    }

    /** The keyword arguments of {@code tool_call(...)} in insertion order. */
    static Map<String, Object> parse(String code) {
        ToolCallParser p = new ToolCallParser(code);
        p.skipSpace();
        String name = p.identifier();
        if (!name.equals("tool_call")) {
            throw p.error("expected tool_call(...), found '" + name + "'");
        }
        p.skipSpace();
        p.expect('(');
        Map<String, Object> kwargs = new LinkedHashMap<>();
        p.skipSpace();
        while (!p.peek(')')) {
            String key = p.identifier();
            p.skipSpace();
            p.expect('=');
            p.skipSpace();
            if (kwargs.containsKey(key)) {
                throw p.error("keyword argument repeated: " + key);
            }
            kwargs.put(key, p.value());
            p.skipSpace();
            if (!p.peek(')')) {
                p.expect(',');
                p.skipSpace();
            }
        }
        p.expect(')');
        p.skipSpace();
        if (p.pos != p.src.length()) {
            throw p.error("unexpected text after the call");
        }
        return kwargs;
    }

    private Object value() {
        if (pos >= src.length()) {
            throw error("missing value");
        }
        char c = src.charAt(pos);
        if (c == '\'' || c == '"') {
            return string(false);
        }
        if ((c == 'r' || c == 'R' || c == 'u' || c == 'U') && pos + 1 < src.length()
                && (src.charAt(pos + 1) == '\'' || src.charAt(pos + 1) == '"')) {
            pos++;
            return string(c == 'r' || c == 'R');
        }
        if (c == '[') {
            pos++;
            return sequence(']');
        }
        if (c == '(') {
            pos++;
            return sequence(')');
        }
        if (c == '{') {
            pos++;
            return dict();
        }
        if (c == '-' || c == '+' || c == '.' || Character.isDigit(c)) {
            return number();
        }
        String word = identifier();
        return switch (word) {
            case "True" -> Boolean.TRUE;
            case "False" -> Boolean.FALSE;
            case "None" -> null;
            default -> throw error("'" + word + "' is not a literal");
        };
    }

    private List<Object> sequence(char close) {
        List<Object> items = new ArrayList<>();
        skipSpace();
        while (!peek(close)) {
            items.add(value());
            skipSpace();
            if (!peek(close)) {
                expect(',');
                skipSpace();
            }
        }
        expect(close);
        return items;
    }

    private Map<Object, Object> dict() {
        Map<Object, Object> map = new LinkedHashMap<>();
        skipSpace();
        while (!peek('}')) {
            Object key = value();
            skipSpace();
            expect(':');
            skipSpace();
            map.put(key, value());
            skipSpace();
            if (!peek('}')) {
                expect(',');
                skipSpace();
            }
        }
        expect('}');
        return map;
    }

    private Object number() {
        int start = pos;
        if (peek('-') || peek('+')) {
            pos++;
        }
        boolean isFloat = false;
        while (pos < src.length()) {
            char c = src.charAt(pos);
            if (Character.isDigit(c) || c == '_') {
                pos++;
            } else if (c == '.' || c == 'e' || c == 'E') {
                isFloat = true;
                pos++;
                if ((c == 'e' || c == 'E') && (peek('-') || peek('+'))) {
                    pos++;
                }
            } else {
                break;
            }
        }
        String text = src.substring(start, pos).replace("_", "");
        try {
            if (isFloat) {
                return Double.parseDouble(text);
            }
            BigInteger big = new BigInteger(text.startsWith("+") ? text.substring(1) : text);
            return big.bitLength() < 64 ? (Object) big.longValue() : big;
        } catch (NumberFormatException e) {
            throw error("bad number '" + text + "'");
        }
    }

    private String string(boolean raw) {
        char quote = src.charAt(pos);
        boolean triple = src.startsWith(String.valueOf(quote).repeat(3), pos);
        pos += triple ? 3 : 1;
        StringBuilder out = new StringBuilder();
        while (true) {
            if (pos >= src.length()) {
                throw error("unterminated string");
            }
            char c = src.charAt(pos);
            if (c == quote && (!triple || src.startsWith(String.valueOf(quote).repeat(3), pos))) {
                pos += triple ? 3 : 1;
                return out.toString();
            }
            if (c == '\n' && !triple) {
                throw error("newline inside a string");
            }
            if (c == '\\' && pos + 1 < src.length()) {
                char n = src.charAt(pos + 1);
                if (raw) {
                    out.append(c).append(n);
                    pos += 2;
                    continue;
                }
                pos += 2;
                switch (n) {
                    case 'n' -> out.append('\n');
                    case 't' -> out.append('\t');
                    case 'r' -> out.append('\r');
                    case 'b' -> out.append('\b');
                    case 'f' -> out.append('\f');
                    case 'v' -> out.append('\u000B');
                    case 'a' -> out.append('\u0007');
                    case '0' -> out.append('\0');
                    case '\\' -> out.append('\\');
                    case '\'' -> out.append('\'');
                    case '"' -> out.append('"');
                    case '\n' -> { }
                    case 'x' -> out.appendCodePoint(hex(2));
                    case 'u' -> out.appendCodePoint(hex(4));
                    case 'U' -> out.appendCodePoint(hex(8));
                    default -> out.append('\\').append(n);
                }
                continue;
            }
            out.append(c);
            pos++;
        }
    }

    private int hex(int digits) {
        if (pos + digits > src.length()) {
            throw error("truncated escape");
        }
        try {
            int cp = Integer.parseInt(src.substring(pos, pos + digits), 16);
            if (!Character.isValidCodePoint(cp)) {
                throw error("escape outside Unicode");
            }
            pos += digits;
            return cp;
        } catch (NumberFormatException e) {
            throw error("bad escape");
        }
    }

    private String identifier() {
        int start = pos;
        while (pos < src.length() && (Character.isLetterOrDigit(src.charAt(pos)) || src.charAt(pos) == '_')) {
            pos++;
        }
        if (start == pos) {
            throw error("expected a name");
        }
        return src.substring(start, pos);
    }

    private void skipSpace() {
        while (pos < src.length() && Character.isWhitespace(src.charAt(pos))) {
            pos++;
        }
    }

    private boolean peek(char c) {
        return pos < src.length() && src.charAt(pos) == c;
    }

    private void expect(char c) {
        if (!peek(c)) {
            throw error("expected '" + c + "'");
        }
        pos++;
    }

    private TokenizerException error(String what) {
        return new TokenizerException(TokenizerException.Reason.MALFORMED_TOOL_CALL,
                "cannot parse tool call at offset " + pos + ": " + what + " in: " + src);
    }
}
