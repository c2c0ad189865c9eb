package io.github.bigmodel.safetensors.testing;

import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;

/** Writes pickle opcodes by hand, the way torch.save lays out a dict of tensors, for hostile-input tests. */
public final class TestPickle {

    private final ByteArrayOutputStream out = new ByteArrayOutputStream();

    public TestPickle op(int opcode) {
        out.write(opcode);
        return this;
    }

    public TestPickle raw(byte... bytes) {
        out.writeBytes(bytes);
        return this;
    }

    public TestPickle proto(int p) {
        return op(0x80).op(p);
    }

    public TestPickle str(String s) {
        byte[] b = s.getBytes(StandardCharsets.UTF_8);
        op('X');
        le(b.length, 4);
        return raw(b);
    }

    public TestPickle shortStr(String s) {
        byte[] b = s.getBytes(StandardCharsets.UTF_8);
        return op(0x8c).op(b.length).raw(b);
    }

    public TestPickle integer(long v) {
        if (v >= 0 && v < 256) {
            return op('K').op((int) v);
        }
        if (v >= 0 && v < 65536) {
            op('M');
            le(v, 2);
            return this;
        }
        op('J');
        le(v, 4);
        return this;
    }

    public TestPickle global(String module, String name) {
        return op('c').raw((module + "\n" + name + "\n").getBytes(StandardCharsets.UTF_8));
    }

    public TestPickle stackGlobal(String module, String name) {
        return shortStr(module).shortStr(name).op(0x93);
    }

    public TestPickle mark() {
        return op('(');
    }

    public TestPickle tuple() {
        return op('t');
    }

    public TestPickle longTuple(long... values) {
        mark();
        for (long v : values) {
            integer(v);
        }
        return tuple();
    }

    /** {@code name: _rebuild_tensor_v2(('storage', torch.<storageClass>, key, 'cpu', numel), offset, size, stride, False, OrderedDict())}. */
    public TestPickle tensor(String name, String storageClass, String key, long numel, long offset, long[] size, long[] stride) {
        str(name);
        global("torch._utils", "_rebuild_tensor_v2");
        mark();
        storage(storageClass, key, numel);
        integer(offset);
        longTuple(size);
        longTuple(stride);
        op(0x89);
        global("collections", "OrderedDict").op(')').op('R');
        tuple();
        return op('R');
    }

    public TestPickle storage(String storageClass, String key, long numel) {
        mark().str("storage").global("torch", storageClass).str(key).str("cpu").integer(numel).tuple();
        return op('Q');
    }

    /** Opens {@code {} (MARK} for entries closed by {@link #endDict()}. */
    public TestPickle beginDict() {
        return proto(2).op('}').mark();
    }

    public TestPickle endDict() {
        return op('u').op('.');
    }

    private void le(long v, int n) {
        for (int i = 0; i < n; i++) {
            out.write((int) (v >>> (8 * i)) & 0xFF);
        }
    }

    public byte[] bytes() {
        return out.toByteArray();
    }
}
