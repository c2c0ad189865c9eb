package io.github.bigmodel.chatglm.tokenizer;

import java.util.ArrayList;
import java.util.List;
import java.util.PriorityQueue;

/**
 * SentencePiece's BPE segmentation: start from characters (user-defined symbols are single, frozen units), then
 * repeatedly merge the adjacent pair whose concatenation is an encodable piece with the highest score, the leftmost
 * pair on ties. A priority queue over adjacent pairs with lazy invalidation keeps it O(n log n).
 */
final class BpeEncoder implements PieceEncoder {

    private final SentencePieceModel model;
    private final CodePointTrie userDefined = new CodePointTrie();

    BpeEncoder(SentencePieceModel model) {
        this.model = model;
        for (int id = 0; id < model.size(); id++) {
            if (model.typeUnchecked(id) == PieceType.USER_DEFINED) {
                userDefined.put(model.pieceUnchecked(id), id);
            }
        }
    }

    private record Pair(int left, int right, float score, int length) {
    }

    @Override
    public List<Piece> encode(String normalized) {
        List<Piece> out = new ArrayList<>();
        if (normalized.isEmpty()) {
            return out;
        }
        int[] cps = normalized.codePoints().toArray();
        int n = 0;
        // Symbol i covers chars [start[i], end[i]) of the string; merged-away symbols get start = -1.
        int[] start = new int[cps.length];
        int[] end = new int[cps.length];
        int[] prev = new int[cps.length];
        int[] next = new int[cps.length];
        boolean[] frozen = new boolean[cps.length];
        int charPos = 0;
        for (int i = 0; i < cps.length; ) {
            int units = userDefined.isEmpty() ? 0 : userDefined.longestPrefix(cps, i);
            boolean freeze = units > 0;
            if (!freeze) {
                units = 1;
            }
            int chars = 0;
            for (int k = 0; k < units; k++) {
                chars += Character.charCount(cps[i + k]);
            }
            start[n] = charPos;
            end[n] = charPos + chars;
            frozen[n] = freeze;
            prev[n] = n - 1;
            next[n] = -1;
            if (n > 0) {
                next[n - 1] = n;
            }
            n++;
            charPos += chars;
            i += units;
        }
        PriorityQueue<Pair> agenda = new PriorityQueue<>((a, b) -> {
            if (a.score != b.score) {
                return a.score > b.score ? -1 : 1;
            }
            return Integer.compare(a.left, b.left);
        });
        for (int i = 1; i < n; i++) {
            addPair(normalized, i - 1, i, start, end, frozen, agenda);
        }
        while (!agenda.isEmpty()) {
            Pair top = agenda.poll();
            int l = top.left;
            int r = top.right;
            if (start[l] < 0 || start[r] < 0 || (end[l] - start[l]) + (end[r] - start[r]) != top.length
                    || next[l] != r) {
                continue; // stale: one side was merged since this pair was queued
            }
            end[l] = end[r];
            next[l] = next[r];
            if (next[r] >= 0) {
                prev[next[r]] = l;
            }
            start[r] = -1;
            if (prev[l] >= 0) {
                addPair(normalized, prev[l], l, start, end, frozen, agenda);
            }
            if (next[l] >= 0) {
                addPair(normalized, l, next[l], start, end, frozen, agenda);
            }
        }
        for (int i = 0; i >= 0 && i < n; i = next[i]) {
            resegment(normalized.substring(start[i], end[i]), out);
        }
        return out;
    }

    private void addPair(String text, int left, int right, int[] start, int[] end, boolean[] frozen,
                         PriorityQueue<Pair> agenda) {
        if (frozen[left] || frozen[right]) {
            return;
        }
        String merged = text.substring(start[left], end[right]);
        int id = model.normalPieceId(merged);
        if (id < 0) {
            return;
        }
        agenda.add(new Pair(left, right, model.scoreUnchecked(id), merged.length()));
    }

    /** Emits a final symbol; UNUSED pieces are split back into encodable halves as SentencePiece does. */
    private void resegment(String piece, List<Piece> out) {
        int id = model.normalPieceId(piece);
        if (id < 0) {
            out.add(new Piece(piece, model.pieceToId(piece)));
            return;
        }
        if (model.typeUnchecked(id) != PieceType.UNUSED) {
            out.add(new Piece(piece, id));
            return;
        }
        for (int cut = piece.offsetByCodePoints(0, 1); cut < piece.length();
             cut = piece.offsetByCodePoints(cut, 1)) {
            if (model.normalPieceId(piece.substring(0, cut)) >= 0 && model.normalPieceId(piece.substring(cut)) >= 0) {
                resegment(piece.substring(0, cut), out);
                resegment(piece.substring(cut), out);
                return;
            }
        }
        out.add(new Piece(piece, id));
    }
}
