package io.github.bigmodel.chatglm.tokenizer;

/**
 * SentencePiece's compiled normalisation rules ({@code NormalizerSpec.precompiled_charsmap}): a little-endian
 * uint32 with the byte size of a Darts double-array trie, the trie's 32-bit units, then NUL-terminated replacement
 * strings. The trie is keyed by UTF-8 bytes of the input; a leaf's value is the offset of the replacement.
 */
final class PrecompiledCharsMap {

    private final int[] units;
    private final byte[] replacements;

    PrecompiledCharsMap(byte[] blob) {
        if (blob.length < 4) {
            throw malformed("precompiled_charsmap is " + blob.length + " bytes, shorter than its 4-byte header");
        }
        long trieSize = (blob[0] & 0xFFL) | (blob[1] & 0xFFL) << 8 | (blob[2] & 0xFFL) << 16 | (blob[3] & 0xFFL) << 24;
        if (trieSize > blob.length - 4L || trieSize % 4 != 0 || trieSize == 0) {
            throw malformed("precompiled_charsmap trie size " + trieSize + " does not fit the " + blob.length
                    + "-byte blob");
        }
        units = new int[(int) (trieSize / 4)];
        for (int i = 0; i < units.length; i++) {
            int o = 4 + i * 4;
            units[i] = (blob[o] & 0xFF) | (blob[o + 1] & 0xFF) << 8 | (blob[o + 2] & 0xFF) << 16 | (blob[o + 3] & 0xFF) << 24;
        }
        int start = 4 + (int) trieSize;
        replacements = new byte[blob.length - start];
        System.arraycopy(blob, start, replacements, 0, replacements.length);
    }

    private static boolean hasLeaf(int unit) {
        return ((unit >>> 8) & 1) == 1;
    }

    private static int value(int unit) {
        return unit & 0x7FFFFFFF;
    }

    private static int label(int unit) {
        return unit & (0x80000000 | 0xFF);
    }

    private static int offset(int unit) {
        return (unit >>> 10) << ((unit & (1 << 9)) >>> 6);
    }

    /**
     * Longest rule matching {@code input[from, end)} as a prefix. Returns {@code (matchLength << 32) | valueOffset}
     * or -1 when no rule matches.
     */
    long longestMatch(byte[] input, int from, int end) {
        int nodePos = 0;
        int unit = unitAt(nodePos);
        nodePos ^= offset(unit);
        long best = -1;
        int bestLength = 0;
        for (int i = from; i < end; i++) {
            int key = input[i] & 0xFF;
            nodePos ^= key;
            if (nodePos < 0 || nodePos >= units.length) {
                // A key byte that leads outside the array cannot be a transition of this trie.
                return best;
            }
            unit = units[nodePos];
            if (label(unit) != key) {
                return best;
            }
            nodePos ^= offset(unit);
            if (hasLeaf(unit)) {
                int length = i + 1 - from;
                if (bestLength == 0 || length > bestLength) {
                    bestLength = length;
                    best = ((long) length << 32) | value(unitAt(nodePos));
                }
            }
        }
        return best;
    }

    private int unitAt(int pos) {
        if (pos < 0 || pos >= units.length) {
            throw malformed("precompiled_charsmap trie refers to unit " + pos + " of " + units.length);
        }
        return units[pos];
    }

    /** Appends the NUL-terminated replacement at {@code offset} to {@code out}. */
    void appendReplacement(int offset, ByteSink out) {
        if (offset < 0 || offset >= replacements.length) {
            throw malformed("precompiled_charsmap replacement offset " + offset + " is outside "
                    + replacements.length + " bytes");
        }
        for (int i = offset; i < replacements.length && replacements[i] != 0; i++) {
            out.add(replacements[i]);
        }
    }

    /** Start and end (exclusive) of the replacement at {@code offset}. */
    int replacementEnd(int offset) {
        if (offset < 0 || offset >= replacements.length) {
            throw malformed("precompiled_charsmap replacement offset " + offset + " is outside "
                    + replacements.length + " bytes");
        }
        int i = offset;
        while (i < replacements.length && replacements[i] != 0) {
            i++;
        }
        return i;
    }

    byte[] replacements() {
        return replacements;
    }

    private static TokenizerException malformed(String what) {
        return new TokenizerException(TokenizerException.Reason.MALFORMED_MODEL, "malformed SentencePiece model: " + what);
    }
}
