package io.github.bigmodel.safetensors.torch;

import io.github.bigmodel.safetensors.CheckpointException;
import io.github.bigmodel.safetensors.CheckpointException.Reason;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The table of contents of a zip file, read from its end of central directory record (ZIP64 when present), its
 * central directory and each entry's local header, so that every entry's compression method and the absolute offset
 * of its data are known without reading any data. Every offset and length is checked against the file size.
 *
 * <pre>{@code
 * ZipDirectory zip = ZipDirectory.read(channel, path);
 * ZipDirectory.Entry e = zip.entry("archive/data.pkl");
 * long firstByte = e.dataOffset();
 * }</pre>
 */
final class ZipDirectory {

    /** Compression methods of the zip format that are read. */
    static final int STORED = 0;
    static final int DEFLATED = 8;

    private static final int LOCAL_HEADER_SIGNATURE = 0x04034b50;
    private static final int CENTRAL_HEADER_SIGNATURE = 0x02014b50;
    private static final int EOCD_SIGNATURE = 0x06054b50;
    private static final int ZIP64_LOCATOR_SIGNATURE = 0x07064b50;
    private static final int ZIP64_EOCD_SIGNATURE = 0x06064b50;
    private static final int EOCD_SIZE = 22;
    private static final int ZIP64_LOCATOR_SIZE = 20;
    private static final int ZIP64_EOCD_MIN_SIZE = 56;
    private static final int CENTRAL_HEADER_SIZE = 46;
    private static final int LOCAL_HEADER_SIZE = 30;
    private static final int MAX_COMMENT = 0xFFFF;
    /** A central directory larger than this is not a checkpoint's: torch writes about 100 bytes per tensor. */
    static final long MAX_CENTRAL_DIRECTORY_BYTES = 64L << 20;

    /** One entry: its name, method, sizes and the absolute offset of its (possibly compressed) data. */
    record Entry(String name, int method, long compressedSize, long uncompressedSize, long dataOffset, int crc) {
    }

    private final Map<String, Entry> entries;
    private final List<Entry> ordered;

    private ZipDirectory(List<Entry> ordered) {
        this.ordered = Collections.unmodifiableList(ordered);
        Map<String, Entry> byName = new LinkedHashMap<>();
        for (Entry e : ordered) {
            byName.putIfAbsent(e.name(), e);
        }
        this.entries = Collections.unmodifiableMap(byName);
    }

    /** The entries in central directory order. */
    List<Entry> entries() {
        return ordered;
    }

    /** The entry called {@code name}, or null. */
    Entry entry(String name) {
        return entries.get(name);
    }

    /**
     * Reads the directory of {@code channel}.
     *
     * @throws CheckpointException UNKNOWN_FORMAT when it is no zip, TRUNCATED when a zip is cut short,
     *         OFFSET_OUT_OF_RANGE when a record points outside the file, UNSUPPORTED_CONTENT for multi-disk or
     *         encrypted archives
     */
    static ZipDirectory read(FileChannel channel, Path file) throws IOException {
        long size = channel.size();
        boolean startsLikeZip = size >= 4 && readLe(channel, 0, 4, file).getInt(0) == LOCAL_HEADER_SIGNATURE;
        if (size < EOCD_SIZE) {
            throw fail(startsLikeZip ? Reason.TRUNCATED : Reason.UNKNOWN_FORMAT, file,
                    "file of " + size + " bytes is too short to be a zip archive");
        }
        long eocd = findEndOfCentralDirectory(channel, size, file);
        if (eocd < 0) {
            throw fail(startsLikeZip ? Reason.TRUNCATED : Reason.UNKNOWN_FORMAT, file,
                    startsLikeZip ? "zip archive has no end of central directory record (file cut short?)"
                            : "not a zip archive (torch.save zip format expected)");
        }
        ByteBuffer r = readLe(channel, eocd, EOCD_SIZE, file);
        int disk = Short.toUnsignedInt(r.getShort(4));
        int cdDisk = Short.toUnsignedInt(r.getShort(6));
        long count = Short.toUnsignedInt(r.getShort(10));
        long cdSize = Integer.toUnsignedLong(r.getInt(12));
        long cdOffset = Integer.toUnsignedLong(r.getInt(16));
        long cdLimit = eocd;
        if (eocd >= ZIP64_LOCATOR_SIZE) {
            ByteBuffer loc = readLe(channel, eocd - ZIP64_LOCATOR_SIZE, ZIP64_LOCATOR_SIZE, file);
            if (loc.getInt(0) == ZIP64_LOCATOR_SIGNATURE) {
                long z64 = loc.getLong(8);
                if (z64 < 0 || z64 > eocd - ZIP64_LOCATOR_SIZE - ZIP64_EOCD_MIN_SIZE) {
                    throw fail(Reason.OFFSET_OUT_OF_RANGE, file,
                            "ZIP64 end of central directory offset " + z64 + " is outside the file");
                }
                ByteBuffer z = readLe(channel, z64, ZIP64_EOCD_MIN_SIZE, file);
                if (z.getInt(0) != ZIP64_EOCD_SIGNATURE) {
                    throw fail(Reason.UNKNOWN_FORMAT, file, "ZIP64 locator points to no ZIP64 record");
                }
                disk = z.getInt(16);
                cdDisk = z.getInt(20);
                count = z.getLong(32);
                cdSize = z.getLong(40);
                cdOffset = z.getLong(48);
                cdLimit = z64;
            }
        }
        if (disk != 0 || cdDisk != 0) {
            throw fail(Reason.UNSUPPORTED_CONTENT, file, "multi-disk zip archives are not supported");
        }
        if (cdSize < 0 || cdOffset < 0 || cdOffset > cdLimit || cdSize > cdLimit - cdOffset) {
            throw fail(Reason.OFFSET_OUT_OF_RANGE, file, "central directory [" + cdOffset + ", +" + cdSize
                    + ") is outside the file");
        }
        if (cdSize > MAX_CENTRAL_DIRECTORY_BYTES) {
            throw fail(Reason.HEADER_TOO_LARGE, file, "central directory of " + cdSize + " bytes exceeds "
                    + MAX_CENTRAL_DIRECTORY_BYTES);
        }
        if (count < 0 || count > cdSize / CENTRAL_HEADER_SIZE) {
            throw fail(Reason.OFFSET_OUT_OF_RANGE, file, count + " entries cannot fit in a central directory of "
                    + cdSize + " bytes");
        }
        ByteBuffer cd = readLe(channel, cdOffset, (int) cdSize, file);
        List<Entry> list = new ArrayList<>((int) count);
        int p = 0;
        for (long i = 0; i < count; i++) {
            if (cd.capacity() - p < CENTRAL_HEADER_SIZE || cd.getInt(p) != CENTRAL_HEADER_SIGNATURE) {
                throw fail(Reason.UNKNOWN_FORMAT, file, "central directory record " + i + " is damaged");
            }
            int flags = Short.toUnsignedInt(cd.getShort(p + 8));
            int method = Short.toUnsignedInt(cd.getShort(p + 10));
            int crc = cd.getInt(p + 16);
            long compressed = Integer.toUnsignedLong(cd.getInt(p + 20));
            long uncompressed = Integer.toUnsignedLong(cd.getInt(p + 24));
            int nameLen = Short.toUnsignedInt(cd.getShort(p + 28));
            int extraLen = Short.toUnsignedInt(cd.getShort(p + 30));
            int commentLen = Short.toUnsignedInt(cd.getShort(p + 32));
            int entryDisk = Short.toUnsignedInt(cd.getShort(p + 34));
            long localOffset = Integer.toUnsignedLong(cd.getInt(p + 42));
            int recordEnd = p + CENTRAL_HEADER_SIZE + nameLen + extraLen + commentLen;
            if (recordEnd > cd.capacity()) {
                throw fail(Reason.UNKNOWN_FORMAT, file, "central directory record " + i
                        + " runs past the directory");
            }
            String name = utf8(cd, p + CENTRAL_HEADER_SIZE, nameLen);
            // ZIP64 extra field: only the values saturated in the fixed record are present, in this order.
            int x = p + CENTRAL_HEADER_SIZE + nameLen;
            int xEnd = x + extraLen;
            while (x + 4 <= xEnd) {
                int id = Short.toUnsignedInt(cd.getShort(x));
                int len = Short.toUnsignedInt(cd.getShort(x + 2));
                if (x + 4 + len > xEnd) {
                    throw fail(Reason.UNKNOWN_FORMAT, file, "extra field of '" + name + "' is damaged");
                }
                if (id == 0x0001) {
                    int q = x + 4;
                    int qEnd = q + len;
                    if (uncompressed == 0xFFFFFFFFL) {
                        uncompressed = zip64Value(cd, q, qEnd, name, file);
                        q += 8;
                    }
                    if (compressed == 0xFFFFFFFFL) {
                        compressed = zip64Value(cd, q, qEnd, name, file);
                        q += 8;
                    }
                    if (localOffset == 0xFFFFFFFFL) {
                        localOffset = zip64Value(cd, q, qEnd, name, file);
                        q += 8;
                    }
                    if (entryDisk == 0xFFFF && q + 4 <= qEnd) {
                        entryDisk = cd.getInt(q);
                    }
                }
                x += 4 + len;
            }
            if (entryDisk != 0) {
                throw fail(Reason.UNSUPPORTED_CONTENT, file, "entry '" + name + "' is on another disk");
            }
            if ((flags & 1) != 0) {
                throw fail(Reason.UNSUPPORTED_CONTENT, file, "entry '" + name + "' is encrypted");
            }
            if (compressed < 0 || uncompressed < 0 || localOffset < 0 || localOffset > cdOffset - LOCAL_HEADER_SIZE) {
                throw fail(Reason.OFFSET_OUT_OF_RANGE, file, "local header of '" + name + "' at " + localOffset
                        + " is outside the entry area");
            }
            ByteBuffer local = readLe(channel, localOffset, LOCAL_HEADER_SIZE, file);
            if (local.getInt(0) != LOCAL_HEADER_SIGNATURE) {
                throw fail(Reason.UNKNOWN_FORMAT, file, "no local header for '" + name + "' at " + localOffset);
            }
            int localNameLen = Short.toUnsignedInt(local.getShort(26));
            int localExtraLen = Short.toUnsignedInt(local.getShort(28));
            long dataOffset = localOffset + LOCAL_HEADER_SIZE + localNameLen + localExtraLen;
            if (dataOffset > cdOffset || compressed > cdOffset - dataOffset) {
                throw fail(Reason.OFFSET_OUT_OF_RANGE, file, "data of '" + name + "' [" + dataOffset + ", +"
                        + compressed + ") runs past the entry area that ends at " + cdOffset);
            }
            if (localNameLen != nameLen || !utf8(readLe(channel, localOffset + LOCAL_HEADER_SIZE, nameLen, file),
                    0, nameLen).equals(name)) {
                throw fail(Reason.UNKNOWN_FORMAT, file, "local header at " + localOffset + " names another entry than '"
                        + name + "'");
            }
            if (method == STORED && compressed != uncompressed) {
                throw fail(Reason.SIZE_MISMATCH, file, "stored entry '" + name + "' has compressed size "
                        + compressed + " but size " + uncompressed);
            }
            list.add(new Entry(name, method, compressed, uncompressed, dataOffset, crc));
            p = recordEnd;
        }
        return new ZipDirectory(list);
    }

    private static long zip64Value(ByteBuffer cd, int q, int end, String name, Path file) {
        if (q + 8 > end) {
            throw fail(Reason.UNKNOWN_FORMAT, file, "ZIP64 extra field of '" + name + "' is too short");
        }
        long v = cd.getLong(q);
        if (v < 0) {
            throw fail(Reason.OFFSET_OUT_OF_RANGE, file, "ZIP64 value of '" + name + "' is out of range");
        }
        return v;
    }

    private static long findEndOfCentralDirectory(FileChannel channel, long size, Path file) throws IOException {
        int window = (int) Math.min(size, EOCD_SIZE + MAX_COMMENT);
        long start = size - window;
        ByteBuffer tail = readLe(channel, start, window, file);
        for (int i = window - EOCD_SIZE; i >= 0; i--) {
            if (tail.getInt(i) == EOCD_SIGNATURE) {
                int commentLen = Short.toUnsignedInt(tail.getShort(i + 20));
                if (i + EOCD_SIZE + commentLen <= window) {
                    return start + i;
                }
            }
        }
        return -1;
    }

    private static String utf8(ByteBuffer b, int at, int len) {
        byte[] bytes = new byte[len];
        b.get(at, bytes);
        return new String(bytes, StandardCharsets.UTF_8);
    }

    /** Reads {@code len} bytes at {@code at}; a short read means the file is shorter than its records say. */
    static ByteBuffer readLe(FileChannel channel, long at, int len, Path file) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(len).order(ByteOrder.LITTLE_ENDIAN);
        long pos = at;
        while (b.hasRemaining()) {
            int n = channel.read(b, pos);
            if (n < 0) {
                throw fail(Reason.TRUNCATED, file, "file ends at " + pos + " while reading " + len + " bytes at " + at);
            }
            pos += n;
        }
        return b;
    }

    private static CheckpointException fail(Reason reason, Path file, String message) {
        return new CheckpointException(reason, file, null, message);
    }
}
