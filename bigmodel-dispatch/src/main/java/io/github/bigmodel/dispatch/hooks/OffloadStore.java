package io.github.bigmodel.dispatch.hooks;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.NativeRuntime;
import io.github.bigmodel.core.Tensors;
import io.github.bigmodel.dispatch.offload.OffloadFolder;
import io.github.bigmodel.dispatch.offload.OffloadSpaceException;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.function.Supplier;
import org.bytedeco.pytorch.BoolOptional;
import org.bytedeco.pytorch.LongOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * An offload folder that is written once and reused: accelerate's {@code .dat} files and {@code index.json}
 * ({@link OffloadFolder}) plus a fingerprint file, {@value #FINGERPRINT}, saying what the folder was made from (the
 * checkpoint files with their sizes and modification times, and the requested dtype) and which tensors it holds
 * (dtype, shape, bytes).
 *
 * <p>Rules: the fingerprint is deleted before anything in the folder changes and written last, so a folder whose
 * writing was interrupted has none and is rewritten. A folder is reused only when its fingerprint names the same
 * source and dtype and each wanted tensor's entry and {@code .dat} size agree; missing or damaged tensors of an
 * otherwise matching folder are rewritten one by one; a folder made from something else is cleared and rewritten.
 * A folder holding files bigmodel never writes there is refused rather than cleared.
 *
 * <p>Reads map each {@code .dat} copy-on-write ({@code torch.from_file}, {@code shared=false}): no anonymous
 * memory is used until a value is written, and pages come from (and go back to) the page cache.
 *
 * <pre>{@code
 * OffloadStore store = OffloadStore.open(Path.of("offload"), fingerprintSource);
 * WeightSource w = store.source("layers.3.up.weight", DType.FLOAT16, shape, () -> converted(ckpt, name));
 * store.commit();      // index.json, then the fingerprint
 * ...
 * store.close();       // releases the mappings
 * }</pre>
 */
public final class OffloadStore implements AutoCloseable {

    /** The fingerprint file's name inside the offload folder. */
    public static final String FINGERPRINT = "bigmodel-offload.json";
    private static final String FORMAT = "bigmodel-offload/1";
    private static final Logger LOG = LoggerFactory.getLogger(OffloadStore.class);
    private static final ObjectMapper JSON = new ObjectMapper();

    /** Usable bytes of the disk holding a folder; package-private so tests can simulate a full disk. */
    public interface SpaceProbe {
        long usableBytes(Path dir) throws IOException;
    }

    /** The file store's usable space, as the JDK reports it. */
    public static final SpaceProbe FILE_STORE = dir -> Files.getFileStore(dir).getUsableSpace();

    private final Path dir;
    private final SpaceProbe probe;
    private final ObjectNode source;
    private final OffloadFolder folder;
    /** Tensors the existing fingerprint vouches for (name to its entry), when its source matches ours. */
    private final Map<String, JsonNode> reusable;
    /** Tensors of the fingerprint to write at commit: every valid one, old or new. */
    private final Map<String, ObjectNode> tensors = new LinkedHashMap<>();
    private final List<Tensor> mappings = new ArrayList<>();
    private long bytesWritten;
    private int tensorsWritten;
    private int tensorsReused;
    private boolean dirty;

    private OffloadStore(Path dir, ObjectNode source, Map<String, JsonNode> reusable, SpaceProbe probe) {
        this.dir = dir;
        this.probe = probe;
        this.source = source;
        this.folder = new OffloadFolder(dir);
        this.reusable = reusable;
    }

    /**
     * The description of a checkpoint for a fingerprint: each file's absolute path, size and modification time,
     * and the requested dtype ({@code null} = tensors keep their own).
     */
    public static ObjectNode describeSource(List<Path> files, DType dtype) {
        ObjectNode s = JSON.createObjectNode();
        s.put("dtype", dtype == null ? "as-stored" : dtype.torchName());
        ArrayNode list = s.putArray("files");
        for (Path f : files) {
            ObjectNode n = list.addObject();
            Path abs = f.toAbsolutePath().normalize();
            n.put("path", abs.toString());
            try {
                n.put("size", Files.size(abs));
                n.put("mtime_ms", Files.getLastModifiedTime(abs).toMillis());
            } catch (IOException e) {
                throw new UncheckedIOException("Cannot read the size of checkpoint file " + abs, e);
            }
        }
        return s;
    }

    /** A source that never matches a folder on disk: weights that only exist in memory. */
    public static ObjectNode inMemorySource(DType dtype) {
        ObjectNode s = JSON.createObjectNode();
        s.put("dtype", dtype == null ? "as-stored" : dtype.torchName());
        s.put("in_memory", System.nanoTime() + "-" + System.identityHashCode(s));
        return s;
    }

    /**
     * Opens {@code dir} for weights described by {@code source}: validates what is there and, when it was made
     * from something else (or its writing never finished), clears it.
     *
     * @throws IllegalArgumentException when {@code dir} is a file, or holds files bigmodel does not write there
     * @throws UncheckedIOException when the folder cannot be read, cleared or created (naming it)
     */
    public static OffloadStore open(Path dir, ObjectNode described) {
        return open(dir, described, FILE_STORE);
    }

    /** {@link #open(Path, ObjectNode)} with the free space read through {@code probe}. */
    public static OffloadStore open(Path dir, ObjectNode described, SpaceProbe probe) {
        Objects.requireNonNull(dir, "offload folder");
        Objects.requireNonNull(probe, "space probe");
        ObjectNode source;
        try {
            // Through text and back, so numbers compare as the parsed fingerprint's do (int vs long nodes).
            source = (ObjectNode) JSON.readTree(described.toString());
        } catch (IOException e) {
            throw new IllegalStateException("Cannot normalise the offload fingerprint", e);
        }
        if (Files.exists(dir) && !Files.isDirectory(dir)) {
            throw new IllegalArgumentException("Offload folder " + dir + " exists and is not a directory");
        }
        try {
            Files.createDirectories(dir);
        } catch (IOException e) {
            throw new UncheckedIOException("Cannot create offload folder " + dir + " (" + e
                    + "): give a writable folder", e);
        }
        List<Path> foreign = new ArrayList<>();
        boolean hasContent = false;
        try (DirectoryStream<Path> files = Files.newDirectoryStream(dir)) {
            for (Path f : files) {
                String n = f.getFileName().toString();
                if (!ours(n) || Files.isDirectory(f)) {
                    foreign.add(f.getFileName());
                } else if (!n.equals(FINGERPRINT)) {
                    hasContent = true;
                }
            }
        } catch (IOException e) {
            throw new UncheckedIOException("Cannot list offload folder " + dir, e);
        }
        if (!foreign.isEmpty()) {
            throw new IllegalArgumentException("Offload folder " + dir + " holds files bigmodel does not write there "
                    + foreign.subList(0, Math.min(5, foreign.size())) + (foreign.size() > 5 ? " ..." : "")
                    + ": use an empty folder or one bigmodel offloaded to before");
        }
        Map<String, JsonNode> reusable = new LinkedHashMap<>();
        Path fp = dir.resolve(FINGERPRINT);
        String verdict;
        if (Files.isRegularFile(fp)) {
            JsonNode old = readFingerprint(fp);
            if (old == null) {
                verdict = "its fingerprint is unreadable";
            } else if (!FORMAT.equals(old.path("format").asText()) || !source.equals(old.get("source"))) {
                verdict = "it was made from " + old.get("source") + ", not " + source;
            } else {
                verdict = null;
                for (Iterator<Map.Entry<String, JsonNode>> it = old.path("tensors").fields(); it.hasNext(); ) {
                    Map.Entry<String, JsonNode> e = it.next();
                    reusable.put(e.getKey(), e.getValue());
                }
            }
        } else {
            verdict = hasContent ? "it has no fingerprint (an interrupted or foreign write)" : null;
        }
        if (verdict != null) {
            LOG.warn("Offload folder {} cannot be reused: {}. Rewriting it.", dir, verdict);
            clear(dir);
        } else if (!reusable.isEmpty()) {
            LOG.info("Offload folder {} matches the checkpoint: reusing what it holds", dir);
        }
        return new OffloadStore(dir, source, reusable, probe);
    }

    /** Room kept free besides the tensors: the index, the fingerprint and file-system overhead. */
    public static long margin(long bytes) {
        return bytes / 100 + (64 << 10);
    }

    /**
     * Checks up front that the disk has room for the tensors of {@code planned} (name to bytes) that this folder
     * does not already hold, so that a load fails before writing anything rather than at the last tensor.
     *
     * @throws OffloadSpaceException when it has not
     */
    public void requireRoom(Map<String, Long> planned) {
        long toWrite = 0;
        for (Map.Entry<String, Long> e : planned.entrySet()) {
            JsonNode old = reusable.get(e.getKey());
            Path dat = dir.resolve(e.getKey() + ".dat");
            try {
                if (old != null && old.path("bytes").asLong(-1) == e.getValue() && Files.isRegularFile(dat)
                        && Files.size(dat) == e.getValue()) {
                    continue;
                }
            } catch (IOException ex) {
                LOG.debug("Cannot stat {}: {}", dat, ex.toString());
            }
            toWrite += e.getValue();
        }
        checkRoom(toWrite);
    }

    /** Fails with {@link OffloadSpaceException} when fewer than {@code bytes} plus a margin are usable. */
    private void checkRoom(long bytes) {
        if (bytes <= 0) {
            return;
        }
        long available;
        try {
            available = probe.usableBytes(dir);
        } catch (IOException | RuntimeException e) {
            // Unknown free space: the write itself reports a full disk.
            LOG.debug("Cannot read the free space of {}: {}", dir, e.toString());
            return;
        }
        long needed = bytes + margin(bytes);
        if (available < needed) {
            throw new OffloadSpaceException(dir, needed, available, null);
        }
    }

    /** Names bigmodel writes into an offload folder: tensors, the index, the fingerprint and temporary files. */
    private static boolean ours(String n) {
        return n.endsWith(".dat") || n.equals("index.json") || n.equals(FINGERPRINT)
                || (n.startsWith(".") && n.endsWith(".tmp"));
    }

    private static JsonNode readFingerprint(Path fp) {
        try {
            JsonNode n = JSON.readTree(Files.readString(fp, StandardCharsets.UTF_8));
            return n != null && n.isObject() ? n : null;
        } catch (IOException e) {
            return null;
        }
    }

    /** Deletes the fingerprint first, then every tensor, index and temporary file. */
    private static void clear(Path dir) {
        try {
            Files.deleteIfExists(dir.resolve(FINGERPRINT));
            try (DirectoryStream<Path> files = Files.newDirectoryStream(dir)) {
                for (Path f : files) {
                    if (ours(f.getFileName().toString()) && Files.isRegularFile(f)) {
                        Files.delete(f);
                    }
                }
            }
        } catch (IOException e) {
            throw new UncheckedIOException("Cannot clear offload folder " + dir + " (" + e
                    + "): it must be writable to be rewritten", e);
        }
    }

    public Path directory() {
        return dir;
    }

    /**
     * The weight {@code name} as a mapped view of its {@code .dat}: reused when the folder already holds it with this
     * dtype and shape, otherwise written from {@code values} (a CPU tensor in {@code dtype}, closed here).
     */
    public WeightSource source(String name, DType dtype, long[] shape, Supplier<Tensor> values) {
        long bytes = dtype.bytesFor(numel(shape));
        Path dat = dir.resolve(name + ".dat");
        if (!isReusable(name, dtype, shape, bytes, dat)) {
            if (!dirty) {
                // From here on the folder differs from what any fingerprint says: remove the old one first.
                deleteFingerprint();
                dirty = true;
            }
            checkRoom(bytes);
            try (Tensor t = values.get()) {
                long[] actual = Tensors.shape(t);
                if (DType.of(t.scalar_type()) != dtype || !Arrays.equals(actual, shape)) {
                    throw new IllegalStateException("Offloading " + name + ": expected " + dtype.torchName()
                            + Arrays.toString(shape) + ", got " + DType.of(t.scalar_type()).torchName()
                            + Arrays.toString(actual));
                }
                bytesWritten += folder.writeTensor(name, t);
            }
            tensorsWritten++;
        } else {
            folder.record(name, dtype, shape);
            tensorsReused++;
        }
        ObjectNode entry = JSON.createObjectNode();
        entry.put("dtype", dtype.torchName());
        ArrayNode dims = entry.putArray("shape");
        for (long d : shape) {
            dims.add(d);
        }
        entry.put("bytes", bytes);
        tensors.put(name, entry);
        Tensor mapped = map(dat, dtype, shape, bytes);
        mappings.add(mapped);
        return new MappedSource(mapped, bytes);
    }

    private boolean isReusable(String name, DType dtype, long[] shape, long bytes, Path dat) {
        JsonNode old = reusable.get(name);
        if (old == null) {
            return false;
        }
        List<Long> dims = new ArrayList<>();
        old.path("shape").forEach(d -> dims.add(d.asLong()));
        boolean same = dtype.torchName().equals(old.path("dtype").asText())
                && Arrays.equals(shape, dims.stream().mapToLong(Long::longValue).toArray())
                && old.path("bytes").asLong(-1) == bytes;
        try {
            if (same && Files.isRegularFile(dat) && Files.size(dat) == bytes) {
                return true;
            }
        } catch (IOException e) {
            LOG.debug("Cannot stat {}: {}", dat, e.toString());
        }
        LOG.warn("Offloaded tensor {} in {} does not match its fingerprint entry: rewriting it", name, dir);
        return false;
    }

    private void deleteFingerprint() {
        try {
            Files.deleteIfExists(dir.resolve(FINGERPRINT));
        } catch (IOException e) {
            throw new UncheckedIOException("Cannot update offload folder " + dir + " (" + e
                    + "): it must be writable", e);
        }
    }

    private static Tensor map(Path dat, DType dtype, long[] shape, long bytes) {
        NativeRuntime.init();
        if (bytes == 0) {
            return Tensors.empty(dtype, io.github.bigmodel.core.Device.CPU, shape);
        }
        try {
            long size = Files.size(dat);
            if (size != bytes) {
                // Checked before any native view: a short file mapped as a longer tensor would fault when read.
                throw new IllegalStateException("Offloaded tensor file " + dat + " has " + size + " bytes, expected "
                        + bytes);
            }
        } catch (IOException e) {
            throw new UncheckedIOException("Cannot read offloaded tensor file " + dat, e);
        }
        try (Tensor raw = torch.from_file(dat.toString(), new BoolOptional(false), new LongOptional(bytes),
                new TensorOptions(ScalarType.Byte)); Tensor typed = raw.view(dtype.scalarType())) {
            return typed.view(shape);
        }
    }

    private static long numel(long[] shape) {
        long n = 1;
        for (long d : shape) {
            n = Math.multiplyExact(n, d);
        }
        return n;
    }

    /**
     * Makes the folder's state durable and visible: {@code index.json} (accelerate's format) and then, last, the
     * fingerprint. Does nothing when every tensor was reused.
     */
    public void commit() {
        if (!dirty) {
            return;
        }
        folder.saveIndex();
        ObjectNode fp = JSON.createObjectNode();
        fp.put("format", FORMAT);
        fp.set("source", source);
        ObjectNode all = fp.putObject("tensors");
        reusable.forEach((k, v) -> {
            if (!tensors.containsKey(k) && v.isObject()) {
                all.set(k, v);
            }
        });
        tensors.forEach(all::set);
        try {
            OffloadFolder.writeAtomically(dir.resolve(FINGERPRINT), ByteBuffer.wrap(
                    JSON.writerWithDefaultPrettyPrinter().writeValueAsBytes(fp)), null);
        } catch (IOException e) {
            throw new UncheckedIOException("Cannot write the fingerprint of offload folder " + dir, e);
        }
        dirty = false;
        LOG.info("Offload folder {}: wrote {} tensors ({} bytes), reused {}", dir, tensorsWritten, bytesWritten,
                tensorsReused);
    }

    public long bytesWritten() {
        return bytesWritten;
    }

    public int tensorsWritten() {
        return tensorsWritten;
    }

    public int tensorsReused() {
        return tensorsReused;
    }

    /** Releases this store's mappings (views already handed out keep theirs alive). */
    @Override
    public void close() {
        mappings.forEach(Tensor::close);
        mappings.clear();
    }

    /** A weight held as a mapped view of a file: each read is an alias of the view; reads fault pages in. */
    public static final class MappedSource implements WeightSource {
        private final Tensor view;
        private final long bytes;

        MappedSource(Tensor view, long bytes) {
            this.view = view;
            this.bytes = bytes;
        }

        @Override
        public Tensor read() {
            return view.alias();
        }

        @Override
        public long byteLength() {
            return bytes;
        }

        @Override
        public boolean onDisk() {
            return true;
        }
    }
}
