package io.github.bigmodel.chatglm.tokenizer;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/**
 * SentencePiece's unigram segmentation (its optimised Viterbi): at each character every encodable piece that
 * starts there is a lattice edge scored by its log probability; USER_DEFINED pieces score
 * {@code byteLength * maxScore - 0.1} so they always win; a character without a single-character piece gets an
 * unknown edge scoring {@code minScore - 10}. Float/double arithmetic follows the C++ so ties resolve the same way.
 */
final class UnigramEncoder implements PieceEncoder {

    private static final float UNK_PENALTY = 10.0f;

    private final SentencePieceModel model;
    private final CodePointTrie trie = new CodePointTrie();
    private final int[] byteLength;
    private final float minScore;
    private final float maxScore;

    UnigramEncoder(SentencePieceModel model) {
        this.model = model;
        this.byteLength = new int[model.size()];
        float min = Float.MAX_VALUE;
        float max = Float.MIN_NORMAL; // C++ FLT_MIN: the smallest positive normal float
        for (int id = 0; id < model.size(); id++) {
            PieceType type = model.typeUnchecked(id);
            if (type == PieceType.NORMAL || type == PieceType.USER_DEFINED || type == PieceType.UNUSED) {
                trie.put(model.pieceUnchecked(id), id);
                byteLength[id] = model.pieceUnchecked(id).getBytes(StandardCharsets.UTF_8).length;
            }
            if (type == PieceType.NORMAL) {
                min = Math.min(min, model.scoreUnchecked(id));
                max = Math.max(max, model.scoreUnchecked(id));
            }
        }
        this.minScore = min;
        this.maxScore = max;
    }

    @Override
    public List<Piece> encode(String normalized) {
        if (normalized.isEmpty()) {
            return new ArrayList<>();
        }
        int[] cps = normalized.codePoints().toArray();
        int size = cps.length;
        int[] charOffset = new int[size + 1];
        for (int i = 0; i < size; i++) {
            charOffset[i + 1] = charOffset[i] + Character.charCount(cps[i]);
        }
        float[] bestScore = new float[size + 1];
        int[] bestStart = new int[size + 1];
        int[] bestId = new int[size + 1];
        java.util.Arrays.fill(bestStart, -1);
        float unkScore = minScore - UNK_PENALTY;
        int unkId = model.trainerSpec().unkId();
        for (int startsAt = 0; startsAt < size; startsAt++) {
            float tillHere = bestScore[startsAt];
            boolean hasSingleNode = false;
            int node = 0;
            int byteLen = 0;
            for (int keyPos = startsAt; keyPos < size; keyPos++) {
                node = trie.child(node, cps[keyPos]);
                if (node < 0) {
                    break;
                }
                int id = trie.value(node);
                if (id < 0) {
                    continue;
                }
                PieceType type = model.typeUnchecked(id);
                if (type == PieceType.UNUSED) {
                    continue;
                }
                int ends = keyPos + 1;
                double score = type == PieceType.USER_DEFINED
                        ? (double) (byteLength[id] * maxScore) - 0.1
                        : model.scoreUnchecked(id);
                double candidate = score + tillHere;
                if (bestStart[ends] == -1 || candidate > bestScore[ends]) {
                    bestScore[ends] = (float) candidate;
                    bestStart[ends] = startsAt;
                    bestId[ends] = id;
                }
                if (ends == startsAt + 1) {
                    hasSingleNode = true;
                }
            }
            if (!hasSingleNode) {
                int ends = startsAt + 1;
                float candidate = unkScore + tillHere;
                if (bestStart[ends] == -1 || candidate > bestScore[ends]) {
                    bestScore[ends] = candidate;
                    bestStart[ends] = startsAt;
                    bestId[ends] = unkId;
                }
            }
        }
        List<Piece> out = new ArrayList<>();
        for (int ends = size; ends > 0; ends = bestStart[ends]) {
            int s = bestStart[ends];
            out.add(new Piece(normalized.substring(charOffset[s], charOffset[ends]), bestId[ends]));
        }
        Collections.reverse(out);
        return out;
    }
}
