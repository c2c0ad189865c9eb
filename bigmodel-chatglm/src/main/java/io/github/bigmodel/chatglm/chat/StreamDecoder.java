package io.github.bigmodel.chatglm.chat;

import java.util.Arrays;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Turns generated ids into text deltas without splitting a character.
 *
 * <p>Token text: each new id is decoded together with a few ids before it (a window that starts after the last
 * emitted text, so the cost per token is constant, not the whole reply): the delta is what the window's text gained.
 * While that text ends with U+FFFD (an unfinished UTF-8 byte-fallback sequence) nothing is taken, so a multi-byte
 * character comes out whole once its last byte arrives. The window's first id is kept from one whose text is
 * non-empty, so SentencePiece's leading-space rule sees the same context as a decode of the whole reply.
 *
 * <p>Reply text: the response processing (strip, placeholder, ChatGLM-6B's punctuation) is applied to the raw
 * text, and only the part that later tokens cannot change is emitted (trailing characters that may still be
 * rewritten are held back). {@link #finish} decodes every id once more and emits the exact remainder.
 */
final class StreamDecoder {

    private static final Logger LOG = LoggerFactory.getLogger(StreamDecoder.class);
    private static final char REPLACEMENT = '\uFFFD';

    private final PromptFormat format;
    private int[] ids = new int[64];
    private int size;
    private int prefixOffset;
    private int readOffset;
    private final StringBuilder raw = new StringBuilder();
    private final StringBuilder emitted = new StringBuilder();
    private boolean diverged;

    StreamDecoder(PromptFormat format) {
        this.format = format;
    }

    /** Adds one generated (non-stop) id; returns the text it completes, possibly empty. */
    String push(int id) {
        if (size == ids.length) {
            ids = Arrays.copyOf(ids, size * 2);
        }
        ids[size++] = id;
        String before = format.rawDecode(Arrays.copyOfRange(ids, prefixOffset, readOffset));
        String now = format.rawDecode(Arrays.copyOfRange(ids, prefixOffset, size));
        if (now.length() <= before.length() || !now.startsWith(before)
                || now.charAt(now.length() - 1) == REPLACEMENT) {
            return "";
        }
        raw.append(now, before.length(), now.length());
        if (!format.rawDecode(Arrays.copyOfRange(ids, readOffset, size)).isEmpty()) {
            prefixOffset = readOffset;
        }
        readOffset = size;
        return emit(format.display(raw.toString(), false), false);
    }

    /** The rest of the reply, from a decode of every id ({@code allIds}: stop token excluded). */
    String finish(int[] allIds) {
        return emit(format.display(format.rawDecode(allIds), true), true);
    }

    private String emit(String display, boolean last) {
        if (diverged) {
            return "";
        }
        if (!display.regionMatches(0, emitted.toString(), 0, emitted.length())) {
            // Only possible when a reply opens a second <|assistant|> segment; the final response stays exact.
            diverged = true;
            LOG.debug("Streamed text can no longer be extended (reply rewritten after {} chars)", emitted.length());
            return "";
        }
        int stable = last ? display.length() : display.length() - format.holdBack(display);
        if (stable <= emitted.length()) {
            return "";
        }
        String delta = display.substring(emitted.length(), stable);
        emitted.append(delta);
        return delta;
    }
}
