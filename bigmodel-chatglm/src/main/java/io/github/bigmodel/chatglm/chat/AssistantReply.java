package io.github.bigmodel.chatglm.chat;

import java.util.LinkedHashMap;
import java.util.Map;

/**
 * What ChatGLM3's {@code process_response} returns for a reply: plain text, a parsed tool call (when the history
 * starts with a system item that has tools) or a named message with content (metadata without tools, e.g. the code
 * interpreter).
 *
 * <pre>{@code
 * AssistantReply reply = glm3.processResponse(decoded, history).reply();
 * if (reply instanceof AssistantReply.ToolCall call) { run(call.name(), call.parameters()); }
 * }</pre>
 */
public sealed interface AssistantReply {

    /** The value as Python would hold it: a {@code String} or a {@code dict} of name and parameters/content. */
    Object toPythonValue();

    /** A plain reply. */
    record Text(String text) implements AssistantReply {
        @Override
        public Object toPythonValue() {
            return text;
        }
    }

    /** {@code {"name": ..., "parameters": {...}}}: a tool call with its keyword arguments. */
    record ToolCall(String name, Map<String, Object> parameters) implements AssistantReply {
        @Override
        public Object toPythonValue() {
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("name", name);
            m.put("parameters", parameters);
            return m;
        }
    }

    /** {@code {"name": ..., "content": ...}}: a reply addressed by metadata when no tools are declared. */
    record Named(String name, String content) implements AssistantReply {
        @Override
        public Object toPythonValue() {
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("name", name);
            m.put("content", content);
            return m;
        }
    }
}
