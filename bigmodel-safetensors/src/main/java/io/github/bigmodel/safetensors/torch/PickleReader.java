package io.github.bigmodel.safetensors.torch;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.safetensors.CheckpointException;
import io.github.bigmodel.safetensors.CheckpointException.Reason;
import java.math.BigInteger;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A pickle reader for the subset of protocols 2 to 5 that {@code torch.save} writes, which builds plain Java values
 * and never runs anything: a global is a name looked up in a fixed allow-list (tensor rebuilders, {@code OrderedDict},
 * storage classes, dtypes), and calling one of them builds a description ({@link TensorRef}), not an object.
 *
 * <p>Values: {@code None} is null, ints are Long (BigInteger beyond 64 bits), floats Double, str String, bytes
 * byte[], tuples {@link Tuple}, lists ArrayList, dicts LinkedHashMap with scalar keys.
 *
 * <pre>{@code
 * Object root = new PickleReader(pickleBytes, path).read();   // a Map of name -> TensorRef for torch.save(dict)
 * }</pre>
 */
final class PickleReader {

    /** Deepest MARK nesting accepted; torch writes three. */
    static final int MAX_MARK_DEPTH = 1024;
    /** Longest {@code module\nname} line of GLOBAL. */
    static final int MAX_GLOBAL_LINE = 1024;
    /** Most dimensions of a tensor. */
    static final int MAX_DIMS = 64;

    /** A tuple: immutable, told apart from a list. */
    record Tuple(List<Object> items) {
    }

    /** An allow-listed global. */
    record Global(String module, String name, Kind kind, DType dtype) {
        String qualifiedName() {
            return module + "." + name;
        }
    }

    /** What an allow-listed global stands for. */
    enum Kind { REBUILD_TENSOR_V2, REBUILD_PARAMETER, ORDERED_DICT, STORAGE_CLASS, DTYPE }

    /** A storage named by a persistent id: {@code ('storage', storage_type, key, location, numel)}. */
    record StorageRef(DType dtype, String key, String location, long numel) {
    }

    /** A tensor described by {@code _rebuild_tensor_v2}: a strided view of a storage. */
    record TensorRef(StorageRef storage, long storageOffset, long[] size, long[] stride) {
    }

    private static final Object MARK = new Object() {
        @Override
        public String toString() {
            return "MARK";
        }
    };

    private static final Map<String, Global> ALLOWED = allowList();

    private final byte[] data;
    private final Path file;
    private final int maxStack;
    private final int maxMemo;
    private int pos;
    private final ArrayList<Object> stack = new ArrayList<>();
    private final ArrayList<Integer> marks = new ArrayList<>();
    private final Map<Long, Object> memo = new HashMap<>();

    PickleReader(byte[] data, Path file) {
        this.data = data;
        this.file = file;
        // Each opcode pushes at most one value, so legitimate pickles stay far below these bounds.
        this.maxStack = Math.max(64, Math.min(data.length, 1 << 22));
        this.maxMemo = Math.max(64, Math.min(data.length, 1 << 22));
    }

    /** The names accepted by GLOBAL / STACK_GLOBAL, as {@code module.name}. */
    static Map<String, Global> allowed() {
        return ALLOWED;
    }

    private static Map<String, Global> allowList() {
        Map<String, Global> m = new LinkedHashMap<>();
        put(m, "torch._utils", "_rebuild_tensor_v2", Kind.REBUILD_TENSOR_V2, null);
        put(m, "torch._utils", "_rebuild_parameter", Kind.REBUILD_PARAMETER, null);
        put(m, "collections", "OrderedDict", Kind.ORDERED_DICT, null);
        Object[][] storages = {
            {"DoubleStorage", DType.FLOAT64}, {"FloatStorage", DType.FLOAT32}, {"HalfStorage", DType.FLOAT16},
            {"BFloat16Storage", DType.BFLOAT16}, {"Float8_e4m3fnStorage", DType.FLOAT8_E4M3},
            {"Float8_e5m2Storage", DType.FLOAT8_E5M2}, {"LongStorage", DType.INT64}, {"IntStorage", DType.INT32},
            {"ShortStorage", DType.INT16}, {"CharStorage", DType.INT8}, {"ByteStorage", DType.UINT8},
            {"BoolStorage", DType.BOOL}, {"UInt16Storage", DType.UINT16}, {"UInt32Storage", DType.UINT32},
            {"UInt64Storage", DType.UINT64},
        };
        for (Object[] s : storages) {
            put(m, "torch", (String) s[0], Kind.STORAGE_CLASS, (DType) s[1]);
        }
        for (DType d : DType.values()) {
            if (d.hasScalarType()) {
                put(m, "torch", d.torchName(), Kind.DTYPE, d);
            }
        }
        return Collections.unmodifiableMap(m);
    }

    private static void put(Map<String, Global> m, String module, String name, Kind kind, DType dtype) {
        m.put(module + "." + name, new Global(module, name, kind, dtype));
    }

    /** Runs the pickle to its STOP and returns the value it leaves. */
    Object read() {
        while (true) {
            if (pos >= data.length) {
                throw fail(Reason.TRUNCATED, "pickle ends at byte " + pos + " without STOP");
            }
            int at = pos;
            int op = data[pos++] & 0xFF;
            switch (op) {
                case 0x80: // PROTO
                    int proto = u8();
                    if (proto < 2 || proto > 5) {
                        throw fail(Reason.UNSUPPORTED_CONTENT, "pickle protocol " + proto + " is not supported (2 to 5)");
                    }
                    break;
                case 0x95: // FRAME: framing only groups opcodes; the bytes follow inline
                    long frame = le(8);
                    if (frame < 0 || frame > data.length - pos) {
                        throw fail(Reason.TRUNCATED, "frame of " + frame + " bytes at " + at + " runs past the pickle");
                    }
                    break;
                case '}': // EMPTY_DICT
                    push(new LinkedHashMap<Object, Object>());
                    break;
                case ']': // EMPTY_LIST
                    push(new ArrayList<Object>());
                    break;
                case ')': // EMPTY_TUPLE
                    push(new Tuple(List.of()));
                    break;
                case '(': // MARK
                    if (marks.size() >= MAX_MARK_DEPTH) {
                        throw fail(Reason.UNSUPPORTED_CONTENT, "MARK nesting deeper than " + MAX_MARK_DEPTH);
                    }
                    marks.add(stack.size());
                    break;
                case '0': // POP
                    pop();
                    break;
                case '1': // POP_MARK
                    popToMark();
                    break;
                case '2': // DUP
                    push(peek());
                    break;
                case 't': // TUPLE
                    push(new Tuple(Collections.unmodifiableList(popToMark())));
                    break;
                case 0x85: // TUPLE1
                case 0x86: // TUPLE2
                case 0x87: { // TUPLE3
                    int n = op - 0x84;
                    requireStack(n, "TUPLE" + n);
                    List<Object> items = new ArrayList<>(stack.subList(stack.size() - n, stack.size()));
                    truncateStack(stack.size() - n);
                    push(new Tuple(Collections.unmodifiableList(items)));
                    break;
                }
                case 'l': // LIST
                    push(popToMark());
                    break;
                case 'd': { // DICT
                    List<Object> items = popToMark();
                    Map<Object, Object> dict = new LinkedHashMap<>();
                    setItems(dict, items);
                    push(dict);
                    break;
                }
                case 'X': // BINUNICODE
                    push(string(le(4)));
                    break;
                case 0x8c: // SHORT_BINUNICODE
                    push(string(u8()));
                    break;
                case 0x8d: // BINUNICODE8
                    push(string(le(8)));
                    break;
                case 'C': // SHORT_BINBYTES
                    push(bytes(u8()));
                    break;
                case 'B': // BINBYTES
                    push(bytes(le(4)));
                    break;
                case 0x8e: // BINBYTES8
                    push(bytes(le(8)));
                    break;
                case 'J': // BININT: signed 32-bit
                    push((long) (int) le(4));
                    break;
                case 'K': // BININT1
                    push((long) u8());
                    break;
                case 'M': // BININT2
                    push(le(2));
                    break;
                case 0x8a: // LONG1
                    push(longBytes(u8()));
                    break;
                case 0x8b: { // LONG4
                    long n = le(4);
                    if (n > 1024) {
                        throw fail(Reason.UNSUPPORTED_CONTENT, "LONG4 of " + n + " bytes is larger than any tensor field");
                    }
                    push(longBytes((int) n));
                    break;
                }
                case 'G': // BINFLOAT: big-endian double
                    need(8);
                    long bits = 0;
                    for (int i = 0; i < 8; i++) {
                        bits = (bits << 8) | (data[pos++] & 0xFF);
                    }
                    push(Double.longBitsToDouble(bits));
                    break;
                case 0x88: // NEWTRUE
                    push(Boolean.TRUE);
                    break;
                case 0x89: // NEWFALSE
                    push(Boolean.FALSE);
                    break;
                case 'N': // NONE
                    push(null);
                    break;
                case 'c': { // GLOBAL
                    String module = line();
                    String name = line();
                    push(resolveGlobal(module, name));
                    break;
                }
                case 0x93: { // STACK_GLOBAL
                    requireStack(2, "STACK_GLOBAL");
                    Object name = pop();
                    Object module = pop();
                    if (!(module instanceof String) || !(name instanceof String)) {
                        throw fail(Reason.UNSUPPORTED_CONTENT, "STACK_GLOBAL needs two strings, got "
                                + describe(module) + " and " + describe(name));
                    }
                    push(resolveGlobal((String) module, (String) name));
                    break;
                }
                case 'Q': // BINPERSID
                    push(persistentLoad(pop()));
                    break;
                case 'R': { // REDUCE
                    requireStack(2, "REDUCE");
                    Object args = pop();
                    Object callable = pop();
                    push(reduce(callable, args));
                    break;
                }
                case 'b': { // BUILD
                    requireStack(2, "BUILD");
                    Object state = pop();
                    Object target = peek();
                    // OrderedDict state (state_dict's _metadata) and tensor state carry nothing a reader needs.
                    if (!(target instanceof Map) && !(target instanceof TensorRef)) {
                        throw fail(Reason.UNSUPPORTED_CONTENT, "BUILD on " + describe(target) + " is not supported");
                    }
                    TorchBinFile.LOG.debug("{}: ignoring pickled state ({}) of a {}", file, describe(state),
                            describe(target));
                    break;
                }
                case 's': { // SETITEM
                    requireStack(3, "SETITEM");
                    Object value = pop();
                    Object key = pop();
                    asDict(peek(), "SETITEM").put(checkKey(key), value);
                    break;
                }
                case 'u': { // SETITEMS
                    List<Object> items = popToMark();
                    requireStack(1, "SETITEMS");
                    setItems(asDict(peek(), "SETITEMS"), items);
                    break;
                }
                case 'a': { // APPEND
                    requireStack(2, "APPEND");
                    Object value = pop();
                    asList(peek(), "APPEND").add(value);
                    break;
                }
                case 'e': { // APPENDS
                    List<Object> items = popToMark();
                    requireStack(1, "APPENDS");
                    asList(peek(), "APPENDS").addAll(items);
                    break;
                }
                case 'q': // BINPUT
                    memoPut(u8());
                    break;
                case 'r': // LONG_BINPUT
                    memoPut(le(4));
                    break;
                case 0x94: // MEMOIZE
                    memoPut(memo.size());
                    break;
                case 'h': // BINGET
                    push(memoGet(u8()));
                    break;
                case 'j': // LONG_BINGET
                    push(memoGet(le(4)));
                    break;
                case '.': // STOP
                    requireStack(1, "STOP");
                    return pop();
                default:
                    throw fail(Reason.UNSUPPORTED_CONTENT, String.format("pickle opcode 0x%02x at byte %d is not supported", op, at));
            }
        }
    }

    private Global resolveGlobal(String module, String name) {
        Global g = ALLOWED.get(module + "." + name);
        if (g == null) {
            throw fail(Reason.UNSUPPORTED_CONTENT, "refusing to load pickled object " + printable(module) + "."
                    + printable(name) + " (only tensors, storages and plain containers are read)");
        }
        return g;
    }

    private StorageRef persistentLoad(Object pid) {
        if (!(pid instanceof Tuple) || ((Tuple) pid).items().size() != 5
                || !"storage".equals(((Tuple) pid).items().get(0))) {
            throw fail(Reason.UNSUPPORTED_CONTENT, "persistent id " + describe(pid)
                    + " is not ('storage', type, key, location, numel)");
        }
        List<Object> t = ((Tuple) pid).items();
        Object type = t.get(1);
        if (!(type instanceof Global) || ((Global) type).kind() != Kind.STORAGE_CLASS) {
            throw fail(Reason.UNSUPPORTED_CONTENT, "persistent id names " + describe(type) + ", not a storage class");
        }
        if (!(t.get(2) instanceof String) || !(t.get(3) instanceof String)) {
            throw fail(Reason.UNSUPPORTED_CONTENT, "storage key and location must be strings");
        }
        long numel = nonNegative(t.get(4), "storage numel");
        return new StorageRef(((Global) type).dtype(), (String) t.get(2), (String) t.get(3), numel);
    }

    private Object reduce(Object callable, Object args) {
        if (!(callable instanceof Global)) {
            throw fail(Reason.UNSUPPORTED_CONTENT, "REDUCE calls " + describe(callable) + ", not an allowed global");
        }
        if (!(args instanceof Tuple)) {
            throw fail(Reason.UNSUPPORTED_CONTENT, "REDUCE arguments are " + describe(args) + ", not a tuple");
        }
        Global g = (Global) callable;
        List<Object> a = ((Tuple) args).items();
        switch (g.kind()) {
            case ORDERED_DICT:
                if (!a.isEmpty()) {
                    throw fail(Reason.UNSUPPORTED_CONTENT, "OrderedDict with constructor arguments is not supported");
                }
                return new LinkedHashMap<Object, Object>();
            case REBUILD_PARAMETER:
                if (a.size() != 3 || !(a.get(0) instanceof TensorRef)) {
                    throw fail(Reason.UNSUPPORTED_CONTENT, "_rebuild_parameter expects (tensor, requires_grad, hooks)");
                }
                return a.get(0);
            case REBUILD_TENSOR_V2:
                return rebuildTensor(a);
            default:
                throw fail(Reason.UNSUPPORTED_CONTENT, g.qualifiedName() + " cannot be called");
        }
    }

    /** {@code _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])}. */
    private TensorRef rebuildTensor(List<Object> a) {
        if (a.size() != 6 && a.size() != 7) {
            throw fail(Reason.UNSUPPORTED_CONTENT, "_rebuild_tensor_v2 expects 6 or 7 arguments, got " + a.size());
        }
        if (!(a.get(0) instanceof StorageRef)) {
            throw fail(Reason.UNSUPPORTED_CONTENT, "_rebuild_tensor_v2 needs a storage, got " + describe(a.get(0)));
        }
        long offset = nonNegative(a.get(1), "storage offset");
        long[] size = longTuple(a.get(2), "size");
        long[] stride = longTuple(a.get(3), "stride");
        if (size.length != stride.length) {
            throw fail(Reason.UNSUPPORTED_CONTENT, "size has " + size.length + " dimensions but stride "
                    + stride.length);
        }
        if (!(a.get(4) instanceof Boolean)) {
            throw fail(Reason.UNSUPPORTED_CONTENT, "requires_grad is " + describe(a.get(4)) + ", not a bool");
        }
        return new TensorRef((StorageRef) a.get(0), offset, size, stride);
    }

    private long[] longTuple(Object o, String what) {
        if (!(o instanceof Tuple)) {
            throw fail(Reason.UNSUPPORTED_CONTENT, "tensor " + what + " is " + describe(o) + ", not a tuple");
        }
        List<Object> items = ((Tuple) o).items();
        if (items.size() > MAX_DIMS) {
            throw fail(Reason.UNSUPPORTED_CONTENT, "tensor " + what + " has " + items.size() + " dimensions (max "
                    + MAX_DIMS + ")");
        }
        long[] r = new long[items.size()];
        for (int i = 0; i < r.length; i++) {
            r[i] = nonNegative(items.get(i), "tensor " + what);
        }
        return r;
    }

    private long nonNegative(Object o, String what) {
        if (!(o instanceof Long) || (Long) o < 0) {
            throw fail(Reason.UNSUPPORTED_CONTENT, what + " is " + describe(o) + ", not a non-negative int");
        }
        return (Long) o;
    }

    private void setItems(Map<Object, Object> dict, List<Object> items) {
        if (items.size() % 2 != 0) {
            throw fail(Reason.UNSUPPORTED_CONTENT, "odd number of items (" + items.size() + ") for a dict");
        }
        for (int i = 0; i < items.size(); i += 2) {
            dict.put(checkKey(items.get(i)), items.get(i + 1));
        }
    }

    /** Only scalar keys: hashing containers could recurse through cycles a hostile pickle builds. */
    private Object checkKey(Object key) {
        if (key == null || key instanceof String || key instanceof Long || key instanceof Boolean
                || key instanceof Double || key instanceof BigInteger) {
            return key;
        }
        throw fail(Reason.UNSUPPORTED_CONTENT, "dict key of type " + describe(key) + " is not supported");
    }

    @SuppressWarnings("unchecked")
    private Map<Object, Object> asDict(Object o, String op) {
        if (!(o instanceof Map)) {
            throw fail(Reason.UNSUPPORTED_CONTENT, op + " on " + describe(o) + ", not a dict");
        }
        return (Map<Object, Object>) o;
    }

    @SuppressWarnings("unchecked")
    private List<Object> asList(Object o, String op) {
        if (!(o instanceof ArrayList)) {
            throw fail(Reason.UNSUPPORTED_CONTENT, op + " on " + describe(o) + ", not a list");
        }
        return (List<Object>) o;
    }

    private void memoPut(long index) {
        if (stack.isEmpty()) {
            throw fail(Reason.UNSUPPORTED_CONTENT, "memo store with an empty stack at byte " + pos);
        }
        if (memo.size() >= maxMemo && !memo.containsKey(index)) {
            throw fail(Reason.UNSUPPORTED_CONTENT, "pickle memo exceeds " + maxMemo + " entries");
        }
        memo.put(index, peek());
    }

    private Object memoGet(long index) {
        if (!memo.containsKey(index)) {
            throw fail(Reason.UNSUPPORTED_CONTENT, "pickle memo has no entry " + index);
        }
        return memo.get(index);
    }

    private void push(Object o) {
        if (stack.size() >= maxStack) {
            throw fail(Reason.UNSUPPORTED_CONTENT, "pickle stack exceeds " + maxStack + " entries");
        }
        stack.add(o);
    }

    private Object pop() {
        requireStack(1, "pop");
        return stack.remove(stack.size() - 1);
    }

    private Object peek() {
        requireStack(1, "peek");
        return stack.get(stack.size() - 1);
    }

    /** Stack items that belong to the current mark frame (the rest would be a malformed pickle). */
    private void requireStack(int n, String op) {
        int floor = marks.isEmpty() ? 0 : marks.get(marks.size() - 1);
        if (stack.size() - floor < n) {
            throw fail(Reason.UNSUPPORTED_CONTENT, op + " needs " + n + " stack items at byte " + pos);
        }
    }

    private List<Object> popToMark() {
        if (marks.isEmpty()) {
            throw fail(Reason.UNSUPPORTED_CONTENT, "opcode at byte " + (pos - 1) + " needs a MARK");
        }
        int mark = marks.remove(marks.size() - 1);
        List<Object> items = new ArrayList<>(stack.subList(mark, stack.size()));
        truncateStack(mark);
        return items;
    }

    private void truncateStack(int size) {
        stack.subList(size, stack.size()).clear();
    }

    private int u8() {
        need(1);
        return data[pos++] & 0xFF;
    }

    /** Unsigned little-endian integer of {@code n} bytes (n = 8 may come out negative: callers check). */
    private long le(int n) {
        need(n);
        long v = 0;
        for (int i = n - 1; i >= 0; i--) {
            v = (v << 8) | (data[pos + i] & 0xFF);
        }
        pos += n;
        return v;
    }

    private Object longBytes(int n) {
        need(n);
        if (n == 0) {
            return 0L;
        }
        byte[] be = new byte[n];
        for (int i = 0; i < n; i++) {
            be[i] = data[pos + n - 1 - i];
        }
        pos += n;
        BigInteger v = new BigInteger(be);
        return v.bitLength() < 64 ? (Object) v.longValue() : v;
    }

    private String string(long len) {
        byte[] b = bytes(len);
        try {
            return StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT).decode(java.nio.ByteBuffer.wrap(b)).toString();
        } catch (CharacterCodingException e) {
            throw fail(Reason.UNSUPPORTED_CONTENT, "string at byte " + pos + " is not valid UTF-8");
        }
    }

    /** Lengths are bounded by the bytes left, so a hostile length cannot allocate more than the pickle holds. */
    private byte[] bytes(long len) {
        if (len < 0 || len > data.length - pos) {
            throw fail(Reason.TRUNCATED, "string of " + len + " bytes at " + pos + " runs past the pickle ("
                    + data.length + " bytes)");
        }
        byte[] b = new byte[(int) len];
        System.arraycopy(data, pos, b, 0, (int) len);
        pos += (int) len;
        return b;
    }

    private String line() {
        int start = pos;
        while (pos < data.length && data[pos] != '\n') {
            if (pos - start > MAX_GLOBAL_LINE) {
                throw fail(Reason.UNSUPPORTED_CONTENT, "GLOBAL name at byte " + start + " is longer than "
                        + MAX_GLOBAL_LINE);
            }
            pos++;
        }
        if (pos >= data.length) {
            throw fail(Reason.TRUNCATED, "GLOBAL name at byte " + start + " is not terminated");
        }
        String s = new String(data, start, pos - start, StandardCharsets.UTF_8);
        pos++;
        return s;
    }

    private void need(int n) {
        if (n > data.length - pos) {
            throw fail(Reason.TRUNCATED, "pickle ends at byte " + data.length + " inside an opcode argument at " + pos);
        }
    }

    /** A type name for messages: never the value, which could be huge or cyclic. */
    static String describe(Object o) {
        if (o == null) {
            return "None";
        }
        if (o instanceof Global) {
            return ((Global) o).qualifiedName();
        }
        if (o instanceof String) {
            String s = (String) o;
            return "str '" + printable(s.length() > 64 ? s.substring(0, 64) + "..." : s) + "'";
        }
        if (o instanceof Long || o instanceof BigInteger) {
            return "int " + o;
        }
        if (o instanceof Tuple) {
            return "tuple of " + ((Tuple) o).items().size();
        }
        if (o instanceof List) {
            return "list";
        }
        if (o instanceof Map) {
            return "dict";
        }
        if (o instanceof TensorRef) {
            return "tensor";
        }
        if (o instanceof StorageRef) {
            return "storage";
        }
        if (o instanceof byte[]) {
            return "bytes";
        }
        return o.getClass().getSimpleName();
    }

    private static String printable(String s) {
        StringBuilder b = new StringBuilder(Math.min(s.length(), 200));
        for (int i = 0; i < s.length() && i < 200; i++) {
            char c = s.charAt(i);
            b.append(c >= 0x20 && c < 0x7f ? c : '?');
        }
        return b.toString();
    }

    private CheckpointException fail(Reason reason, String message) {
        return new CheckpointException(reason, file, null, "data.pkl: " + message);
    }
}
