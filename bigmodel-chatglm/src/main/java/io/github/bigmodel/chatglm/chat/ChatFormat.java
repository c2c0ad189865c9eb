package io.github.bigmodel.chatglm.chat;

/**
 * The three prompt conventions of THUDM's {@code chat()}.
 *
 * <pre>{@code
 * ChatGLM glm = ChatGLM.load(dir, DType.FLOAT32, ChatFormat.CHATGLM2);
 * }</pre>
 */
public enum ChatFormat {
    /** ChatGLM-6B: the bare query, or {@code [Round i]\n问：q\n答：r\n} from round 0; ids end {@code [gMASK] <sop>}. */
    CHATGLM_6B,
    /** ChatGLM2-6B: {@code [Round i]\n\n问：q\n\n答：r\n\n} from round 1 after {@code [gMASK] sop}. */
    CHATGLM2,
    /** ChatGLM3-6B: role tokens ({@code <|system|>}, {@code <|user|>}, {@code <|assistant|>}, {@code <|observation|>}). */
    CHATGLM3
}
