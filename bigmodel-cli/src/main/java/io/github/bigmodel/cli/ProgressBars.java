package io.github.bigmodel.cli;

import java.io.PrintWriter;
import java.time.temporal.ChronoUnit;
import me.tongfei.progressbar.ProgressBar;
import me.tongfei.progressbar.ProgressBarBuilder;
import me.tongfei.progressbar.ProgressBarConsumer;
import me.tongfei.progressbar.ProgressBarStyle;

/**
 * Progress bars of the command line (me.tongfei:progressbar), drawn on stderr only: when stderr is a terminal or
 * when {@code --progress} asks for them, and never beside {@code --json} output, so pipes, tests and the demo stay
 * quiet.
 *
 * <pre>{@code
 * try (ProgressBars.Bar bar = ProgressBars.bytes(err, ProgressBars.enabled(progressFlag, json), "Converting", total)) {
 *     bar.step(bytesDone, "model-00001-of-00003.safetensors");
 * }
 * }</pre>
 */
final class ProgressBars {

    /** Width used when the terminal's is unknown (the {@code COLUMNS} variable is not exported by most shells). */
    private static final int DEFAULT_WIDTH = 80;

    private ProgressBars() {
    }

    /** Whether to draw: forced by {@code --progress}, or stderr is a terminal; never with {@code --json}. */
    static boolean enabled(boolean forced, boolean json) {
        return !json && (forced || System.console() != null);
    }

    /** One bar, or nothing when progress is off. */
    interface Bar extends AutoCloseable {
        /** Adds {@code bytes} done and shows {@code message} beside the bar. */
        void step(long bytes, String message);

        @Override
        void close();
    }

    private static final Bar NONE = new Bar() {
        @Override
        public void step(long bytes, String message) {
        }

        @Override
        public void close() {
        }
    };

    /** A bar counting bytes up to {@code totalBytes} (shown in KiB, MiB or GiB), drawn on {@code err}; a no-op when disabled. */
    static Bar bytes(PrintWriter err, boolean enabled, String task, long totalBytes) {
        if (!enabled) {
            return NONE;
        }
        ProgressBar bar = new ProgressBarBuilder().setTaskName(task).setInitialMax(Math.max(totalBytes, 1))
                .setUnit(" " + unit(totalBytes), unitBytes(totalBytes)).setStyle(ProgressBarStyle.ASCII).setUpdateIntervalMillis(200)
                .setSpeedUnit(ChronoUnit.SECONDS).showSpeed().setConsumer(new WriterConsumer(err, width()))
                .build();
        return new Bar() {
            @Override
            public void step(long bytes, String message) {
                bar.stepBy(bytes);
                bar.setExtraMessage(" " + message); // the renderer puts it right after the speed
            }

            @Override
            public void close() {
                bar.close();
            }
        };
    }

    /** Units that keep the counts readable: KiB below 10 MiB, GiB from 10 GiB on, MiB between. */
    static String unit(long totalBytes) {
        return totalBytes < 10L << 20 ? "KiB" : totalBytes < 10L << 30 ? "MiB" : "GiB";
    }

    static long unitBytes(long totalBytes) {
        return totalBytes < 10L << 20 ? 1L << 10 : totalBytes < 10L << 30 ? 1L << 20 : 1L << 30;
    }

    private static int width() {
        String columns = System.getenv("COLUMNS");
        if (columns != null) {
            try {
                int w = Integer.parseInt(columns.strip());
                if (w >= 40) {
                    return w - 1;
                }
            } catch (NumberFormatException ignored) {
                // not a number: the default width
            }
        }
        return DEFAULT_WIDTH - 1;
    }

    /** Redraws the bar in place on a writer (carriage return, padded over the previous line), newline at the end. */
    static final class WriterConsumer implements ProgressBarConsumer {
        private final PrintWriter err;
        private final int width;
        private int lastLength;
        private boolean closed;

        WriterConsumer(PrintWriter err, int width) {
            this.err = err;
            this.width = width;
        }

        @Override
        public int getMaxRenderedLength() {
            return width;
        }

        @Override
        public synchronized void accept(String rendered) {
            if (closed) {
                return;
            }
            StringBuilder line = new StringBuilder("\r").append(rendered);
            for (int i = rendered.length(); i < lastLength; i++) {
                line.append(' ');
            }
            lastLength = rendered.length();
            err.print(line);
            err.flush();
        }

        @Override
        public synchronized void close() {
            if (!closed) {
                closed = true;
                err.println();
                err.flush();
            }
        }
    }
}
