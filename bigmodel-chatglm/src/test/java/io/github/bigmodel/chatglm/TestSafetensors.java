package io.github.bigmodel.chatglm;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.github.bigmodel.core.DType;
import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.BoolOptional;
import org.bytedeco.pytorch.LongOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * A minimal test-side safetensors reader (the real one lives in bigmodel-safetensors): the file is mapped
 * copy-on-write once and every tensor is a zero-copy view of it.
 */
// PointerScope blocks are used for what they release on close, not referenced by name.
@SuppressWarnings("try")
final class TestSafetensors implements AutoCloseable {

    private static final ObjectMapper JSON = new ObjectMapper();

    private final Path file;
    private final JsonNode header;
    private final long dataStart;
    private final long fileSize;
    private Tensor bytes;

    TestSafetensors(Path file) throws IOException {
        this.file = file;
        this.fileSize = Files.size(file);
        byte[] lengthBytes = new byte[8];
        byte[] headerBytes;
        try (InputStream in = Files.newInputStream(file)) {
            if (in.readNBytes(lengthBytes, 0, 8) != 8) {
                throw new IOException(file + ": shorter than the 8-byte header length");
            }
            long n = ByteBuffer.wrap(lengthBytes).order(ByteOrder.LITTLE_ENDIAN).getLong();
            if (n <= 0 || 8 + n > fileSize || n > Integer.MAX_VALUE) {
                throw new IOException(file + ": header length " + n + " does not fit a file of " + fileSize);
            }
            headerBytes = in.readNBytes((int) n);
            this.dataStart = 8 + n;
        }
        this.header = JSON.readTree(headerBytes);
        NativeInit.init();
        try (PointerScope scope = new PointerScope()) {
            bytes = torch.from_file(file.toString(), new BoolOptional(false), new LongOptional(fileSize),
                    new TensorOptions(ScalarType.Byte));
            bytes.retainReference();
        }
    }

    List<String> names() {
        List<String> out = new ArrayList<>();
        for (Iterator<String> it = header.fieldNames(); it.hasNext(); ) {
            String n = it.next();
            if (!n.equals("__metadata__")) {
                out.add(n);
            }
        }
        return out;
    }

    boolean has(String name) {
        return header.has(name) && !name.equals("__metadata__");
    }

    /** A view of the named tensor (null when absent); the caller owns the returned handle. */
    Tensor get(String name) {
        JsonNode info = header.get(name);
        if (info == null || name.equals("__metadata__")) {
            return null;
        }
        DType dtype = DType.fromSafetensors(info.get("dtype").asText());
        long[] shape = new long[info.get("shape").size()];
        long numel = 1;
        for (int i = 0; i < shape.length; i++) {
            shape[i] = info.get("shape").get(i).asLong();
            numel *= shape[i];
        }
        long begin = info.get("data_offsets").get(0).asLong();
        long end = info.get("data_offsets").get(1).asLong();
        if (begin < 0 || end < begin || dataStart + end > fileSize || end - begin != dtype.bytesFor(numel)) {
            throw new IllegalStateException(file + ": bad offsets for " + name);
        }
        try (PointerScope scope = new PointerScope()) {
            Tensor t = bytes.narrow(0, dataStart + begin, end - begin).view(dtype.scalarType()).view(shape);
            t.retainReference();
            return t;
        }
    }

    @Override
    public void close() {
        if (bytes != null) {
            bytes.close();
            bytes = null;
        }
    }

    /** Loads libtorch with bigmodel's settings before the first native call. */
    private static final class NativeInit {
        static void init() {
            io.github.bigmodel.core.NativeRuntime.init();
        }
    }
}
