package io.github.bigmodel.chatglm.chat;

import java.util.List;

/**
 * Stop strings over streamed text (OpenAI's {@code stop}, LangChain4j's stop sequences): the reply ends before the
 * first occurrence of any of them, which is not passed on. Text that may still turn out to start a stop string is
 * held back until a later delta decides. Not thread-safe.
 *
 * <pre>{@code
 * StopStrings stop = new StopStrings(List.of("\n\n"));
 * while (stream.hasNext()) {
 *     out.print(stop.push(stream.next()));
 *     if (stop.matched()) { stream.close(); break; }
 * }
 * out.print(stop.flush());
 * }</pre>
 */
public final class StopStrings {

    private final List<String> stops;
    private final StringBuilder pending = new StringBuilder();
    private boolean matched;

    /** @param stops the stop strings (none: every delta passes unchanged); each must be non-empty */
    public StopStrings(List<String> stops) {
        for (String s : stops) {
            if (s == null || s.isEmpty()) {
                throw new IllegalArgumentException("stop strings must be non-empty");
            }
        }
        this.stops = List.copyOf(stops);
    }

    /** Adds a delta; returns the text that can be sent now. */
    public String push(String delta) {
        if (matched) {
            return "";
        }
        if (stops.isEmpty()) {
            return delta;
        }
        pending.append(delta);
        int cut = -1;
        for (String s : stops) {
            int at = pending.indexOf(s);
            if (at >= 0 && (cut < 0 || at < cut)) {
                cut = at;
            }
        }
        if (cut >= 0) {
            matched = true;
            String out = pending.substring(0, cut);
            pending.setLength(0);
            return out;
        }
        int hold = 0;
        for (String s : stops) {
            for (int n = Math.min(s.length() - 1, pending.length()); n > hold; n--) {
                if (pending.toString().regionMatches(pending.length() - n, s, 0, n)) {
                    hold = n;
                    break;
                }
            }
        }
        String out = pending.substring(0, pending.length() - hold);
        pending.delete(0, pending.length() - hold);
        return out;
    }

    /** Whether a stop string was found: generation should end. */
    public boolean matched() {
        return matched;
    }

    /** What was held back, at the end of the reply. */
    public String flush() {
        String out = pending.toString();
        pending.setLength(0);
        return out;
    }
}
