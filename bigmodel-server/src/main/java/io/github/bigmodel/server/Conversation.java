package io.github.bigmodel.server;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.github.bigmodel.chatglm.chat.ChatFormat;
import io.github.bigmodel.chatglm.chat.ChatGLM;
import io.github.bigmodel.chatglm.chat.ToolCallWriter;
import io.github.bigmodel.chatglm.chat.ChatMessage;
import java.util.ArrayList;
import java.util.List;

/**
 * OpenAI messages as a ChatGLM turn: the history, the new message and its role.
 *
 * <p>ChatGLM3: declared tools become THUDM's tool system turn in front ({@link ChatGLM#toolSystemMessage}, the
 * function objects as the tools JSON); system (and developer) messages stay system turns; an assistant message's
 * {@code tool_calls} become one assistant turn per call with the function name as metadata and the call written
 * as the model writes it ({@code ```python\ntool_call(k=v)\n```}); a {@code tool} message becomes an
 * {@code observation} turn. The last message (user or tool) is the new turn.
 *
 * <p>ChatGLM-6B / ChatGLM2 know only user/assistant rounds: tools, system and tool messages are refused.
 *
 * @param history     the turns before the new one
 * @param query       the new message's text
 * @param role        its ChatGLM role ({@code user} or {@code observation})
 * @param toolsActive whether a tool system turn was put in front (the reply may be a tool call)
 */
record Conversation(List<ChatMessage> history, String query, String role, boolean toolsActive) {

    static Conversation of(CompletionRequest req, ChatFormat format, ObjectMapper json) {
        List<CompletionRequest.Message> msgs = req.messages();
        CompletionRequest.Message last = msgs.get(msgs.size() - 1);
        String lastAt = "messages[" + (msgs.size() - 1) + "]";
        if (!last.role().equals("user") && !last.role().equals("tool")) {
            throw ApiException.invalid(lastAt + ".role", "The last message must be a user or tool message, not "
                    + last.role());
        }
        if (format != ChatFormat.CHATGLM3) {
            return legacy(req, format, last, lastAt);
        }
        List<ChatMessage> history = new ArrayList<>();
        boolean toolsActive = !req.tools().isEmpty() && !req.toolChoice().mode().equals("none");
        if (toolsActive) {
            ArrayNode functions = json.createArrayNode();
            for (CompletionRequest.Tool t : req.tools()) {
                if (req.toolChoice().function() != null && !req.toolChoice().function().equals(t.name())) {
                    continue; // a named choice leaves the model only that function to call
                }
                ObjectNode f = functions.addObject();
                f.put("name", t.name());
                if (t.description() != null) {
                    f.put("description", t.description());
                }
                if (t.parameters() != null) {
                    f.set("parameters", t.parameters());
                }
            }
            history.add(ChatGLM.toolSystemMessage(functions));
        }
        for (int i = 0; i < msgs.size() - 1; i++) {
            CompletionRequest.Message m = msgs.get(i);
            String at = "messages[" + i + "]";
            switch (m.role()) {
                case "system", "developer" -> history.add(ChatMessage.of("system", m.content()));
                case "user" -> history.add(ChatMessage.of("user", m.content()));
                case "tool" -> history.add(ChatMessage.of("observation", m.content()));
                default -> {
                    if (m.content() != null && (!m.content().isEmpty() || m.toolCalls().isEmpty())) {
                        history.add(new ChatMessage("assistant", m.content(), "", null));
                    }
                    for (int c = 0; c < m.toolCalls().size(); c++) {
                        CompletionRequest.ToolCallIn call = m.toolCalls().get(c);
                        try {
                            history.add(ToolCallWriter.assistantCall(call.name(), call.arguments()));
                        } catch (IllegalArgumentException e) {
                            throw ApiException.invalid(at + ".tool_calls[" + c + "].function.arguments",
                                    e.getMessage());
                        }
                    }
                }
            }
        }
        String role = last.role().equals("tool") ? "observation" : "user";
        return new Conversation(history, last.content(), role, toolsActive);
    }

    private static Conversation legacy(CompletionRequest req, ChatFormat format, CompletionRequest.Message last,
                                       String lastAt) {
        if (!req.tools().isEmpty()) {
            throw ApiException.unsupported("tools", "Tools need a ChatGLM3 model; this server runs " + format);
        }
        if (last.role().equals("tool")) {
            throw ApiException.unsupported(lastAt + ".role", format + " has no tool messages");
        }
        List<ChatMessage> history = new ArrayList<>();
        List<CompletionRequest.Message> msgs = req.messages();
        for (int i = 0; i < msgs.size() - 1; i++) {
            CompletionRequest.Message m = msgs.get(i);
            if (!m.role().equals("user") && !m.role().equals("assistant") || !m.toolCalls().isEmpty()) {
                throw ApiException.unsupported("messages[" + i + "].role", format
                        + " knows only user and assistant messages (no system, tool or tool calls)");
            }
            history.add(ChatMessage.of(m.role(), m.content()));
        }
        return new Conversation(history, last.content(), "user", false);
    }
}
