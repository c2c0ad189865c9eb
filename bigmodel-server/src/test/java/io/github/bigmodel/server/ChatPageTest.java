package io.github.bigmodel.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.File;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/**
 * The chat page in headless Chromium, driven by Playwright ({@code src/test/page/page-test.mjs}): it streams a
 * reply, keeps the history, sends the system prompt and temperature, stops a long reply (the server frees its
 * cache) and shows the model's device map and memory. Skips when node, the system's Chromium or
 * {@code playwright-core} (npm install in src/test/page; .ci/run does it) is missing.
 */
class ChatPageTest {

    private static final Path PAGE_TEST = Path.of("src", "test", "page");

    private static String chromium() {
        String given = System.getenv("CHROMIUM");
        for (String candidate : new String[] {given, "/usr/bin/chromium", "/usr/bin/chromium-browser"}) {
            if (candidate != null && Files.isExecutable(Path.of(candidate))) {
                return candidate;
            }
        }
        return null;
    }

    private static boolean onPath(String program) {
        for (String dir : System.getenv().getOrDefault("PATH", "").split(File.pathSeparator)) {
            if (Files.isExecutable(Path.of(dir, program))) {
                return true;
            }
        }
        return false;
    }

    @Test
    void thePageStreamsKeepsHistoryAndStops() throws Exception {
        String chromium = chromium();
        assumeTrue(chromium != null, "no Chromium installed (apt-get install chromium)");
        assumeTrue(onPath("node"), "no node on PATH");
        assumeTrue(Files.isDirectory(PAGE_TEST.resolve("node_modules/playwright-core")),
                "playwright-core not installed (npm install in " + PAGE_TEST + ")");
        try (OpenAiServer server = ScriptedModel.server(ScriptedModel.longGlm(), b -> { })) {
            Path log = Files.createTempFile("page-test", ".log");
            Process p = new ProcessBuilder(List.of("node", "page-test.mjs", server.baseUrl().toString(), chromium))
                    .directory(PAGE_TEST.toFile()).redirectErrorStream(true).redirectOutput(log.toFile()).start();
            boolean done = p.waitFor(180, TimeUnit.SECONDS);
            if (!done) {
                p.destroyForcibly().waitFor(10, TimeUnit.SECONDS);
            }
            String output = Files.readString(log, StandardCharsets.UTF_8);
            Files.deleteIfExists(log);
            assertThat(done).as("page test finished in time: " + output).isTrue();
            assertThat(p.exitValue()).as(output).isZero();
            assertThat(output).contains("PAGE OK");
        }
    }
}
