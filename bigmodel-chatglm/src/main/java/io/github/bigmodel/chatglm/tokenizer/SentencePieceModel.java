package io.github.bigmodel.chatglm.tokenizer;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * A parsed SentencePiece {@code tokenizer.model} (protobuf {@code ModelProto}): the pieces with score and type, the
 * {@link TrainerSpec} fields that matter at inference time and the {@link NormalizerSpec}. Read with a small
 * hand-written wire reader; a damaged file gives a {@link TokenizerException} ({@code MALFORMED_MODEL}).
 * This class only holds data; {@link SentencePieceProcessor} encodes and decodes with it.
 *
 * <pre>{@code
 * SentencePieceModel model = SentencePieceModel.load(Path.of("tokenizer.model"));
 * int unk = model.trainerSpec().unkId();
 * String piece = model.piece(1234);
 * }</pre>
 */
public final class SentencePieceModel {

    /** The segmentation algorithm of the model ({@code TrainerSpec.model_type}). */
    public enum ModelType {
        UNIGRAM, BPE, WORD, CHAR
    }

    /**
     * The trainer settings that influence encoding and decoding.
     *
     * @param modelType              segmentation algorithm
     * @param vocabSize              vocabulary size the model was trained for
     * @param byteFallback           unknown characters become {@code <0xNN>} byte pieces
     * @param unkId                  id of {@code <unk>}
     * @param bosId                  id of {@code <s>} or -1
     * @param eosId                  id of {@code </s>} or -1
     * @param padId                  id of {@code <pad>} or -1
     * @param unkSurface             text that {@code <unk>} decodes to
     * @param treatWhitespaceAsSuffix whitespace marks the end of a word instead of its start
     * @param splitDigits            digits were split when training (informational)
     * @param allowWhitespaceOnlyPieces whitespace-only pieces may exist (informational)
     * @param userDefinedSymbols     user-defined symbols listed in the trainer spec
     */
    public record TrainerSpec(ModelType modelType, int vocabSize, boolean byteFallback, int unkId, int bosId, int eosId,
                              int padId, String unkSurface, boolean treatWhitespaceAsSuffix, boolean splitDigits,
                              boolean allowWhitespaceOnlyPieces, List<String> userDefinedSymbols) {
    }

    /**
     * The normalisation settings.
     *
     * @param name                   rule name ({@code identity}, {@code nmt_nfkc}, ...)
     * @param precompiledCharsmap    the compiled character map (empty for identity)
     * @param addDummyPrefix         prepend a space to non-empty input
     * @param removeExtraWhitespaces strip leading/trailing spaces and collapse runs
     * @param escapeWhitespaces      replace spaces with U+2581
     */
    public record NormalizerSpec(String name, byte[] precompiledCharsmap, boolean addDummyPrefix,
                                 boolean removeExtraWhitespaces, boolean escapeWhitespaces) {
        /** A copy of the compiled character map. */
        @Override
        public byte[] precompiledCharsmap() {
            return precompiledCharsmap.clone();
        }

        byte[] charsmapUnsafe() {
            return precompiledCharsmap;
        }
    }

    private final String[] pieces;
    private final float[] scores;
    private final PieceType[] types;
    private final TrainerSpec trainerSpec;
    private final NormalizerSpec normalizerSpec;
    /** NORMAL / USER_DEFINED / UNUSED pieces (what the encoders may match), as in SentencePiece. */
    private final Map<String, Integer> normalPieces;
    /** Every other piece (UNKNOWN, CONTROL, BYTE): looked up first by {@link #pieceToId}. */
    private final Map<String, Integer> reservedPieces;
    private final int[] byteToId = new int[256];

    private SentencePieceModel(List<String> pieces, List<Float> scores, List<PieceType> types, TrainerSpec trainerSpec,
                               NormalizerSpec normalizerSpec) {
        this.pieces = pieces.toArray(new String[0]);
        this.scores = new float[scores.size()];
        for (int i = 0; i < this.scores.length; i++) {
            this.scores[i] = scores.get(i);
        }
        this.types = types.toArray(new PieceType[0]);
        this.trainerSpec = trainerSpec;
        this.normalizerSpec = normalizerSpec;
        this.normalPieces = new HashMap<>(this.pieces.length * 2);
        this.reservedPieces = new HashMap<>();
        Arrays.fill(byteToId, -1);
        int unkCount = 0;
        for (int id = 0; id < this.pieces.length; id++) {
            String piece = this.pieces[id];
            PieceType type = this.types[id];
            if (piece.isEmpty()) {
                throw malformed("piece " + id + " is empty");
            }
            boolean normal = type == PieceType.NORMAL || type == PieceType.USER_DEFINED || type == PieceType.UNUSED;
            Map<String, Integer> target = normal ? normalPieces : reservedPieces;
            if (target.putIfAbsent(piece, id) != null || (normal ? reservedPieces : normalPieces).containsKey(piece)) {
                throw malformed("piece " + id + " '" + piece + "' is defined twice");
            }
            if (type == PieceType.UNKNOWN) {
                unkCount++;
            }
            if (type == PieceType.BYTE) {
                int b = parseBytePiece(piece);
                if (b < 0) {
                    throw malformed("byte piece " + id + " is not of the form <0xNN>: '" + piece + "'");
                }
                byteToId[b] = id;
            }
        }
        if (this.pieces.length == 0) {
            throw malformed("the model has no pieces");
        }
        if (unkCount != 1) {
            throw malformed("the model must have exactly one UNKNOWN piece, found " + unkCount);
        }
        checkId("unk_id", trainerSpec.unkId(), false);
        if (this.types[trainerSpec.unkId()] != PieceType.UNKNOWN) {
            throw malformed("unk_id " + trainerSpec.unkId() + " is not the UNKNOWN piece");
        }
        checkId("bos_id", trainerSpec.bosId(), true);
        checkId("eos_id", trainerSpec.eosId(), true);
        checkId("pad_id", trainerSpec.padId(), true);
        if (trainerSpec.byteFallback()) {
            for (int b = 0; b < 256; b++) {
                if (byteToId[b] < 0) {
                    throw malformed(String.format("byte_fallback is on but piece <0x%02X> is missing", b));
                }
            }
        }
    }

    private void checkId(String name, int id, boolean mayBeAbsent) {
        if (mayBeAbsent && id == -1) {
            return;
        }
        if (id < 0 || id >= pieces.length) {
            throw malformed(name + " " + id + " is outside the " + pieces.length + " pieces");
        }
    }

    static int parseBytePiece(String piece) {
        if (piece.length() != 6 || !piece.startsWith("<0x") || piece.charAt(5) != '>') {
            return -1;
        }
        int hi = Character.digit(piece.charAt(3), 16);
        int lo = Character.digit(piece.charAt(4), 16);
        return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
    }

    /** Loads a model file. */
    public static SentencePieceModel load(Path path) {
        byte[] data;
        try {
            data = Files.readAllBytes(path);
        } catch (IOException e) {
            throw new TokenizerException(TokenizerException.Reason.IO_ERROR, "cannot read " + path + ": " + e, e);
        }
        return parse(data);
    }

    /** Parses the serialized {@code ModelProto}. */
    public static SentencePieceModel parse(byte[] data) {
        if (data == null || data.length == 0) {
            throw malformed("the model file is empty");
        }
        ProtoReader in = new ProtoReader(data, 0, data.length, "ModelProto");
        List<String> pieces = new ArrayList<>();
        List<Float> scores = new ArrayList<>();
        List<PieceType> types = new ArrayList<>();
        TrainerSpec trainer = null;
        NormalizerSpec normalizer = null;
        while (in.hasMore()) {
            int tag = in.readTag();
            switch (tag >>> 3) {
                case 1 -> {
                    in.expectWireType(tag, ProtoReader.LENGTH_DELIMITED);
                    readPiece(in.readMessage("pieces[" + pieces.size() + "]"), pieces, scores, types);
                }
                case 2 -> {
                    in.expectWireType(tag, ProtoReader.LENGTH_DELIMITED);
                    trainer = readTrainerSpec(in.readMessage("trainer_spec"));
                }
                case 3 -> {
                    in.expectWireType(tag, ProtoReader.LENGTH_DELIMITED);
                    normalizer = readNormalizerSpec(in.readMessage("normalizer_spec"));
                }
                default -> in.skip(tag);
            }
        }
        if (trainer == null) {
            trainer = readTrainerSpec(new ProtoReader(new byte[0], 0, 0, "trainer_spec"));
        }
        if (normalizer == null) {
            normalizer = readNormalizerSpec(new ProtoReader(new byte[0], 0, 0, "normalizer_spec"));
        }
        return new SentencePieceModel(pieces, scores, types, trainer, normalizer);
    }

    private static void readPiece(ProtoReader in, List<String> pieces, List<Float> scores, List<PieceType> types) {
        String piece = null;
        float score = 0f;
        PieceType type = PieceType.NORMAL;
        while (in.hasMore()) {
            int tag = in.readTag();
            switch (tag >>> 3) {
                case 1 -> {
                    in.expectWireType(tag, ProtoReader.LENGTH_DELIMITED);
                    piece = in.readString();
                }
                case 2 -> {
                    in.expectWireType(tag, ProtoReader.FIXED32);
                    score = in.readFloat();
                }
                case 3 -> {
                    in.expectWireType(tag, ProtoReader.VARINT);
                    type = PieceType.fromWire(in.readInt32());
                }
                default -> in.skip(tag);
            }
        }
        if (piece == null) {
            throw in.malformed("piece " + pieces.size() + " has no text");
        }
        pieces.add(piece);
        scores.add(score);
        types.add(type);
    }

    private static TrainerSpec readTrainerSpec(ProtoReader in) {
        ModelType modelType = ModelType.UNIGRAM;
        int vocabSize = 8000;
        boolean byteFallback = false;
        int unkId = 0;
        int bosId = 1;
        int eosId = 2;
        int padId = -1;
        String unkSurface = " \u2047 ";
        boolean suffix = false;
        boolean splitDigits = false;
        boolean whitespaceOnly = false;
        List<String> userDefined = new ArrayList<>();
        while (in.hasMore()) {
            int tag = in.readTag();
            int field = tag >>> 3;
            switch (field) {
                case 3 -> {
                    in.expectWireType(tag, ProtoReader.VARINT);
                    int t = in.readInt32();
                    if (t < 1 || t > 4) {
                        throw in.malformed("unknown model_type " + t);
                    }
                    modelType = ModelType.values()[t - 1];
                }
                case 4 -> vocabSize = varint(in, tag);
                case 24 -> suffix = varint(in, tag) != 0;
                case 25 -> splitDigits = varint(in, tag) != 0;
                case 26 -> whitespaceOnly = varint(in, tag) != 0;
                case 31 -> {
                    in.expectWireType(tag, ProtoReader.LENGTH_DELIMITED);
                    userDefined.add(in.readString());
                }
                case 35 -> byteFallback = varint(in, tag) != 0;
                case 40 -> unkId = varint(in, tag);
                case 41 -> bosId = varint(in, tag);
                case 42 -> eosId = varint(in, tag);
                case 43 -> padId = varint(in, tag);
                case 44 -> {
                    in.expectWireType(tag, ProtoReader.LENGTH_DELIMITED);
                    unkSurface = in.readString();
                }
                default -> in.skip(tag);
            }
        }
        return new TrainerSpec(modelType, vocabSize, byteFallback, unkId, bosId, eosId, padId, unkSurface, suffix,
                splitDigits, whitespaceOnly, Collections.unmodifiableList(userDefined));
    }

    private static int varint(ProtoReader in, int tag) {
        in.expectWireType(tag, ProtoReader.VARINT);
        return in.readInt32();
    }

    private static NormalizerSpec readNormalizerSpec(ProtoReader in) {
        String name = "";
        byte[] charsmap = new byte[0];
        boolean dummyPrefix = true;
        boolean removeExtra = true;
        boolean escape = true;
        while (in.hasMore()) {
            int tag = in.readTag();
            switch (tag >>> 3) {
                case 1 -> {
                    in.expectWireType(tag, ProtoReader.LENGTH_DELIMITED);
                    name = in.readString();
                }
                case 2 -> {
                    in.expectWireType(tag, ProtoReader.LENGTH_DELIMITED);
                    charsmap = in.readBytes();
                }
                case 3 -> dummyPrefix = varint(in, tag) != 0;
                case 4 -> removeExtra = varint(in, tag) != 0;
                case 5 -> escape = varint(in, tag) != 0;
                default -> in.skip(tag);
            }
        }
        return new NormalizerSpec(name, charsmap, dummyPrefix, removeExtra, escape);
    }

    private static TokenizerException malformed(String what) {
        return new TokenizerException(TokenizerException.Reason.MALFORMED_MODEL, "malformed SentencePiece model: " + what);
    }

    /** Number of pieces (SentencePiece's {@code GetPieceSize()}). */
    public int size() {
        return pieces.length;
    }

    /** The piece text of {@code id}. */
    public String piece(int id) {
        checkRange(id);
        return pieces[id];
    }

    /** The score of {@code id}. */
    public float score(int id) {
        checkRange(id);
        return scores[id];
    }

    /** The type of {@code id}. */
    public PieceType pieceType(int id) {
        checkRange(id);
        return types[id];
    }

    /**
     * The id of a piece as SentencePiece's {@code PieceToId}: reserved pieces (control, unknown, byte) first,
     * then ordinary ones; anything else is the unknown id.
     */
    public int pieceToId(String piece) {
        Integer id = reservedPieces.get(piece);
        if (id == null) {
            id = normalPieces.get(piece);
        }
        return id == null ? trainerSpec.unkId() : id;
    }

    /** The id of an encodable (NORMAL, USER_DEFINED or UNUSED) piece, or -1. */
    int normalPieceId(String piece) {
        Integer id = normalPieces.get(piece);
        return id == null ? -1 : id;
    }

    Map<String, Integer> normalPieces() {
        return normalPieces;
    }

    /** The id of the byte piece {@code <0xNN>} for {@code b} (0..255), or -1 when the model has none. */
    public int byteId(int b) {
        return byteToId[b & 0xFF];
    }

    /** Trainer settings. */
    public TrainerSpec trainerSpec() {
        return trainerSpec;
    }

    /** Normaliser settings. */
    public NormalizerSpec normalizerSpec() {
        return normalizerSpec;
    }

    float scoreUnchecked(int id) {
        return scores[id];
    }

    PieceType typeUnchecked(int id) {
        return types[id];
    }

    String pieceUnchecked(int id) {
        return pieces[id];
    }

    void checkRange(int id) {
        if (id < 0 || id >= pieces.length) {
            throw new TokenizerException(TokenizerException.Reason.ID_OUT_OF_RANGE,
                    "piece id " + id + " is out of range [0, " + pieces.length + ")");
        }
    }
}
