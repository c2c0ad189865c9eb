package io.github.bigmodel.chatglm.chat;

import java.util.List;

/**
 * One answer of {@link ChatGLM#chat}: what Python's {@code response, history = model.chat(...)} returns, plus the
 * ids that went in and came out.
 *
 * <ul>
 *   <li>{@link #reply()}: ChatGLM3's {@code process_response} value: {@link AssistantReply.Text}, a parsed
 *       {@link AssistantReply.ToolCall} (name and keyword arguments, parsed, never evaluated) or
 *       {@link AssistantReply.Named}; ChatGLM-6B / ChatGLM2 always give {@code Text}.</li>
 *   <li>{@link #text()}: the reply's text; for a tool call or a named reply, the content the model wrote after the
 *       name line (what the history stores). Streamed deltas concatenate to it.</li>
 *   <li>{@link #history()}: the new history (the input history is never modified). ChatGLM-6B / ChatGLM2 rounds are
 *       user/assistant message pairs; {@link ChatGLM#roundsOf} gives Python's {@code [(query, response)]}.</li>
 * </ul>
 *
 * <pre>{@code
 * ChatResponse r = glm.chat("你好", List.of());
 * System.out.println(r.text());
 * r = glm.chat("晚上睡不着应该怎么办", r.history());
 * }</pre>
 *
 * @param text          the reply text (see above)
 * @param reply         the processed reply
 * @param history       history including this exchange
 * @param decodedOutput the decoded generation before processing ({@code tokenizer.decode(outputs)})
 * @param promptIds     the ids given to generation
 * @param generatedIds  the ids generated (the stop token included when there was one)
 * @param finishReason  why generation ended
 */
public record ChatResponse(String text, AssistantReply reply, List<ChatMessage> history, String decodedOutput,
                           int[] promptIds, int[] generatedIds, FinishReason finishReason) {

    public ChatResponse {
        history = List.copyOf(history);
    }

    /** The parsed tool call, or null when the reply is not one. */
    public AssistantReply.ToolCall toolCall() {
        return reply instanceof AssistantReply.ToolCall call ? call : null;
    }
}
