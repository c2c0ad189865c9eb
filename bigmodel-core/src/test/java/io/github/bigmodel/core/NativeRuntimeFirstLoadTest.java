package io.github.bigmodel.core;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The first run with an empty JavaCPP cache: JavaCPP used to extract libtorch's libraries one at a time as it loaded
 * them, so {@code libtorch.so} was loaded before {@code libtorch_cpu.so} was extracted and the dynamic linker took
 * the system's {@code libtorch_cpu.so} where one is installed (Debian's {@code libtorch1.13}); the JVM then crashed
 * with SIGSEGV. {@link NativeRuntime#init()} extracts them all first. A child JVM with its own empty cache folder makes
 * its first tensor; on machines without a system libtorch this passes either way, on machines with one (this project's
 * build machine) it crashed before the fix.
 */
class NativeRuntimeFirstLoadTest {

    @Test
    void aFirstRunWithAnEmptyCacheLoadsLibtorchAndComputes(@TempDir Path cache) throws IOException,
            InterruptedException {
        List<String> cmd = List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(), "-Xmx256m",
                "-XX:ErrorFile=" + Path.of("target", "hs_err_child_pid%p.log").toAbsolutePath(),
                "-Dorg.bytedeco.javacpp.cachedir=" + cache, "-cp", System.getProperty("java.class.path"),
                FirstLoadChild.class.getName());
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        boolean done = p.waitFor(300, TimeUnit.SECONDS);
        if (!done) {
            p.destroyForcibly();
        }
        assertThat(done).as("child finished").isTrue();
        assertThat(p.exitValue()).as(out).isZero();
        assertThat(out).contains("sum=3.0");
        try (var files = Files.walk(cache)) {
            assertThat(files.anyMatch(f -> f.getFileName().toString().startsWith("libtorch_cpu")))
                    .as("libtorch extracted into the test's own cache").isTrue();
        }
    }
}
