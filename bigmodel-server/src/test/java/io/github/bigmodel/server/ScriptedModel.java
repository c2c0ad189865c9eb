package io.github.bigmodel.server;

import io.github.bigmodel.chatglm.model.ScriptedCheckpoint;
import io.github.bigmodel.chatglm.chat.ChatGLM;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.function.Consumer;

/**
 * The scripted ChatGLM3 every server test talks to, written once per test JVM: its greedy replies are fixed texts
 * chosen by what the prompt contains, so tests know every answer exactly and can drive real tool calls.
 */
final class ScriptedModel {

    static final String HELLO = "Hello from a scripted model.";
    static final String APPLE = "Apples are red.";
    static final String BANANA = "Bananas grow in bunches.";
    static final String WEATHER = "Sunny, 25 degrees.";
    static final String TOOL = "get_weather";
    static final String CALL = "tool_call(city='Beijing', unit='celsius')";

    private static ChatGLM glm;

    private ScriptedModel() {
    }

    /** The model folder's replies; earlier rules win when several triggers are in the prompt. */
    static Path write(Path dir) {
        return ScriptedCheckpoint.builder()
                .reply("\n" + HELLO)
                .replyWhen("<|observation|>", "\n" + WEATHER)
                .loopWhen("forever", "\nla", " la")
                .replyWhen("apple", "\n" + APPLE)
                .replyWhen("banana", "\n" + BANANA)
                .toolCallWhen(ChatGLM.TOOL_SYSTEM_PROMPT, TOOL, CALL)
                .seqLength(2048)
                .write(dir);
    }

    static synchronized ChatGLM glm() {
        if (glm == null) {
            try {
                Path dir = Files.createTempDirectory("bigmodel-scripted");
                dir.toFile().deleteOnExit();
                glm = ChatGLM.load(write(dir));
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        }
        return glm;
    }

    /** A started server on a free loopback port. */
    static OpenAiServer server(Consumer<OpenAiServer.Builder> settings) {
        OpenAiServer.Builder b = OpenAiServer.builder(glm()).modelId("scripted").host("127.0.0.1").port(0)
                .shutdownGrace(java.time.Duration.ofSeconds(5));
        settings.accept(b);
        try {
            return b.build().start();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}
