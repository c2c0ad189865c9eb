package io.github.bigmodel.cli;

import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.SettingMessage;
import io.github.bigmodel.dispatch.plan.DeviceInventory;
import io.github.bigmodel.dispatch.plan.MaxMemory;
import java.io.PrintStream;
import java.io.PrintWriter;
import java.nio.charset.StandardCharsets;
import java.util.Map;

/**
 * What the command line says in its own words: library errors that name a setting get the flag instead of the
 * builder method, the library's SLF4J warnings print as one {@code warning: ...} line, and GPUs a budget names but
 * this machine lacks get one readable note.
 */
final class CliMessages {

    /** Settings (their snake_case identity, see {@link SettingMessage}) and the flags that set them. */
    static final Map<String, String> FLAGS = Map.of(
            "offload_folder", "--offload-folder",
            "max_length", "--max-length",
            "max_new_tokens", "--max-new-tokens",
            "max_memory", "--max-memory");

    private CliMessages() {
    }

    /** The exception's message, with the setting it names spelled as this command line's flag. */
    static String of(Throwable ex) {
        if (ex instanceof SettingMessage.Carrier carrier && carrier.settingMessage() != null) {
            return carrier.message(FLAGS::get);
        }
        String message = ex.getMessage();
        return message == null || message.isBlank() ? ex.getClass().getSimpleName() : message;
    }

    /**
     * slf4j-simple prints {@code [main] WARN io.github.bigmodel.x.Y - text} by default; a command-line user reads
     * {@code warning: text}. Only warnings and errors show unless {@code --verbose}. A property the user set on
     * the java command line wins. Must run before the first logger is made.
     */
    static void configureLogging(boolean verbose) {
        setIfAbsent("org.slf4j.simpleLogger.defaultLogLevel", verbose ? "info" : "warn");
        setIfAbsent("org.slf4j.simpleLogger.showThreadName", "false");
        setIfAbsent("org.slf4j.simpleLogger.showLogName", "false");
        setIfAbsent("org.slf4j.simpleLogger.showShortLogName", "false");
        setIfAbsent("org.slf4j.simpleLogger.levelInBrackets", "false");
        // The planner's "Device 0 is not available" (accelerate's words) is replaced by unavailableGpus' note.
        setIfAbsent("org.slf4j.simpleLogger.log." + MaxMemory.class.getName(), "error");
        // slf4j-simple 2.0 reads warnLevelString but prints "WARN" regardless, and looks System.err up for each
        // line: a stream that words the level as the command line's other lines do stands in for stderr.
        if (!(System.err instanceof LevelWords)) {
            System.setErr(new LevelWords(System.err));
        }
    }

    /** stderr with slf4j-simple's level (first on its lines, as configured above) in words: "warning: ...". */
    static final class LevelWords extends PrintStream {

        LevelWords(PrintStream err) {
            super(err, true, StandardCharsets.UTF_8);
        }

        /** slf4j-simple writes each message with one println. */
        @Override
        public void println(String line) {
            super.println(line == null ? null : worded(line));
        }

        static String worded(String line) {
            for (String[] level : new String[][] {{"WARN ", "warning: "}, {"ERROR ", "error: "}, {"INFO ", "info: "},
                {"DEBUG ", "debug: "}, {"TRACE ", "trace: "}}) {
                if (line.startsWith(level[0])) {
                    return level[1] + line.substring(level[0].length());
                }
            }
            return line;
        }
    }

    private static void setIfAbsent(String key, String value) {
        if (System.getProperty(key) == null) {
            System.setProperty(key, value);
        }
    }

    /**
     * One note per GPU the budget names that this machine does not have, e.g. "note: GPU 0 is not available here;
     * planning it as asked" ({@code doing} is "planning it as asked" for plans, "loading will fail" otherwise).
     */
    static void unavailableGpus(MaxMemory budget, DeviceInventory inventory, PrintWriter err, String doing) {
        int count = inventory.gpuCount();
        for (Device d : budget.asMap().keySet()) {
            if (d.isCuda() && (d.index() < 0 || d.index() >= count)) {
                err.println("note: GPU " + d.index() + " is not available here (" + (count == 0 ? "no GPU"
                        : count + " GPU" + (count == 1 ? "" : "s")) + "); " + doing);
            }
        }
        err.flush();
    }
}
