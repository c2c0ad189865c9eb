package io.github.bigmodel.core;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * JavaCPP compares the process's memory with {@code maxPhysicalBytes} (by default twice {@code -Xmx}) at each of its
 * allocations and fails them past it. Measured with JavaCPP 1.5.13: its count leaves out file-backed pages, so
 * memory-mapped weights do not trip it, but weights held in anonymous memory (loaded or converted onto the CPU) do.
 * A child JVM with a 256 MiB heap holds 640 MiB either way; with {@link NativeRuntime}'s settings it keeps
 * allocating, and the control with JavaCPP's limits fails on the anonymous case, so the test can tell the difference.
 */
class JavaCppLimitsTest {

    private static final String HEAP = "-Xmx256m";
    private static final String[] JAVACPP_LIMITS = {"-Dorg.bytedeco.javacpp.maxPhysicalBytes=512m",
        "-Dorg.bytedeco.javacpp.maxBytes=256m"};

    private static Result child(Path dir, String mode, String kind, String... jvmFlags)
            throws IOException, InterruptedException {
        List<String> cmd = new ArrayList<>();
        cmd.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
        cmd.add(HEAP);
        // A crash report belongs in target/, never in the module folder.
        cmd.add("-XX:ErrorFile=" + Path.of("target", "hs_err_child_pid%p.log").toAbsolutePath());
        cmd.addAll(List.of(jvmFlags));
        cmd.add("-cp");
        cmd.add(System.getProperty("java.class.path"));
        cmd.add(JavaCppLimitsChild.class.getName());
        cmd.add(dir.resolve("held-" + mode + "-" + kind + ".bin").toString());
        cmd.add("640");
        cmd.add(mode);
        cmd.add(kind);
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        boolean done = p.waitFor(120, TimeUnit.SECONDS);
        if (!done) {
            p.destroyForcibly();
        }
        return new Result(done ? p.exitValue() : -1, out);
    }

    record Result(int exit, String output) {
        long field(String name) {
            return Long.parseLong(output.replaceAll("(?s).*" + name + "=(\\d+).*", "$1"));
        }
    }

    @Test
    void weightsLargerThanJavaCppsLimitDoNotBreakBigmodel(@TempDir Path dir) throws Exception {
        Result anonymous = child(dir, "bigmodel", "anonymous");
        assertThat(anonymous.exit()).as(anonymous.output()).isZero();
        assertThat(anonymous.field("resident")).as("resident above JavaCPP's default limit (2 x heap)")
                .isGreaterThan(512L << 20);

        Result control = child(dir, "javacpp", "anonymous", JAVACPP_LIMITS);
        assertThat(control.exit()).as(control.output()).isNotZero();
        assertThat(control.output()).contains("Physical memory usage is too high");
    }

    @Test
    void javacppDoesNotCountMappedPages(@TempDir Path dir) throws Exception {
        Result mapped = child(dir, "javacpp", "mapped", JAVACPP_LIMITS);
        assertThat(mapped.exit()).as(mapped.output()).isZero();
        assertThat(mapped.field("resident") - mapped.field("physicalBytes")).as("file-backed pages left out")
                .isGreaterThan(512L << 20);
    }
}
