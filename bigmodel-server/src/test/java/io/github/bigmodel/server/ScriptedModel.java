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

    /** Positions of the model a reply is stopped on while it streams: 30,000 tokens take seconds, not 0.5 s. */
    static final int LONG_SEQ_LENGTH = 32768;

    private static ChatGLM glm;
    private static ChatGLM longGlm;

    private ScriptedModel() {
    }

    /** The model folder's replies; earlier rules win when several triggers are in the prompt. */
    static Path write(Path dir) {
        return write(dir, 2048);
    }

    /**
     * The same replies with {@code seqLength} positions: a test that must stop a reply while it streams needs one
     * longer than a quiet machine generates before the stop arrives (1900 tokens took about 0.5 s).
     */
    static Path write(Path dir, int seqLength) {
        return ScriptedCheckpoint.builder()
                .reply("\n" + HELLO)
                .replyWhen("<|observation|>", "\n" + WEATHER)
                .loopWhen("forever", "\nla", " la")
                .replyWhen("apple", "\n" + APPLE)
                .replyWhen("banana", "\n" + BANANA)
                .toolCallWhen(ChatGLM.TOOL_SYSTEM_PROMPT, TOOL, CALL)
                .seqLength(seqLength)
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

    /** The scripted model with {@link #LONG_SEQ_LENGTH} positions (see {@link #write(Path, int)}). */
    static synchronized ChatGLM longGlm() {
        if (longGlm == null) {
            try {
                Path dir = Files.createTempDirectory("bigmodel-scripted-long");
                dir.toFile().deleteOnExit();
                longGlm = ChatGLM.load(write(dir, LONG_SEQ_LENGTH));
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        }
        return longGlm;
    }

    /** A started server on a free loopback port. */
    static OpenAiServer server(Consumer<OpenAiServer.Builder> settings) {
        return server(glm(), settings);
    }

    /** A started server of {@code model} on a free loopback port. */
    static OpenAiServer server(ChatGLM model, Consumer<OpenAiServer.Builder> settings) {
        OpenAiServer.Builder b = OpenAiServer.builder(model).modelId("scripted").host("127.0.0.1").port(0)
                .shutdownGrace(java.time.Duration.ofSeconds(5));
        settings.accept(b);
        try {
            return b.build().start();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}
