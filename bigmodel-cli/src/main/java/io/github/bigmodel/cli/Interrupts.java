package io.github.bigmodel.cli;

import java.util.function.BooleanSupplier;
import org.slf4j.LoggerFactory;

/**
 * Ctrl-C (SIGINT) for interactive commands: the handler decides whether the interrupt was used (a reply stopped);
 * when it was not, the program quits with 130 as it would have without a handler.
 */
final class Interrupts {

    private Interrupts() {
    }

    /** Installs {@code handler} for SIGINT; where the JVM does not allow it (-Xrs), Ctrl-C keeps quitting. */
    @SuppressWarnings("restriction")
    static void onCtrlC(BooleanSupplier handler) {
        try {
            sun.misc.Signal.handle(new sun.misc.Signal("INT"), signal -> {
                if (!handler.getAsBoolean()) {
                    System.out.println();
                    System.out.flush();
                    Runtime.getRuntime().halt(130);
                }
            });
        } catch (IllegalArgumentException | UnsupportedOperationException e) {
            LoggerFactory.getLogger(Interrupts.class).debug("SIGINT stays the JVM's: {}", e.toString());
        }
    }
}
