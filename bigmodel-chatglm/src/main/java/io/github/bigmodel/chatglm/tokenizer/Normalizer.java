package io.github.bigmodel.chatglm.tokenizer;

import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * SentencePiece's normaliser, byte for byte: user-defined symbols are copied unchanged (longest match first), the
 * precompiled charsmap (if any) rewrites the longest matching prefix, then extra whitespace is removed, the dummy
 * prefix added and spaces escaped to U+2581 as the {@link SentencePieceModel.NormalizerSpec} says.
 *
 * <pre>{@code
 * Normalizer normalizer = new Normalizer(model);
 * String normalized = normalizer.normalize("Hello  world"); // "▁Hello▁▁world" with identity rules
 * }</pre>
 */
public final class Normalizer {

    /** UTF-8 of U+2581, SentencePiece's whitespace symbol. */
    private static final byte[] SPACE_SYMBOL = {(byte) 0xE2, (byte) 0x96, (byte) 0x81};
    private static final byte[] REPLACEMENT_CHAR = {(byte) 0xEF, (byte) 0xBF, (byte) 0xBD};

    private final SentencePieceModel.NormalizerSpec spec;
    private final boolean treatWhitespaceAsSuffix;
    private final PrecompiledCharsMap charsMap;
    private final ByteTrieNode userDefined;

    /** A normaliser for {@code model}'s normaliser spec and user-defined symbols. */
    public Normalizer(SentencePieceModel model) {
        this(model.normalizerSpec(), model.trainerSpec().treatWhitespaceAsSuffix(), userDefinedSymbols(model));
    }

    Normalizer(SentencePieceModel.NormalizerSpec spec, boolean treatWhitespaceAsSuffix, List<String> userSymbols) {
        this.spec = spec;
        this.treatWhitespaceAsSuffix = treatWhitespaceAsSuffix;
        byte[] blob = spec.charsmapUnsafe();
        this.charsMap = blob.length == 0 ? null : new PrecompiledCharsMap(blob);
        this.userDefined = new ByteTrieNode();
        for (String symbol : userSymbols) {
            ByteTrieNode node = userDefined;
            for (byte b : symbol.getBytes(StandardCharsets.UTF_8)) {
                node = node.children.computeIfAbsent(b & 0xFF, k -> new ByteTrieNode());
            }
            node.terminal = true;
        }
    }

    private static List<String> userDefinedSymbols(SentencePieceModel model) {
        java.util.ArrayList<String> out = new java.util.ArrayList<>();
        for (int id = 0; id < model.size(); id++) {
            if (model.typeUnchecked(id) == PieceType.USER_DEFINED) {
                out.add(model.pieceUnchecked(id));
            }
        }
        return out;
    }

    private static final class ByteTrieNode {
        final Map<Integer, ByteTrieNode> children = new HashMap<>();
        boolean terminal;
    }

    /** Normalises {@code text}; the empty string (or only removable spaces) gives the empty string. */
    public String normalize(String text) {
        byte[] input = Utf8.encodeStrict(text);
        ByteSink out = new ByteSink(input.length * 2 + 8);
        int pos = 0;
        int end = input.length;
        boolean removeExtra = spec.removeExtraWhitespaces();
        if (removeExtra) {
            // Leading whitespace goes entirely, judged after normalisation of each prefix.
            while (pos < end) {
                Segment seg = normalizePrefix(input, pos, end);
                int consumed = seg.consumed();
                if (!(seg.length() == 1 && seg.byteAt(0) == ' ')) {
                    break;
                }
                pos += consumed;
            }
        }
        if (pos >= end) {
            return "";
        }
        if (!treatWhitespaceAsSuffix && spec.addDummyPrefix()) {
            addSpace(out);
        }
        boolean prevSpace = removeExtra;
        while (pos < end) {
            Segment seg = normalizePrefix(input, pos, end);
            int consumed = seg.consumed();
            int from = 0;
            if (prevSpace) {
                while (from < seg.length() && seg.byteAt(from) == ' ') {
                    from++;
                }
            }
            if (from < seg.length()) {
                for (int n = from; n < seg.length(); n++) {
                    byte b = seg.byteAt(n);
                    if (spec.escapeWhitespaces() && b == ' ') {
                        addSpace(out);
                    } else {
                        out.add(b);
                    }
                }
                prevSpace = seg.byteAt(seg.length() - 1) == ' ';
            }
            pos += consumed;
            if (!removeExtra) {
                prevSpace = false;
            }
        }
        if (removeExtra) {
            byte[] space = spec.escapeWhitespaces() ? SPACE_SYMBOL : new byte[]{' '};
            while (endsWith(out, space)) {
                out.truncate(out.size() - space.length);
            }
        }
        if (treatWhitespaceAsSuffix && spec.addDummyPrefix()) {
            addSpace(out);
        }
        return new String(out.toArray(), StandardCharsets.UTF_8);
    }

    private void addSpace(ByteSink out) {
        if (spec.escapeWhitespaces()) {
            out.add(SPACE_SYMBOL, 0, SPACE_SYMBOL.length);
        } else {
            out.add((byte) ' ');
        }
    }

    private static boolean endsWith(ByteSink out, byte[] suffix) {
        if (out.size() < suffix.length) {
            return false;
        }
        for (int i = 0; i < suffix.length; i++) {
            if (out.get(out.size() - suffix.length + i) != suffix[i]) {
                return false;
            }
        }
        return true;
    }

    /**
     * The bytes a prefix normalises to (a view on the input, a charsmap replacement or U+FFFD) and how many input
     * bytes it consumed. Returned rather than kept in a field: one tokenizer serves several threads at once.
     */
    private record Segment(byte[] source, int from, int to, int consumed) {
        int length() {
            return to - from;
        }

        byte byteAt(int i) {
            return source[from + i];
        }
    }

    /** Normalises the prefix at {@code pos}. */
    private Segment normalizePrefix(byte[] input, int pos, int end) {
        int userLength = matchUserDefined(input, pos, end);
        if (userLength > 0) {
            return new Segment(input, pos, pos + userLength, userLength);
        }
        if (charsMap != null) {
            long match = charsMap.longestMatch(input, pos, end);
            if (match >= 0) {
                int length = (int) (match >>> 32);
                int offset = (int) match;
                int replacementEnd = charsMap.replacementEnd(offset);
                return new Segment(charsMap.replacements(), offset, replacementEnd, length);
            }
        }
        int length = Utf8.validCharLength(input, pos, end);
        if (length == 0) {
            // Malformed UTF-8 consumes one byte and becomes U+FFFD (cannot come from a well-formed String).
            return new Segment(REPLACEMENT_CHAR, 0, 3, 1);
        }
        return new Segment(input, pos, pos + length, length);
    }

    private int matchUserDefined(byte[] input, int pos, int end) {
        ByteTrieNode node = userDefined;
        int best = 0;
        for (int i = pos; i < end; i++) {
            node = node.children.get(input[i] & 0xFF);
            if (node == null) {
                break;
            }
            if (node.terminal) {
                best = i + 1 - pos;
            }
        }
        return best;
    }
}
