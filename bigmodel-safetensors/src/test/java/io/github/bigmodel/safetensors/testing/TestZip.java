package io.github.bigmodel.safetensors.testing;

import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.zip.CRC32;
import java.util.zip.Deflater;

/** Writes a zip the way torch.save does (stored entries, data 64-byte aligned by padding the extra field). */
public final class TestZip {

    private record Written(String name, int method, long crc, long csize, long usize, long offset) {
    }

    private final ByteArrayOutputStream out = new ByteArrayOutputStream();
    private final List<Written> written = new ArrayList<>();

    public TestZip stored(String name, byte[] data) {
        return entry(name, data, false);
    }

    public TestZip deflated(String name, byte[] data) {
        return entry(name, data, true);
    }

    private TestZip entry(String name, byte[] data, boolean deflate) {
        byte[] n = name.getBytes(StandardCharsets.UTF_8);
        byte[] payload = data;
        if (deflate) {
            Deflater d = new Deflater(Deflater.DEFAULT_COMPRESSION, true);
            d.setInput(data);
            d.finish();
            byte[] buf = new byte[data.length + 1024];
            int len = d.deflate(buf);
            d.end();
            payload = java.util.Arrays.copyOf(buf, len);
        }
        CRC32 crc = new CRC32();
        crc.update(data);
        long offset = out.size();
        int extra = 0;
        long dataStart = offset + 30 + n.length;
        if (dataStart % 64 != 0) {
            extra = (int) (64 - (dataStart + 4) % 64) % 64 + 4;
        }
        le(0x04034b50, 4);
        le(20, 2);
        le(0, 2);
        le(deflate ? 8 : 0, 2);
        le(0, 4);
        le(crc.getValue(), 4);
        le(payload.length, 4);
        le(data.length, 4);
        le(n.length, 2);
        le(extra, 2);
        out.writeBytes(n);
        if (extra > 0) {
            le(0x4246, 2);
            le(extra - 4, 2);
            out.writeBytes(new byte[extra - 4]);
        }
        out.writeBytes(payload);
        written.add(new Written(name, deflate ? 8 : 0, crc.getValue(), payload.length, data.length, offset));
        return this;
    }

    public byte[] bytes() {
        long cdStart = out.size();
        for (Written w : written) {
            byte[] n = w.name().getBytes(StandardCharsets.UTF_8);
            le(0x02014b50, 4);
            le(20, 2);
            le(20, 2);
            le(0, 2);
            le(w.method(), 2);
            le(0, 4);
            le(w.crc(), 4);
            le(w.csize(), 4);
            le(w.usize(), 4);
            le(n.length, 2);
            le(0, 2);
            le(0, 2);
            le(0, 2);
            le(0, 2);
            le(0, 4);
            le(w.offset(), 4);
            out.writeBytes(n);
        }
        long cdSize = out.size() - cdStart;
        le(0x06054b50, 4);
        le(0, 2);
        le(0, 2);
        le(written.size(), 2);
        le(written.size(), 2);
        le(cdSize, 4);
        le(cdStart, 4);
        le(0, 2);
        return out.toByteArray();
    }

    private void le(long v, int n) {
        for (int i = 0; i < n; i++) {
            out.write((int) (v >>> (8 * i)) & 0xFF);
        }
    }
}
