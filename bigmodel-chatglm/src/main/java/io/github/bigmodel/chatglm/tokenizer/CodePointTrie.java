package io.github.bigmodel.chatglm.tokenizer;

import java.util.Arrays;
import java.util.HashMap;
import java.util.Map;

/** A trie over code points mapping strings to ids; used for prefix searches over normalised text. */
final class CodePointTrie {

    private final Map<Long, Integer> transitions = new HashMap<>();
    private int[] values = new int[]{-1};
    private int nodeCount = 1;

    void put(String key, int value) {
        int node = 0;
        for (int i = 0; i < key.length(); ) {
            int cp = key.codePointAt(i);
            i += Character.charCount(cp);
            long k = transitionKey(node, cp);
            Integer next = transitions.get(k);
            if (next == null) {
                next = nodeCount++;
                if (nodeCount > values.length) {
                    int old = values.length;
                    values = Arrays.copyOf(values, old * 2);
                    Arrays.fill(values, old, values.length, -1);
                }
                transitions.put(k, next);
            }
            node = next;
        }
        values[node] = value;
    }

    private static long transitionKey(int node, int cp) {
        return ((long) node << 21) | cp;
    }

    /** The child of {@code node} for {@code cp}, or -1. Node 0 is the root. */
    int child(int node, int cp) {
        Integer next = transitions.get(transitionKey(node, cp));
        return next == null ? -1 : next;
    }

    /** The value stored at {@code node}, or -1. */
    int value(int node) {
        return values[node];
    }

    /** Length (in code points) of the longest key that is a prefix of {@code cps[from..]}, or 0. */
    int longestPrefix(int[] cps, int from) {
        int node = 0;
        int best = 0;
        for (int i = from; i < cps.length; i++) {
            node = child(node, cps[i]);
            if (node < 0) {
                break;
            }
            if (values[node] >= 0) {
                best = i + 1 - from;
            }
        }
        return best;
    }

    boolean isEmpty() {
        return nodeCount == 1;
    }
}
