/**
 * The OpenAI-compatible HTTP server over one loaded ChatGLM ({@code OpenAiServer}), on the JDK's
 * {@code com.sun.net.httpserver} with Jackson; its chat page is a resource of this module.
 */
module io.github.bigmodel.server {
    requires transitive io.github.bigmodel.chatglm;
    requires jdk.httpserver;
    requires com.fasterxml.jackson.databind;
    requires org.slf4j;

    exports io.github.bigmodel.server;
}
