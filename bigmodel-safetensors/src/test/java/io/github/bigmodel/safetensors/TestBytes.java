package io.github.bigmodel.safetensors;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.Tensors;
import java.io.ByteArrayOutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.pytorch.Tensor;

/** Byte-level helpers for building safetensors files by hand and reading tensors' raw bytes. */
final class TestBytes {

    private TestBytes() {
    }

    /** A safetensors file: little-endian length, the JSON as given (no padding), then {@code data}. */
    static byte[] safetensors(String json, byte[] data) {
        byte[] header = json.getBytes(StandardCharsets.UTF_8);
        return withPrefix(header.length, header, data);
    }

    static byte[] withPrefix(long headerLength, byte[] header, byte[] data) {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        out.writeBytes(ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(headerLength).array());
        out.writeBytes(header);
        out.writeBytes(data);
        return out.toByteArray();
    }

    /** The raw bytes of a CPU tensor (made contiguous first when needed). */
    static byte[] bytesOf(Tensor t) {
        try (Tensor c = t.contiguous()) {
            byte[] out = new byte[(int) c.nbytes()];
            if (out.length > 0) {
                new BytePointer(c.data_ptr()).capacity(out.length).get(out);
            }
            return out;
        }
    }

    static byte[] bytesOf(ByteBuffer b) {
        byte[] out = new byte[b.remaining()];
        b.duplicate().get(out);
        return out;
    }

    /** A CPU tensor holding exactly {@code bytes}. */
    static Tensor tensorOf(byte[] bytes, DType dtype, long... shape) {
        Tensor t = Tensors.empty(dtype, Device.CPU, shape);
        if (bytes.length > 0) {
            new BytePointer(t.data_ptr()).capacity(bytes.length).put(bytes);
        }
        return t;
    }
}
