/**
 * The ChatGLM family on top of the other modules: what a model folder is ({@code ChatGLMFamily}, configs), the
 * modeling ({@code model}), generation, chat with roles and tool calls, and the tokenizers. Tensor helpers shared by
 * the modeling and generation code ({@code internal}) are not exported.
 */
module io.github.bigmodel.chatglm {
    requires transitive io.github.bigmodel.dispatch;
    requires transitive com.fasterxml.jackson.databind;
    requires org.slf4j;

    exports io.github.bigmodel.chatglm;
    exports io.github.bigmodel.chatglm.chat;
    exports io.github.bigmodel.chatglm.generation;
    exports io.github.bigmodel.chatglm.model;
    exports io.github.bigmodel.chatglm.tokenizer;
}
