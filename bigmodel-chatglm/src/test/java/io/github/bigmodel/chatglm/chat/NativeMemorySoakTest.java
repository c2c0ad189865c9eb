package io.github.bigmodel.chatglm.chat;

import static org.assertj.core.api.Assertions.assertThat;

import io.github.bigmodel.core.DType;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Long sessions must not grow native memory: a 2,000-token generation and 100 chat turns on a small random ChatGLM3
 * model, measured as the growth of the process's anonymous resident memory after a warm-up of the same kind, in a
 * child JVM whose heap is fixed and pre-touched so that the growth is native (bound: 32 MiB).
 */
class NativeMemorySoakTest {

    private static final Logger LOG = LoggerFactory.getLogger(NativeMemorySoakTest.class);
    private static final long BOUND = 32L << 20;

    @TempDir
    static Path dir;
    static Path model;

    @BeforeAll
    static void writeModel() throws Exception {
        model = ChatTestSupport.writeSmallChatGLM3(dir.resolve("model"), 4096, DType.FLOAT32, 11);
    }

    @Test
    void longGenerationAndManyChatTurnsDoNotGrowNativeMemory() throws Exception {
        List<String> cmd = new ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "-Xms128m", "-Xmx128m", "-XX:+AlwaysPreTouch", "-XX:+UseSerialGC",
                "-XX:ErrorFile=" + Path.of("target", "hs_err_child_pid%p.log").toAbsolutePath(),
                "-Dorg.bytedeco.javacpp.maxBytes=0", "-Dorg.bytedeco.javacpp.maxPhysicalBytes=0",
                "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
                "-cp", System.getProperty("java.class.path"), NativeMemorySoakChild.class.getName(), model.toString()));
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertThat(p.waitFor(240, TimeUnit.SECONDS)).as("child finished").isTrue();
        assertThat(p.exitValue()).as(out).isZero();
        long generation = Long.parseLong(out.replaceAll("(?s).*generation=(-?\\d+).*", "$1"));
        long chat = Long.parseLong(out.replaceAll("(?s).*chat=(-?\\d+).*", "$1"));
        LOG.info("anonymous memory growth after warm-up: 2000-token generation {} KiB, 100 chat turns {} KiB",
                generation >> 10, chat >> 10);
        assertThat(generation).as("growth over a 2000-token generation").isLessThan(BOUND);
        assertThat(chat).as("growth over 100 chat turns").isLessThan(BOUND);
    }
}
