package io.github.bigmodel.server;

import java.util.List;

/**
 * OpenAI's {@code stop}: the reply ends before the first occurrence of any stop string, which is not sent. Text
 * that may still turn out to start a stop string is held back until the next delta decides.
 */
final class StopMatcher {

    private final List<String> stops;
    private final StringBuilder pending = new StringBuilder();
    private boolean matched;

    StopMatcher(List<String> stops) {
        this.stops = stops;
    }

    /** Adds a delta; returns the text that can be sent now. */
    String push(String delta) {
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
    boolean matched() {
        return matched;
    }

    /** What was held back, at the end of the reply. */
    String flush() {
        String out = pending.toString();
        pending.setLength(0);
        return out;
    }
}
