package io.github.bigmodel.chatglm.tokenizer;

import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * A pure-Java equivalent of Google's {@code SentencePieceProcessor} for BPE and unigram models: normalisation,
 * segmentation, byte fallback, decoding of ids and of piece strings, and look-ups. Thread-safe once built.
 *
 * <pre>{@code
 * SentencePieceProcessor sp = SentencePieceProcessor.load(Path.of("tokenizer.model"));
 * int[] ids = sp.encode("你好");          // e.g. [1740, 3047]
 * List<String> pieces = sp.encodeAsPieces("你好");
 * String text = sp.decode(ids);           // "你好"
 * }</pre>
 */
public final class SentencePieceProcessor {

    private static final String SPACE_SYMBOL = "\u2581";

    private final SentencePieceModel model;
    private final Normalizer normalizer;
    private final PieceEncoder encoder;

    /** A processor over an already parsed model. */
    public SentencePieceProcessor(SentencePieceModel model) {
        this.model = model;
        this.normalizer = new Normalizer(model);
        this.encoder = switch (model.trainerSpec().modelType()) {
            case BPE -> new BpeEncoder(model);
            case UNIGRAM -> new UnigramEncoder(model);
            default -> throw new TokenizerException(TokenizerException.Reason.UNSUPPORTED_MODEL,
                    "SentencePiece model type " + model.trainerSpec().modelType() + " is not supported (BPE and"
                            + " UNIGRAM are)");
        };
    }

    /** Loads and parses a {@code .model} file. */
    public static SentencePieceProcessor load(Path path) {
        return new SentencePieceProcessor(SentencePieceModel.load(path));
    }

    /** The underlying model. */
    public SentencePieceModel model() {
        return model;
    }

    /** The normalised form of {@code text} (with U+2581 for spaces and the dummy prefix). */
    public String normalize(String text) {
        return normalizer.normalize(text);
    }

    /** Ids of {@code text} ({@code sp.encode(text)}). */
    public int[] encode(String text) {
        List<PieceEncoder.Piece> pieces = encodeToPieces(text);
        int[] ids = new int[pieces.size()];
        for (int i = 0; i < ids.length; i++) {
            ids[i] = pieces.get(i).id();
        }
        return ids;
    }

    /** Piece strings of {@code text} ({@code sp.encode(text, out_type=str)}). */
    public List<String> encodeAsPieces(String text) {
        List<PieceEncoder.Piece> pieces = encodeToPieces(text);
        List<String> out = new ArrayList<>(pieces.size());
        for (PieceEncoder.Piece p : pieces) {
            out.add(p.text());
        }
        return out;
    }

    private List<PieceEncoder.Piece> encodeToPieces(String text) {
        String normalized = normalizer.normalize(text);
        List<PieceEncoder.Piece> raw = encoder.encode(normalized);
        if (!model.trainerSpec().byteFallback()) {
            return raw;
        }
        List<PieceEncoder.Piece> out = new ArrayList<>(raw.size() + 8);
        for (PieceEncoder.Piece p : raw) {
            if (model.typeUnchecked(p.id()) == PieceType.UNKNOWN) {
                // An unknown surface becomes its UTF-8 bytes as <0xNN> pieces.
                for (byte b : p.text().getBytes(StandardCharsets.UTF_8)) {
                    int id = model.byteId(b);
                    out.add(new PieceEncoder.Piece(model.pieceUnchecked(id), id));
                }
            } else {
                out.add(p);
            }
        }
        return out;
    }

    /**
     * Text of {@code ids} ({@code sp.decode(ids)}): control pieces vanish, {@code <unk>} becomes the unknown
     * surface, byte runs are UTF-8 decoded (one U+FFFD per bad byte) and the dummy-prefix space is dropped.
     *
     * @throws TokenizerException {@code ID_OUT_OF_RANGE} for an id outside {@code [0, size())}
     */
    public String decode(int[] ids) {
        List<String> pieces = new ArrayList<>(ids.length);
        for (int id : ids) {
            model.checkRange(id);
            pieces.add(model.pieceUnchecked(id));
        }
        return decodeResolved(pieces, ids);
    }

    /**
     * Text of piece strings ({@code sp.decode_pieces(pieces)}): each string is looked up; a string that is not a
     * piece is copied verbatim.
     */
    public String decodePieces(List<String> pieces) {
        int[] ids = new int[pieces.size()];
        for (int i = 0; i < ids.length; i++) {
            ids[i] = model.pieceToId(pieces.get(i));
        }
        return decodeResolved(pieces, ids);
    }

    private String decodeResolved(List<String> pieces, int[] ids) {
        StringBuilder text = new StringBuilder();
        ByteSink bytes = new ByteSink(16);
        boolean removeExtra = model.normalizerSpec().removeExtraWhitespaces();
        boolean stripAllowed = model.normalizerSpec().addDummyPrefix() || removeExtra;
        boolean bosSpaceConsumed = false;
        for (int i = 0; i < ids.length; i++) {
            int id = ids[i];
            PieceType type = model.typeUnchecked(id);
            if (type == PieceType.BYTE) {
                bytes.add((byte) SentencePieceModel.parseBytePiece(model.pieceUnchecked(id)));
                continue;
            }
            flushBytes(bytes, text);
            String piece = pieces.get(i);
            if (type == PieceType.CONTROL) {
                continue;
            }
            if (type == PieceType.UNKNOWN) {
                text.append(piece.equals(model.pieceUnchecked(id)) ? model.trainerSpec().unkSurface() : piece);
                continue;
            }
            // The dummy prefix: while nothing is output yet, a leading U+2581 goes (once, or every time when extra
            // whitespace is removed, since the encoder never produces such spaces).
            if (text.length() == 0 && stripAllowed && !(bosSpaceConsumed && !removeExtra)
                    && piece.startsWith(SPACE_SYMBOL)) {
                piece = piece.substring(SPACE_SYMBOL.length());
                bosSpaceConsumed = true;
            }
            text.append(piece.replace(SPACE_SYMBOL, " "));
        }
        flushBytes(bytes, text);
        return text.toString();
    }

    private static void flushBytes(ByteSink bytes, StringBuilder text) {
        if (bytes.size() > 0) {
            byte[] b = bytes.toArray();
            Utf8.decodeLenient(b, 0, b.length, text);
            bytes.clear();
        }
    }

    /** The piece of {@code id}. */
    public String idToPiece(int id) {
        return model.piece(id);
    }

    /** The id of {@code piece}; unknown strings give the unknown id. */
    public int pieceToId(String piece) {
        return model.pieceToId(piece);
    }

    /** Number of pieces. */
    public int vocabSize() {
        return model.size();
    }

    public int unkId() {
        return model.trainerSpec().unkId();
    }

    public int bosId() {
        return model.trainerSpec().bosId();
    }

    public int eosId() {
        return model.trainerSpec().eosId();
    }

    public int padId() {
        return model.trainerSpec().padId();
    }

    public boolean isControl(int id) {
        return model.pieceType(id) == PieceType.CONTROL;
    }

    public boolean isUnknown(int id) {
        return model.pieceType(id) == PieceType.UNKNOWN;
    }

    public boolean isByte(int id) {
        return model.pieceType(id) == PieceType.BYTE;
    }

    public boolean isUnused(int id) {
        return model.pieceType(id) == PieceType.UNUSED;
    }

    public float score(int id) {
        return model.score(id);
    }
}
