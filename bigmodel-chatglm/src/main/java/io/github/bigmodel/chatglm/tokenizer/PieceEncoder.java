package io.github.bigmodel.chatglm.tokenizer;

import java.util.List;

/** Segments normalised text into (piece, id) pairs; unknown pieces carry the unknown id and their surface text. */
interface PieceEncoder {

    /** One segment of the normalised text and its id. */
    record Piece(String text, int id) {
    }

    List<Piece> encode(String normalized);
}
