package io.github.bigmodel.chatglm;

import static org.assertj.core.api.Assertions.assertThat;

import io.github.bigmodel.core.testing.ReferenceTree;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Closing a model never races its background work: {@link CloseStressChild} loops load -> generate -> close (a
 * block on disk, prefetch 1, safetensors read in place and an offload folder in turn) and close-from-another-thread
 * while two threads generate (dispatched and in memory), with busy threads on every core, in a child JVM so that a
 * native crash is this test's failure (with the child's hs_err summary) rather than the end of the test JVM. The
 * child runs twice: on every core, and pinned to core 0 ({@code taskset -c 0}, where interleavings differ) when
 * {@code taskset} is available.
 *
 * <p>Passes only when the child JVM survives and every operation either gave THUDM's ids or failed with
 * {@code ModelClosedException}. The normal build runs {@value #DEFAULT_CYCLES} + {@value #DEFAULT_CYCLES} cycles
 * per run; {@code -Pstress} (bigmodel-chatglm) sets {@code bigmodel.stress.cycles} and
 * {@code bigmodel.stress.closeCycles} to 500 (docs/reliability.md).
 */
class NativeCloseStressTest {

    private static final Logger LOG = LoggerFactory.getLogger(NativeCloseStressTest.class);
    private static final int DEFAULT_CYCLES = 8;
    private static final Pattern RESULT = Pattern.compile("RESULT cycles=(\\d+) ok=(\\d+) closeCycles=(\\d+)"
            + " completed=(\\d+) closedException=(\\d+) refusedAfterClose=(\\d+) steps=(\\d+) unexpected=(\\d+)"
            + " ms=(\\d+)");

    @TempDir
    Path work;

    @Test
    void loadGenerateCloseAndCloseDuringGenerationNeverCrash() throws Exception {
        int cycles = Integer.getInteger("bigmodel.stress.cycles", DEFAULT_CYCLES);
        int closeCycles = Integer.getInteger("bigmodel.stress.closeCycles", DEFAULT_CYCLES);
        int busy = Math.max(2, Runtime.getRuntime().availableProcessors());
        run("all cores", List.of(), cycles, closeCycles, busy);
        if (tasksetWorks()) {
            run("taskset -c 0", List.of("taskset", "-c", "0"), cycles, closeCycles, 2);
        } else {
            LOG.warn("taskset is not available here: the single-core run is skipped");
        }
    }

    private void run(String label, List<String> prefix, int cycles, int closeCycles, int busy) throws Exception {
        Path target = Path.of("target").toAbsolutePath();
        Files.createDirectories(target);
        List<String> cmd = new ArrayList<>(prefix);
        cmd.addAll(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(), "-Xmx768m",
                "-XX:ErrorFile=" + target.resolve("hs_err_stress_pid%p.log"),
                "-D" + ReferenceTree.PROPERTY + "=" + ReferenceTree.root(),
                "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
                "-cp", System.getProperty("java.class.path"), CloseStressChild.class.getName(),
                String.valueOf(cycles), String.valueOf(closeCycles), String.valueOf(busy),
                Files.createTempDirectory(work, "stress").toString(), String.valueOf(System.nanoTime())));
        long started = System.nanoTime();
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        boolean ended = p.waitFor(30, TimeUnit.MINUTES);
        long seconds = TimeUnit.NANOSECONDS.toSeconds(System.nanoTime() - started);
        assertThat(ended).as(label + ": child ended").isTrue();
        int exit = p.exitValue();
        assertThat(exit).as(label + ": the child JVM must survive and see nothing unexpected (exit " + exit + ")\n"
                + tail(out, 6000) + crashReport(target, p.pid())).isZero();
        Matcher m = RESULT.matcher(out);
        assertThat(m.find()).as(label + ": result line in\n" + tail(out, 4000)).isTrue();
        long ok = Long.parseLong(m.group(2));
        long completed = Long.parseLong(m.group(4));
        long closed = Long.parseLong(m.group(5));
        long refused = Long.parseLong(m.group(6));
        long steps = Long.parseLong(m.group(7));
        LOG.info("{}: {} load/generate/close cycles ({} correct), {} close-during-generation cycles: {} generations"
                + " completed, {} ended by ModelClosedException, {} steps; child {} ms, {} s with startup", label,
                cycles, ok, closeCycles, completed, closed, steps, m.group(9), seconds);
        assertThat(ok).as(label + ": cycles with THUDM's ids").isEqualTo(cycles);
        assertThat(Long.parseLong(m.group(8))).as(label + ": unexpected outcomes").isZero();
        assertThat(refused).as(label + ": generations refused after close").isEqualTo(closeCycles);
        // Each cycle ends each of its generation threads by ModelClosedException exactly once.
        assertThat(closed).as(label + ": generation threads ended by the close").isEqualTo(2L * closeCycles);
    }

    private static boolean tasksetWorks() {
        try {
            Process p = new ProcessBuilder("taskset", "-c", "0", "true").redirectErrorStream(true).start();
            p.getInputStream().readAllBytes();
            return p.waitFor(10, TimeUnit.SECONDS) && p.exitValue() == 0;
        } catch (IOException e) {
            return false;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return false;
        }
    }

    /** The head of the child's hs_err file, when it crashed. */
    private static String crashReport(Path target, long pid) throws IOException {
        Path report = target.resolve("hs_err_stress_pid" + pid + ".log");
        if (!Files.isRegularFile(report)) {
            try (Stream<Path> files = Files.list(target)) {
                // Under taskset the pid is taskset's own only when it forked; look for any report of this run.
                report = files.filter(f -> f.getFileName().toString().startsWith("hs_err_stress_pid")).findFirst()
                        .orElse(null);
            }
        }
        if (report == null) {
            return "";
        }
        List<String> lines = Files.readAllLines(report, StandardCharsets.ISO_8859_1);
        return "\n--- " + report + " ---\n" + String.join("\n", lines.subList(0, Math.min(80, lines.size())));
    }

    private static String tail(String s, int chars) {
        return s.length() <= chars ? s : "..." + s.substring(s.length() - chars);
    }
}
