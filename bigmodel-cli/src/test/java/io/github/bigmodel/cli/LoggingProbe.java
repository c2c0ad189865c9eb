package io.github.bigmodel.cli;

import org.slf4j.LoggerFactory;

/** A child JVM's main for FirstHourCliTest: logs as the library does, with the command line's logging set up. */
final class LoggingProbe {

    private LoggingProbe() {
    }

    public static void main(String[] args) {
        CliMessages.configureLogging(args.length > 0 && args[0].equals("--verbose"));
        LoggerFactory.getLogger("io.github.bigmodel.dispatch.OffloadStore").warn("Offload folder {} cannot be reused",
                "/tmp/offload");
        LoggerFactory.getLogger("io.github.bigmodel.chatglm.chat.ChatGLM").info("Loaded {}", "chatglm3-tiny");
        // Replaced by the command line's own note.
        LoggerFactory.getLogger(io.github.bigmodel.dispatch.plan.MaxMemory.class).warn("Device 0 is not available");
    }
}
