package io.github.bigmodel.safetensors;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.core.StreamReadConstraints;
import com.fasterxml.jackson.core.StreamReadFeature;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.safetensors.CheckpointException.Reason;
import java.io.IOException;
import java.math.BigInteger;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.CharBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Comparator;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * The validated table of contents of a safetensors file: every tensor's name, dtype, shape and absolute byte range,
 * and the {@code __metadata__} strings. Pure Java (no libtorch), so it can be checked and fuzzed cheaply; nothing
 * here touches tensor data.
 *
 * <p>Layout of the file: an unsigned 64-bit little-endian header length {@code N}, {@code N} bytes of UTF-8 JSON,
 * then the data section. Validation, in order (the first failure is reported):
 * <ol>
 * <li>file of at least 8 bytes ({@link Reason#TRUNCATED}); {@code N <= 100,000,000}
 *     ({@link Reason#HEADER_TOO_LARGE}); {@code 8 + N <= file size} ({@link Reason#HEADER_LENGTH_OUT_OF_RANGE});</li>
 * <li>the header is UTF-8 text holding exactly one JSON object, no duplicate keys ({@link Reason#DUPLICATE_NAME}
 *     for a tensor name given twice, {@link Reason#INVALID_JSON} for anything else malformed);</li>
 * <li>per tensor: a known {@code dtype} ({@link Reason#UNKNOWN_DTYPE}), a {@code shape} of non-negative integers
 *     ({@link Reason#INVALID_SHAPE} for a negative one),
 *     {@code data_offsets} {@code [begin, end]} with {@code 0 <= begin <= end} ({@link Reason#OFFSET_OUT_OF_RANGE}),
 *     and {@code end - begin == numel * element size} ({@link Reason#SIZE_MISMATCH}, also when numel overflows);</li>
 * <li>sorted by begin: no two tensors share bytes ({@link Reason#OVERLAP});</li>
 * <li>the header describes data ending past the end of the file: {@link Reason#TRUNCATED} when the tensors tile
 *     {@code [0, last end)} without gaps (a complete header whose file was cut short, e.g. an interrupted download),
 *     otherwise {@link Reason#OFFSET_OUT_OF_RANGE} naming the first tensor that reaches past the file (the header
 *     itself is wrong);</li>
 * <li>no gap between tensors and no trailing bytes after the last one ({@link Reason#HOLE}).</li>
 * </ol>
 *
 * <pre>{@code
 * SafetensorsHeader h = SafetensorsHeader.read(Path.of("model.safetensors"));
 * for (TensorInfo t : h.tensors()) System.out.println(t + " at " + t.fileOffset());
 * }</pre>
 */
public final class SafetensorsHeader {

    /** The largest header the format allows. */
    public static final long MAX_HEADER_BYTES = 100_000_000L;

    /** The key of the optional string-to-string metadata object. */
    public static final String METADATA_KEY = "__metadata__";

    private static final JsonFactory JSON = JsonFactory.builder()
            .enable(StreamReadFeature.STRICT_DUPLICATE_DETECTION)
            // A legal header may hold one string as long as the whole header.
            .streamReadConstraints(StreamReadConstraints.builder()
                    .maxStringLength((int) MAX_HEADER_BYTES)
                    .maxNameLength((int) MAX_HEADER_BYTES)
                    .build())
            .build();

    private final Path file;
    private final long headerLength;
    private final List<TensorInfo> tensors;
    private final Map<String, String> metadata;

    private SafetensorsHeader(Path file, long headerLength, List<TensorInfo> tensors, Map<String, String> metadata) {
        this.file = file;
        this.headerLength = headerLength;
        this.tensors = tensors;
        this.metadata = metadata;
    }

    /**
     * Reads and validates the header of {@code file} (only the header bytes are read).
     *
     * @throws CheckpointException for a damaged header or an I/O failure ({@link Reason#IO_ERROR})
     */
    public static SafetensorsHeader read(Path file) {
        if (Files.exists(file) && !Files.isRegularFile(file)) {
            throw new CheckpointException(Reason.IO_ERROR, file, null,
                    "not a regular file (a pipe, device or socket cannot hold a checkpoint)");
        }
        try (FileChannel channel = FileChannel.open(file, StandardOpenOption.READ)) {
            long fileSize = channel.size();
            ByteBuffer prefix = ByteBuffer.allocate((int) Math.min(8, fileSize));
            readFully(channel, prefix, 0);
            long n = headerLength(file, prefix.array(), fileSize);
            ByteBuffer all = ByteBuffer.allocate((int) (8 + n));
            readFully(channel, all, 0);
            return parse(file, all.array(), fileSize);
        } catch (NoSuchFileException e) {
            throw new CheckpointException(Reason.IO_ERROR, file, null, "no such file", e);
        } catch (IOException e) {
            throw new CheckpointException(Reason.IO_ERROR, file, null, "cannot read header: " + e, e);
        }
    }

    private static void readFully(FileChannel channel, ByteBuffer buffer, long position) throws IOException {
        long at = position;
        while (buffer.hasRemaining()) {
            int n = channel.read(buffer, at);
            if (n < 0) {
                break; // the file shrank since its size was read; parse() reports it as truncated
            }
            at += n;
        }
        buffer.flip();
    }

    /**
     * Checks the 8-byte length prefix against the file size and returns the header length {@code N}.
     *
     * @param prefix the first {@code min(8, fileSize)} bytes of the file
     */
    public static long headerLength(Path file, byte[] prefix, long fileSize) {
        if (fileSize < 8 || prefix.length < 8) {
            throw new CheckpointException(Reason.TRUNCATED, file, null,
                    "file has " + Math.min(fileSize, prefix.length)
                            + " bytes, fewer than the 8-byte header length of a safetensors file");
        }
        long n = ByteBuffer.wrap(prefix, 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
        // Unsigned compare: a u64 above 2^63 reads as negative and is too large as well.
        if (Long.compareUnsigned(n, MAX_HEADER_BYTES) > 0) {
            throw new CheckpointException(Reason.HEADER_TOO_LARGE, file, null,
                    "header length " + Long.toUnsignedString(n) + " exceeds the format's limit of "
                            + MAX_HEADER_BYTES + " bytes");
        }
        if (8 + n > fileSize) {
            throw new CheckpointException(Reason.HEADER_LENGTH_OUT_OF_RANGE, file, null,
                    "header length " + n + " points past the end of the " + fileSize + "-byte file");
        }
        return n;
    }

    /**
     * Validates a header given as bytes.
     *
     * @param file the file the bytes come from, named in errors and in the returned {@link TensorInfo}s
     * @param prefixAndHeader the file's first {@code 8 + N} bytes (more are ignored; fewer mean the file ended early)
     * @param fileSize the size of the whole file
     * @throws CheckpointException for any damage; never anything else for any input
     */
    public static SafetensorsHeader parse(Path file, byte[] prefixAndHeader, long fileSize) {
        long n = headerLength(file, prefixAndHeader, fileSize);
        if (prefixAndHeader.length < 8 + n) {
            throw new CheckpointException(Reason.TRUNCATED, file, null,
                    "file ended after " + prefixAndHeader.length + " bytes, inside the " + n + "-byte header");
        }
        String json = decodeUtf8(file, prefixAndHeader, (int) n);
        long dataStart = 8 + n;
        long dataSize = fileSize - dataStart;
        Map<String, String> metadata = new LinkedHashMap<>();
        List<Entry> entries = new ArrayList<>();
        try (JsonParser p = JSON.createParser(json)) {
            parseObject(file, p, metadata, entries);
        } catch (JsonProcessingException e) {
            throw new CheckpointException(Reason.INVALID_JSON, file, null,
                    "header is not valid JSON: " + e.getOriginalMessage(), e);
        } catch (IOException e) {
            throw new CheckpointException(Reason.INVALID_JSON, file, null, "header cannot be parsed: " + e, e);
        }
        List<TensorInfo> tensors = validateLayout(file, entries, dataStart, dataSize);
        return new SafetensorsHeader(file, n, Collections.unmodifiableList(tensors),
                Collections.unmodifiableMap(metadata));
    }

    private static String decodeUtf8(Path file, byte[] bytes, int n) {
        try {
            CharBuffer chars = StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT)
                    .decode(ByteBuffer.wrap(bytes, 8, n));
            return chars.toString();
        } catch (CharacterCodingException e) {
            throw new CheckpointException(Reason.INVALID_JSON, file, null, "header is not valid UTF-8", e);
        }
    }

    /** One tensor entry as written, before the layout checks. */
    private static final class Entry {
        final String name;
        final DType dtype;
        final long[] shape;
        final long begin;
        final long end;

        Entry(String name, DType dtype, long[] shape, long begin, long end) {
            this.name = name;
            this.dtype = dtype;
            this.shape = shape;
            this.begin = begin;
            this.end = end;
        }
    }

    private static void parseObject(Path file, JsonParser p, Map<String, String> metadata, List<Entry> entries)
            throws IOException {
        if (p.nextToken() != JsonToken.START_OBJECT) {
            throw new CheckpointException(Reason.INVALID_JSON, file, null, "header is not a JSON object");
        }
        Set<String> seen = new HashSet<>();
        while (true) {
            JsonToken token;
            try {
                token = p.nextToken();
            } catch (JsonProcessingException e) {
                String duplicate = duplicateName(e);
                if (duplicate != null) {
                    throw new CheckpointException(Reason.DUPLICATE_NAME, file, duplicate,
                            "the name appears twice in the header", e);
                }
                throw e;
            }
            if (token == JsonToken.END_OBJECT) {
                break;
            }
            String name = p.currentName();
            if (!seen.add(name)) {
                // Reached only if the parser's own duplicate detection is ever off.
                throw new CheckpointException(Reason.DUPLICATE_NAME, file, name, "the name appears twice in the header");
            }
            p.nextToken();
            if (METADATA_KEY.equals(name)) {
                parseMetadata(file, p, metadata);
            } else {
                entries.add(parseEntry(file, p, name));
            }
        }
        if (p.nextToken() != null) {
            throw new CheckpointException(Reason.INVALID_JSON, file, null, "text after the header's JSON object");
        }
    }

    /** The key named by Jackson's strict duplicate detection, or null for other errors. */
    private static String duplicateName(JsonProcessingException e) {
        String message = e.getOriginalMessage();
        String marker = "Duplicate field '";
        if (message != null && message.startsWith(marker) && message.endsWith("'")) {
            return message.substring(marker.length(), message.length() - 1);
        }
        return null;
    }

    private static void parseMetadata(Path file, JsonParser p, Map<String, String> metadata) throws IOException {
        if (p.currentToken() != JsonToken.START_OBJECT) {
            throw new CheckpointException(Reason.INVALID_JSON, file, null,
                    METADATA_KEY + " must be an object of strings");
        }
        while (p.nextToken() != JsonToken.END_OBJECT) {
            String key = p.currentName();
            if (p.nextToken() != JsonToken.VALUE_STRING) {
                throw new CheckpointException(Reason.INVALID_JSON, file, null,
                        METADATA_KEY + " value of '" + key + "' is not a string");
            }
            metadata.put(key, p.getText());
        }
    }

    private static Entry parseEntry(Path file, JsonParser p, String name) throws IOException {
        if (p.currentToken() != JsonToken.START_OBJECT) {
            throw new CheckpointException(Reason.INVALID_JSON, file, name, "tensor entry is not an object");
        }
        String dtypeName = null;
        long[] shape = null;
        long[] offsets = null;
        boolean shapeOverflow = false;
        while (p.nextToken() != JsonToken.END_OBJECT) {
            String key = p.currentName();
            JsonToken value = p.nextToken();
            switch (key) {
                case "dtype":
                    if (value != JsonToken.VALUE_STRING) {
                        throw new CheckpointException(Reason.INVALID_JSON, file, name, "dtype is not a string");
                    }
                    dtypeName = p.getText();
                    break;
                case "shape": {
                    List<BigInteger> dims = integerArray(file, p, name, "shape");
                    shape = new long[dims.size()];
                    for (int i = 0; i < shape.length; i++) {
                        BigInteger d = dims.get(i);
                        if (d.signum() < 0) {
                            throw new CheckpointException(Reason.INVALID_SHAPE, file, name,
                                    "shape " + dims + " has a negative dimension");
                        }
                        if (d.bitLength() > 63) {
                            shapeOverflow = true;
                            shape[i] = Long.MAX_VALUE;
                        } else {
                            shape[i] = d.longValue();
                        }
                    }
                    break;
                }
                case "data_offsets": {
                    List<BigInteger> o = integerArray(file, p, name, "data_offsets");
                    if (o.size() != 2) {
                        throw new CheckpointException(Reason.INVALID_JSON, file, name,
                                "data_offsets " + o + " is not [begin, end]");
                    }
                    for (BigInteger v : o) {
                        if (v.signum() < 0 || v.bitLength() > 63) {
                            throw new CheckpointException(Reason.OFFSET_OUT_OF_RANGE, file, name,
                                    "data_offsets " + o + " outside 0.." + Long.MAX_VALUE);
                        }
                    }
                    offsets = new long[] {o.get(0).longValue(), o.get(1).longValue()};
                    break;
                }
                default:
                    throw new CheckpointException(Reason.INVALID_JSON, file, name,
                            "unexpected key '" + key + "' in tensor entry (expected dtype, shape, data_offsets)");
            }
        }
        if (dtypeName == null || shape == null || offsets == null) {
            throw new CheckpointException(Reason.INVALID_JSON, file, name,
                    "tensor entry lacks " + (dtypeName == null ? "dtype" : shape == null ? "shape" : "data_offsets"));
        }
        DType dtype;
        try {
            dtype = DType.fromSafetensors(dtypeName);
        } catch (IllegalArgumentException e) {
            throw new CheckpointException(Reason.UNKNOWN_DTYPE, file, name, "unknown dtype '" + dtypeName + "'", e);
        }
        long begin = offsets[0];
        long end = offsets[1];
        if (begin > end) {
            throw new CheckpointException(Reason.OFFSET_OUT_OF_RANGE, file, name,
                    "data_offsets [" + begin + ", " + end + "] end before they begin");
        }
        long expected = byteSize(dtype, shape, shapeOverflow);
        if (expected < 0) {
            throw new CheckpointException(Reason.SIZE_MISMATCH, file, name,
                    "shape " + java.util.Arrays.toString(shape) + " has more elements than a file can hold");
        }
        if (end - begin != expected) {
            throw new CheckpointException(Reason.SIZE_MISMATCH, file, name,
                    "data_offsets [" + begin + ", " + end + "] hold " + (end - begin) + " bytes but "
                            + dtype.safetensorsName() + java.util.Arrays.toString(shape) + " needs " + expected);
        }
        return new Entry(name, dtype, shape, begin, end);
    }

    /** numel * element size, or -1 when it does not fit in a long. */
    private static long byteSize(DType dtype, long[] shape, boolean overflow) {
        if (overflow) {
            for (long d : shape) {
                if (d == 0) {
                    return 0;
                }
            }
            return -1;
        }
        try {
            long numel = 1;
            for (long d : shape) {
                numel = Math.multiplyExact(numel, d);
            }
            return Math.multiplyExact(numel, (long) dtype.bits()) / 8;
        } catch (ArithmeticException e) {
            for (long d : shape) {
                if (d == 0) {
                    return 0;
                }
            }
            return -1;
        }
    }

    private static List<BigInteger> integerArray(Path file, JsonParser p, String name, String what)
            throws IOException {
        if (p.currentToken() != JsonToken.START_ARRAY) {
            throw new CheckpointException(Reason.INVALID_JSON, file, name, what + " is not an array");
        }
        List<BigInteger> values = new ArrayList<>();
        JsonToken t;
        while ((t = p.nextToken()) != JsonToken.END_ARRAY) {
            if (t != JsonToken.VALUE_NUMBER_INT) {
                throw new CheckpointException(Reason.INVALID_JSON, file, name, what + " holds a non-integer");
            }
            values.add(p.getBigIntegerValue());
        }
        return values;
    }

    private static List<TensorInfo> validateLayout(Path file, List<Entry> entries, long dataStart, long dataSize) {
        List<Entry> sorted = new ArrayList<>(entries);
        sorted.sort(Comparator.<Entry>comparingLong(e -> e.begin).thenComparingLong(e -> e.end));
        long previousEnd = 0;
        String previousName = null;
        boolean tiled = true;
        Entry firstGap = null;
        for (Entry e : sorted) {
            if (e.begin < previousEnd) {
                throw new CheckpointException(Reason.OVERLAP, file, e.name,
                        "bytes [" + e.begin + ", " + e.end + ") overlap tensor '" + previousName
                                + "' which ends at " + previousEnd);
            }
            if (e.begin > previousEnd && firstGap == null) {
                tiled = false;
                firstGap = e;
            }
            previousEnd = e.end;
            previousName = e.name;
        }
        if (previousEnd > dataSize) {
            if (tiled) {
                Entry cut = sorted.stream().filter(e -> e.end > dataSize).findFirst().orElseThrow();
                throw new CheckpointException(Reason.TRUNCATED, file, cut.name,
                        "the header describes " + previousEnd + " data bytes but the file holds only " + dataSize
                                + " after the header: the file is truncated");
            }
            Entry out = sorted.stream().filter(e -> e.end > dataSize).findFirst().orElseThrow();
            throw new CheckpointException(Reason.OFFSET_OUT_OF_RANGE, file, out.name,
                    "data_offsets [" + out.begin + ", " + out.end + "] reach past the " + dataSize
                            + "-byte data section");
        }
        if (firstGap != null) {
            throw new CheckpointException(Reason.HOLE, file, firstGap.name,
                    "bytes before offset " + firstGap.begin + " belong to no tensor");
        }
        if (previousEnd < dataSize) {
            throw new CheckpointException(Reason.HOLE, file, previousName,
                    (dataSize - previousEnd) + " bytes after the end of the last tensor (offset " + previousEnd
                            + ") belong to no tensor");
        }
        List<TensorInfo> tensors = new ArrayList<>(sorted.size());
        for (Entry e : sorted) {
            tensors.add(new TensorInfo(e.name, e.dtype, e.shape, file, dataStart + e.begin, e.end - e.begin));
        }
        return tensors;
    }

    /** The file this header was read from. */
    public Path file() {
        return file;
    }

    /** The JSON length {@code N}; the data section starts at {@code 8 + N}. */
    public long headerLength() {
        return headerLength;
    }

    /** Absolute offset of the data section. */
    public long dataStart() {
        return 8 + headerLength;
    }

    /** Every tensor in the order of its bytes in the file, with absolute offsets. */
    public List<TensorInfo> tensors() {
        return tensors;
    }

    /** The {@code __metadata__} strings, in file order; empty when absent. */
    public Map<String, String> metadata() {
        return metadata;
    }
}
