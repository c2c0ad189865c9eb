package io.github.bigmodel.dispatch;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.HookHandle;
import io.github.bigmodel.core.Module;
import io.github.bigmodel.core.ModuleList;
import io.github.bigmodel.core.Parameter;
import io.github.bigmodel.core.SettingException;
import io.github.bigmodel.core.SettingMessage;
import io.github.bigmodel.core.Tensors;
import io.github.bigmodel.core.quant.Precision;
import io.github.bigmodel.core.quant.QuantizedLinear;
import io.github.bigmodel.core.quant.QuantizedWeight;
import io.github.bigmodel.core.quant.WeightConversion;
import io.github.bigmodel.safetensors.Checkpoint;
import io.github.bigmodel.safetensors.TensorInfo;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.function.Supplier;
import java.util.stream.Collectors;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import io.github.bigmodel.dispatch.hooks.AlignDevicesHook;
import io.github.bigmodel.dispatch.plan.DeviceInventory;
import io.github.bigmodel.dispatch.plan.DeviceMap;
import io.github.bigmodel.dispatch.plan.DeviceMapException;
import io.github.bigmodel.dispatch.plan.DevicePlan;
import io.github.bigmodel.dispatch.hooks.OffloadStore;
import io.github.bigmodel.dispatch.hooks.OffloadedWeights;
import io.github.bigmodel.dispatch.plan.PlanOptions;
import io.github.bigmodel.dispatch.hooks.Prefetcher;
import io.github.bigmodel.dispatch.hooks.WeightSource;

/**
 * The placement engine behind {@link BigModel}: checks a map against a model, decides per parameter where its values
 * go and where its module executes, places the values one tensor at a time, and attaches the hooks.
 */
// PointerScope blocks are used for what they release on close.
@SuppressWarnings("try")
final class Dispatcher {

    private static final Logger LOG = LoggerFactory.getLogger(Dispatcher.class);

    private Dispatcher() {
    }

    /** Where a module placed on {@code placed} computes, given the main device ({@code remote}: another stage). */
    static Device executionDevice(Device placed, Device main) {
        return placed.isCuda() || placed.isRemote() ? placed : main;
    }

    /** Whether weights placed on {@code placed} are offloaded (brought in per forward) under this main device. */
    static boolean offloaded(Device placed, Device main) {
        return placed.isDisk() || (placed.isCpu() && !main.isCpu());
    }

    /** accelerate's main device: the override, else the first GPU in map order, else the CPU. */
    static Device mainDevice(DeviceMap map, Device override) {
        if (override != null) {
            return override;
        }
        for (Device d : map.asMap().values()) {
            if (d.isCuda()) {
                return d;
            }
        }
        return Device.CPU;
    }

    /**
     * Checks {@code map} against {@code model} and this machine: entries must name a module or tensor, GPUs must
     * exist, every state-dict tensor must be covered.
     *
     * @throws DeviceMapException naming the unknown entries, the missing GPUs or the uncovered parameters
     */
    static void validate(Module model, DeviceMap map, Device main, DeviceInventory inventory) {
        if (!map.hosts().isEmpty()) {
            throw new DeviceMapException("ValueError", "The device map names hosts " + map.hosts() + ": a process"
                    + " loads one host's part, map.forHost(name), where the other hosts' modules are remote");
        }
        List<String> unknown = map.asMap().keySet().stream()
                .filter(k -> model.findModule(k) == null && model.findTensor(k) == null)
                .collect(Collectors.toList());
        if (!unknown.isEmpty()) {
            List<String> top = new ArrayList<>(model.children().keySet());
            throw new DeviceMapException("ValueError", "The device map names modules that do not exist in "
                    + model.className() + ": " + DeviceMap.pythonList(unknown) + " (top-level modules: "
                    + DeviceMap.pythonList(top) + ")");
        }
        int gpus = inventory.gpuCount();
        Set<Device> missing = new LinkedHashSet<>();
        for (Device d : map.asMap().values()) {
            if (d.isCuda() && (d.index() < 0 || d.index() >= gpus)) {
                missing.add(d);
            }
        }
        if (main.isCuda() && main.index() >= gpus) {
            missing.add(main);
        }
        if (!missing.isEmpty()) {
            throw new DeviceMapException("ValueError", "The device map uses " + missing + " but this machine has "
                    + gpus + " usable GPU" + (gpus == 1 ? "" : "s") + (gpus == 0 ? "" : " (cuda:0..cuda:" + (gpus - 1)
                    + ")"));
        }
        map.checkDeviceMap(model);
    }

    /** One distinct parameter and the decisions about it. */
    static final class Placement {
        final String name;
        final Parameter parameter;
        final String entry;
        final Device placed;
        final Device execution;
        final boolean offloaded;
        String checkpointName;
        TensorInfo info;
        DType target;
        boolean inPlace;
        /** The quantized layer this tensor is the weight or weight_scale of, or null. */
        QuantizedLinear quantized;
        /** For a quantized weight: its weight_scale's placement. */
        Placement scale;
        /** For a quantized weight: the checkpoint stores it as integers (a quantized checkpoint). */
        boolean storedQuantized;
        /** The quantizable linear layer this tensor is the weight of, whatever its precision, or null. */
        QuantizedLinear linear;
        /** A float-planned linear weight stored as int8/int4 codes: the checkpoint name of its scales. */
        String storedScaleName;

        Placement(String name, Parameter parameter, String entry, Device placed, Device main) {
            this.name = name;
            this.parameter = parameter;
            this.entry = entry;
            this.placed = placed;
            this.execution = executionDevice(placed, main);
            this.offloaded = Dispatcher.offloaded(placed, main);
        }
    }

    /**
     * Sets, on meta, the precision of every {@link QuantizedLinear} with {@link WeightConversion#layerPrecision}:
     * the precision of the device its module executes on ({@link DispatchOptions#precisionOf}), else the precision
     * its checkpoint stores it in ({@code stored}, from {@link StoredPrecisions#of}); int8/int4 layers get
     * {@code weight_scale} in the weights' float dtype. A layer that ends up floating point keeps its declared dtype.
     */
    static void planPrecisions(Module model, DeviceMap map, Device main, DispatchOptions options,
            Map<String, Precision> stored) {
        for (Map.Entry<String, Module> e : model.namedModules().entrySet()) {
            if (!(e.getValue() instanceof QuantizedLinear)) {
                continue;
            }
            QuantizedLinear linear = (QuantizedLinear) e.getValue();
            String weightName = e.getKey().isEmpty() ? "weight" : e.getKey() + ".weight";
            Device exec = executionDevice(map.get(closestEntry(map, weightName)), main);
            if (exec.isRemote()) {
                continue; // another stage loads it
            }
            DType scaleDtype = StoredPrecisions.scaleDtype(linear, options.plan().floatDtype());
            Precision p = WeightConversion.layerPrecision(options.plan().precisionOf(exec), stored.get(e.getKey()),
                    scaleDtype);
            if (p.isQuantized() == linear.isQuantized() && (!p.isQuantized() || p == linear.precision())) {
                continue; // as planned already (a float layer keeps its declared dtype)
            }
            if (linear.weight().isMaterialized()) {
                throw new IllegalArgumentException("Precisions apply while loading: " + weightName
                        + " already holds values");
            }
            linear.planPrecision(p.isQuantized() ? p : Precision.of(scaleDtype), scaleDtype);
        }
    }

    /**
     * Every distinct parameter and buffer of the state dict (tied ones once, under their first name) that this
     * process holds: a {@code remote} tensor has none and stays on meta, unless a tied name of it is held here (a
     * pipeline's last stage keeps its own copy of an output layer tied to the first stage's embedding), when it is
     * placed under that name.
     */
    static List<Placement> placements(Module model, DeviceMap map, Device main) {
        Map<Parameter, Placement> byParam = new IdentityHashMap<>();
        List<Placement> out = new ArrayList<>();
        Map<Parameter, String> heldHere = new IdentityHashMap<>();
        model.stateDict().forEach((n, p) -> {
            Device d = map.deviceOf(n);
            if (d == null || !d.isRemote()) {
                heldHere.putIfAbsent(p, n);
            }
        });
        for (Map.Entry<String, Parameter> e : model.stateDict().entrySet()) {
            if (byParam.containsKey(e.getValue()) || !e.getKey().equals(heldHere.get(e.getValue()))) {
                continue; // placed already, placed under a later name held here, or remote
            }
            Module owner = model.findModule(parent(e.getKey()));
            String entry = scaleFollowsWeight(map, e.getKey(), owner, e.getValue());
            if (entry == null) {
                entry = closestEntry(map, e.getKey());
            }
            Placement p = new Placement(e.getKey(), e.getValue(), entry, map.get(entry), main);
            if (owner instanceof QuantizedLinear && e.getValue() == ((QuantizedLinear) owner).weight()) {
                p.linear = (QuantizedLinear) owner;
            }
            if (owner instanceof QuantizedLinear && ((QuantizedLinear) owner).isQuantized()
                    && (e.getValue() == ((QuantizedLinear) owner).weight()
                    || e.getValue() == ((QuantizedLinear) owner).weightScale())) {
                p.quantized = (QuantizedLinear) owner; // its bias stays an ordinary float tensor
            }
            byParam.put(e.getValue(), p);
            out.add(p);
        }
        for (Placement p : out) {
            if (p.quantized != null && p.parameter == p.quantized.weight()) {
                p.scale = byParam.get(p.quantized.weightScale());
            }
        }
        return out;
    }

    /** Which layer holds which precision, short: the precisions used and a SHA-256 of the full list. */
    private static String precisionsDigest(List<Placement> placements) {
        String list = placements.stream().filter(Dispatcher::isQuantizedWeight)
                .map(p -> p.name + "=" + p.quantized.precision()).collect(Collectors.joining(","));
        String used = placements.stream().filter(Dispatcher::isQuantizedWeight)
                .map(p -> p.quantized.precision().name().toLowerCase(Locale.ROOT)).distinct()
                .collect(Collectors.joining("+"));
        try {
            byte[] digest = java.security.MessageDigest.getInstance("SHA-256")
                    .digest(list.getBytes(java.nio.charset.StandardCharsets.UTF_8));
            return used + " sha256:" + java.util.HexFormat.of().formatHex(digest);
        } catch (java.security.NoSuchAlgorithmException e) {
            throw new IllegalStateException("SHA-256 is missing from this JVM", e);
        }
    }

    private static boolean isQuantizedWeight(Placement p) {
        return p.scale != null;
    }

    private static boolean isQuantizedScale(Placement p) {
        return p.quantized != null && p.parameter == p.quantized.weightScale();
    }

    /**
     * The entry of a quantized layer's weight, for its {@code weight_scale} when no entry names the scale: the scale
     * exists only once a precision is planned, so a map written against the float model (a tensor entry for
     * {@code ...dense.weight}) cannot name it, and it belongs with its weight. Null for any other tensor.
     */
    private static String scaleFollowsWeight(DeviceMap map, String name, Module owner, Parameter tensor) {
        if (!(owner instanceof QuantizedLinear) || tensor != ((QuantizedLinear) owner).weightScale()
                || map.get(name) != null) {
            return null;
        }
        String weight = parent(name).isEmpty() ? "weight" : parent(name) + ".weight";
        return closestEntry(map, weight);
    }

    private static String closestEntry(DeviceMap map, String name) {
        String n = name;
        while (true) {
            if (map.get(n) != null) {
                return n;
            }
            if (n.isEmpty()) {
                throw new IllegalStateException("No device map entry covers " + name);
            }
            int dot = n.lastIndexOf('.');
            n = dot < 0 ? "" : n.substring(0, dot);
        }
    }

    /**
     * The hook targets of one module entry: the modules under {@code entry} whose forward the model runs, so that a
     * hook on them fires. A model may run a container's children directly and never call the container's own
     * forward (ChatGLM runs {@code transformer.encoder}'s blocks one by one), so a hook on the entry itself could
     * never bring its weights in. Instead, going down from the entry: a leaf, or an element of a {@link ModuleList}
     * (a block, run through its own forward), is one target with everything below it; any other module is a target
     * for the tensors it holds directly (a leaf layer's forward always runs), and its children are looked at in
     * turn. Children that are entries of their own are left to those entries. An entry holding no tensor at all is
     * its own target (it only aligns inputs).
     *
     * <p>So {@code {"transformer": "disk"}} hooks the embedding, each block, the final norm and the output layer,
     * and at most one block's weights are in memory at a time, as with a map that lists the blocks.
     */
    static List<String> hookUnits(Module model, DeviceMap map, String entry) {
        Module m = model.module(entry);
        List<String> out = new ArrayList<>();
        Module parent = entry.isEmpty() ? null : model.findModule(parent(entry));
        collectUnits(m, entry, parent instanceof ModuleList, map, out);
        if (out.isEmpty()) {
            out.add(entry);
        }
        return out;
    }

    private static void collectUnits(Module m, String path, boolean listElement, DeviceMap map, List<String> out) {
        if (listElement || m.children().isEmpty()) {
            out.add(path);
            return;
        }
        if (!m.parameters().isEmpty() || !m.buffers().isEmpty()) {
            out.add(path);
        }
        for (Map.Entry<String, Module> c : m.children().entrySet()) {
            String child = path.isEmpty() ? c.getKey() : path + "." + c.getKey();
            if (map.get(child) == null) {
                collectUnits(c.getValue(), child, m instanceof ModuleList, map, out);
            }
        }
    }

    /**
     * The hook target that brings in a tensor slot of the module at {@code ownerPath}: the deepest target at or
     * above it. Every slot of a covered model has one, since the targets of an entry cover everything below it.
     */
    static String targetOf(Set<String> targets, String ownerPath) {
        String n = ownerPath;
        while (true) {
            if (targets.contains(n)) {
                return n;
            }
            if (n.isEmpty()) {
                throw new IllegalStateException("No hook target covers module '" + ownerPath + "'");
            }
            n = parent(n);
        }
    }

    private static String parent(String name) {
        int dot = name.lastIndexOf('.');
        return dot < 0 ? "" : name.substring(0, dot);
    }

    /**
     * Every hook target (see {@link #hookUnits}) and the device it executes on, in module order. A tensor entry
     * hooks its owning module; when entries that hook one module disagree, a GPU among them decides.
     */
    static Map<String, Device> hookTargets(Module model, DeviceMap map, Device main) {
        Map<String, Device> out = new LinkedHashMap<>();
        for (Map.Entry<String, Device> e : map.asMap().entrySet()) {
            if (e.getValue().isRemote()) {
                continue; // another stage runs it: no hook here
            }
            Device exec = executionDevice(e.getValue(), main);
            if (model.findModule(e.getKey()) == null) {
                String owner = parent(e.getKey());
                LOG.debug("Device map entry '{}' names a tensor: its hook is attached to the owning module '{}'",
                        e.getKey(), owner);
                out.merge(owner, exec, (a, b) -> a.isCuda() ? a : b);
            } else {
                for (String unit : hookUnits(model, map, e.getKey())) {
                    out.merge(unit, exec, (a, b) -> a.isCuda() ? a : b);
                }
            }
        }
        Map<String, Integer> pos = DeviceMap.positions(model);
        List<String> keys = new ArrayList<>(out.keySet());
        keys.sort((a, b) -> Integer.compare(pos.getOrDefault(a, Integer.MAX_VALUE),
                pos.getOrDefault(b, Integer.MAX_VALUE)));
        Map<String, Device> ordered = new LinkedHashMap<>();
        keys.forEach(k -> ordered.put(k, out.get(k)));
        return ordered;
    }

    /** A copy of {@code source} on {@code device} in {@code dtype} (always a new tensor), by the one road. */
    static Tensor copyTo(Tensor source, Device device, DType dtype) {
        Tensor value;
        try (PointerScope scope = new PointerScope()) {
            value = WeightConversion.convert(source, null, WeightConversion.Target.tensor(
                    dtype.isFloatingPoint() ? dtype : null, device)).tensor();
            value.retainReference(); // the caller owns it, whatever scope it runs in
        }
        return value;
    }

    /** What placing the weights produced: offload sources per parameter and what must be released at the end. */
    static final class Placed {
        final Map<Parameter, WeightSource> sources = new IdentityHashMap<>();
        final List<AutoCloseable> resources = new ArrayList<>();
        OffloadStore store;
        int inPlace;
    }

    /**
     * Loads every tensor of {@code model} from {@code checkpoint}, one at a time, onto its placement.
     *
     * @throws IllegalArgumentException naming missing tensors, shape mismatches, or a missing offload folder
     */
    static Placed loadFromCheckpoint(Module model, Checkpoint checkpoint, List<Placement> placements,
            DispatchOptions options) {
        Set<String> names = checkpoint.names();
        Map<Parameter, List<String>> aliases = new IdentityHashMap<>();
        model.stateDict().forEach((n, p) -> aliases.computeIfAbsent(p, k -> new ArrayList<>()).add(n));
        List<String> missing = new ArrayList<>();
        Map<String, Placement> byCheckpointName = new LinkedHashMap<>();
        for (Placement p : placements) {
            for (String alias : aliases.get(p.parameter)) {
                if (names.contains(alias)) {
                    p.checkpointName = alias;
                    break;
                }
            }
            if (p.checkpointName == null) {
                if (!isQuantizedScale(p)) {
                    missing.add(p.name); // a scale is made while quantizing a float checkpoint's weight
                }
                continue;
            }
            if (!isQuantizedScale(p)) {
                byCheckpointName.put(p.checkpointName, p);
            }
        }
        if (!missing.isEmpty()) {
            throw new IllegalArgumentException("The checkpoint " + checkpoint.source() + " lacks " + missing.size()
                    + " tensor(s) of " + model.className() + ": " + DeviceMap.pythonList(missing));
        }
        List<String> needFolder = new ArrayList<>();
        List<String> badShapes = new ArrayList<>();
        for (Placement p : placements) {
            if (p.quantized != null) {
                checkQuantized(p, checkpoint, badShapes, options);
                continue;
            }
            p.info = checkpoint.info(p.checkpointName);
            p.target = WeightConversion.dtypeFor(p.info.dtype(), options.plan().floatDtype(), p.parameter.dtype());
            if (p.linear != null && !p.info.dtype().isFloatingPoint()) {
                // A float-planned linear weight stored as codes (its device asks for a float precision):
                // dequantized from the codes and the weight_scale beside them.
                String scaleName = parent(p.checkpointName) + "." + QuantizedLinear.SCALE_NAME;
                try {
                    WeightConversion.storedPrecision(p.checkpointName, p.info.dtype(), p.info.shape(),
                            names.contains(scaleName), p.linear.outFeatures(), p.linear.inFeatures());
                    p.storedScaleName = scaleName;
                    byCheckpointName.putIfAbsent(scaleName, null);
                    p.target = WeightConversion.dtypeFor(DType.FLOAT32, options.plan().floatDtype(), p.parameter.dtype());
                } catch (IllegalArgumentException e) {
                    badShapes.add(e.getMessage());
                    continue;
                }
            } else if (!Arrays.equals(p.info.shape(), p.parameter.shape())) {
                badShapes.add(p.checkpointName + ": checkpoint " + Arrays.toString(p.info.shape()) + ", model "
                        + Arrays.toString(p.parameter.shape()));
            }
            boolean safetensors = isSafetensors(p.info);
            p.inPlace = p.placed.isDisk() && safetensors && p.target == p.info.dtype();
            if (p.placed.isDisk() && !p.inPlace) {
                needFolder.add(p.name);
            }
        }
        if (!badShapes.isEmpty()) {
            throw new IllegalArgumentException("Checkpoint tensors do not fit " + model.className() + ": "
                    + String.join("; ", badShapes));
        }
        for (Placement p : placements) {
            if (isQuantizedWeight(p) && p.placed.isDisk()) {
                p.inPlace = quantizedInPlace(p);
                p.scale.inPlace = p.inPlace;
                if (!p.inPlace) {
                    needFolder.add(p.name);
                    needFolder.add(p.scale.name);
                }
            }
        }
        if (!needFolder.isEmpty() && options.offloadFolder() == null) {
            throw new SettingException(new SettingMessage("offload_folder", "DispatchOptions.offloadFolder",
                    needFolder.size() + " weight(s) placed on disk must be rewritten (a dtype conversion or a"
                    + " non-safetensors checkpoint), so an offload folder is needed: set ",
                    ". First: " + needFolder.get(0)));
        }
        Set<String> unexpected = new LinkedHashSet<>(names);
        unexpected.removeAll(byCheckpointName.keySet());
        for (List<String> group : aliases.values()) {
            unexpected.removeAll(group);
        }
        if (!unexpected.isEmpty()) {
            LOG.warn("The checkpoint holds {} tensor(s) the model does not use, skipped: {}", unexpected.size(),
                    unexpected.stream().limit(10).collect(Collectors.toList()));
        }

        Placed out = new Placed();
        try {
            if (!needFolder.isEmpty()) {
                List<Path> files = new ArrayList<>();
                files.add(checkpoint.source());
                for (Path s : checkpoint.shards()) {
                    if (!files.contains(s)) {
                        files.add(s);
                    }
                }
                com.fasterxml.jackson.databind.node.ObjectNode described = OffloadStore.describeSource(files,
                        options.plan().floatDtype());
                if (placements.stream().anyMatch(p -> p.quantized != null)) {
                    // Codes and scales depend on the precision: a folder written for int8 is never reused for int4.
                    described.put("precisions", precisionsDigest(placements));
                }
                out.store = OffloadStore.open(options.offloadFolder(), described);
                out.resources.add(out.store);
                // Fail before writing anything when the disk cannot take the converted tensors (int8/int4 layers
                // are checked tensor by tensor as they are written).
                Map<String, Long> planned = new LinkedHashMap<>();
                for (Placement p : placements) {
                    if (p.placed.isDisk() && !p.inPlace && p.quantized == null && p.target != null) {
                        planned.put(p.checkpointName, p.target.bytesFor(numel(p.info.shape())));
                    }
                }
                out.store.requireRoom(planned);
            }
            boolean keepsCheckpoint = false;
            int done = 0;
            // Checkpoint order: shards are read front to back, which disks and page caches like best.
            List<Placement> ordered = new ArrayList<>();
            for (TensorInfo t : checkpoint.tensors()) {
                Placement p = byCheckpointName.get(t.name());
                if (p != null) {
                    ordered.add(p);
                }
            }
            int total = placements.size();
            // CPU weights stay views of the mapped checkpoint only while nothing streams from disk beside them: a
            // map with disk entries pushes more bytes through the page cache every token than it holds, and the
            // kernel then evicts the CPU blocks' pages too (a 4 GiB budget of the 6B re-read 1.4 GiB (bf16) and
            // 2.4 GiB (int8) of its CPU blocks from disk per token). Copies keep the budget in memory.
            boolean mapCpu = options.offloadStateDict() && placements.stream().noneMatch(p -> p.placed.isDisk());
            for (Placement p : ordered) {
                keepsCheckpoint |= p.inPlace;
                if (isQuantizedWeight(p)) {
                    placeQuantized(p, checkpoint, out, mapCpu);
                } else {
                    placeFromCheckpoint(p, checkpoint, mapCpu, out);
                }
                done++;
                if (options.progress() != null) {
                    options.progress().placed(p.name, p.placed, done, total);
                }
                if (isQuantizedWeight(p)) {
                    done++;
                    if (options.progress() != null) {
                        options.progress().placed(p.scale.name, p.scale.placed, done, total);
                    }
                }
            }
            if (out.store != null) {
                out.store.commit();
            }
            if (keepsCheckpoint) {
                out.resources.add(0, checkpoint);
            }
            return out;
        } catch (RuntimeException | Error e) {
            release(model, out);
            throw e;
        }
    }

    private static void placeFromCheckpoint(Placement p, Checkpoint checkpoint, boolean mapCpu, Placed out) {
        String name = p.checkpointName;
        if (p.placed.isDisk()) {
            if (p.inPlace) {
                out.sources.put(p.parameter, WeightSource.lazy(() -> checkpoint.load(name), p.info.byteLength()));
                out.inPlace++;
            } else {
                out.sources.put(p.parameter, out.store.source(name, p.target, p.parameter.shape(),
                        () -> fromCheckpoint(p, checkpoint, Device.CPU, false)));
            }
            p.parameter.setPlannedDtype(p.target);
            p.parameter.markOffloaded();
            return;
        }
        // mapCpu: a CPU tensor that needs no conversion stays a view of the mapped checkpoint.
        Tensor value = fromCheckpoint(p, checkpoint, p.placed, p.placed.isCpu() && mapCpu);
        if (p.offloaded) {
            out.sources.put(p.parameter, WeightSource.of(value));
            out.resources.add(value);
            p.parameter.setPlannedDtype(p.target);
            p.parameter.markOffloaded();
        } else {
            p.parameter.set(value);
        }
    }

    /** A non-quantized tensor of the checkpoint as its parameter holds it, by the one road. */
    private static Tensor fromCheckpoint(Placement p, Checkpoint checkpoint, Device device, boolean share) {
        Tensor value;
        try (PointerScope scope = new PointerScope()) {
            Tensor view = checkpoint.load(p.checkpointName);
            Tensor scale = p.storedScaleName == null ? null : checkpoint.load(p.storedScaleName);
            WeightConversion.Target t = p.storedScaleName != null
                    ? WeightConversion.Target.linearWeight(Precision.of(p.target), p.target,
                            p.linear.outFeatures(), p.linear.inFeatures(), device)
                    : WeightConversion.Target.tensor(p.target.isFloatingPoint() ? p.target : null, device);
            value = WeightConversion.convert(view, scale, share ? t.sharingStorage() : t).tensor();
            value.retainReference(); // the caller owns it, whatever scope it runs in
        }
        return value;
    }

    /**
     * Checks a quantized layer's weight (float {@code [out, in]}, or integers {@code [out, in]} / {@code [out, in/2]}
     * beside a {@code weight_scale}) or scale, and sets its target dtype.
     */
    private static void checkQuantized(Placement p, Checkpoint checkpoint, List<String> badShapes,
            DispatchOptions options) {
        QuantizedLinear q = p.quantized;
        DType floatType = q.weightScale().dtype();
        if (isQuantizedScale(p)) {
            p.target = floatType;
            if (p.checkpointName != null) {
                p.info = checkpoint.info(p.checkpointName);
                if (!Arrays.equals(p.info.shape(), new long[] {q.outFeatures()}) || !p.info.dtype().isFloatingPoint()) {
                    badShapes.add(p.checkpointName + ": checkpoint " + p.info.dtype().torchName()
                            + Arrays.toString(p.info.shape()) + ", model a floating-point [" + q.outFeatures() + "]");
                }
            }
            return;
        }
        p.info = checkpoint.info(p.checkpointName);
        p.target = q.precision().dtype();
        try {
            p.storedQuantized = WeightConversion.storedPrecision(p.checkpointName, p.info.dtype(), p.info.shape(),
                    p.scale.checkpointName != null, q.outFeatures(), q.inFeatures()) != null;
        } catch (IllegalArgumentException e) {
            badShapes.add(e.getMessage());
        }
    }

    /**
     * Whether a quantized layer's weight placed on disk is read in place from the checkpoint for each forward, as a
     * half-precision weight needing no conversion is: the checkpoint (a folder written by {@code bigmodel convert})
     * stores int8 codes of the layer's precision and scales of its scale dtype, in safetensors files (mappable).
     * Then no offload folder is written and each token reads the stored codes.
     */
    private static boolean quantizedInPlace(Placement p) {
        Placement s = p.scale;
        if (!p.storedQuantized || s.info == null || p.info.dtype() != DType.INT8
                || s.info.dtype() != s.target || !isSafetensors(p.info) || !isSafetensors(s.info)) {
            return false;
        }
        QuantizedLinear q = p.quantized;
        long storedColumns = q.precision() == Precision.INT4 ? q.inFeatures() / 2 : q.inFeatures();
        return Arrays.equals(p.info.shape(), new long[] {q.outFeatures(), storedColumns});
    }

    private static boolean isSafetensors(TensorInfo info) {
        return info.file() != null
                && info.file().getFileName().toString().toLowerCase(Locale.ROOT).endsWith(".safetensors");
    }

    /**
     * The quantized form (CPU tensors, THUDM's layout, scales in the layer's float type) of a quantized layer's
     * weight, by the one road ({@link WeightConversion#convert}): quantized from a float checkpoint tensor, taken
     * as stored from a quantized checkpoint of the same precision, or re-quantized from other codes.
     */
    private static QuantizedWeight quantizedFromCheckpoint(Placement p, Checkpoint checkpoint, Device device,
            boolean share) {
        QuantizedLinear q = p.quantized;
        QuantizedWeight made;
        try (PointerScope scope = new PointerScope()) {
            Tensor src = checkpoint.load(p.checkpointName);
            Tensor scale = p.storedQuantized ? checkpoint.load(p.scale.checkpointName) : null;
            WeightConversion.Target target = WeightConversion.Target.linearWeight(q.precision(),
                    q.weightScale().dtype(), q.outFeatures(), q.inFeatures(), device);
            // Codes taken as stored stay views of the mapped checkpoint when sharing is allowed.
            made = WeightConversion.convert(src, scale, share ? target.sharingStorage() : target).quantized();
            // The caller owns the result, whatever scope it runs in (an offload store's writer may open one).
            made.packed().retainReference();
            made.scale().retainReference();
        }
        return made;
    }

    /**
     * Places a quantized layer's weight and scale. On a device: quantized, moved, put in the layer (CPU int4 in the
     * kernel's tiles). Offloaded: kept in THUDM's portable layout, in CPU memory or in the offload folder (int8
     * codes {@code [out, in]} or packed {@code [out, in/2]}, scales in the float type), which the hook converts to
     * the layout of the execution device for each forward. For a reused offload folder nothing is quantized.
     */
    private static void placeQuantized(Placement p, Checkpoint checkpoint, Placed out, boolean mapCpu) {
        QuantizedLinear q = p.quantized;
        Placement s = p.scale;
        boolean share = p.placed.isCpu() && mapCpu;
        if (!p.offloaded) {
            q.setQuantized(quantizedFromCheckpoint(p, checkpoint, p.placed, share));
            return;
        }
        if (p.placed.isDisk() && p.inPlace) {
            out.sources.put(p.parameter, WeightSource.lazy(() -> checkpoint.load(p.checkpointName),
                    p.info.byteLength()));
            out.sources.put(s.parameter, WeightSource.lazy(() -> checkpoint.load(s.checkpointName),
                    s.info.byteLength()));
            out.inPlace += 2;
        } else if (p.placed.isDisk()) {
            QuantizedWeight[] memo = new QuantizedWeight[1];
            Supplier<QuantizedWeight> lazy = () -> {
                if (memo[0] == null) {
                    memo[0] = quantizedFromCheckpoint(p, checkpoint, Device.CPU, false);
                }
                return memo[0];
            };
            long storedColumns = q.precision() == Precision.INT4 ? q.inFeatures() / 2 : q.inFeatures();
            try {
                out.sources.put(p.parameter, out.store.source(p.name, DType.INT8,
                        new long[] {q.outFeatures(), storedColumns}, () -> lazy.get().packed().clone()));
                out.sources.put(s.parameter, out.store.source(s.name, s.target, new long[] {q.outFeatures()},
                        () -> lazy.get().scale().clone()));
            } finally {
                if (memo[0] != null) {
                    memo[0].close();
                }
            }
        } else {
            QuantizedWeight made = quantizedFromCheckpoint(p, checkpoint, Device.CPU, share);
            out.sources.put(p.parameter, WeightSource.of(made.packed()));
            out.sources.put(s.parameter, WeightSource.of(made.scale()));
            out.resources.add(made);
        }
        q.markOffloaded();
    }

    /**
     * Moves and offloads the already materialized weights of {@code model} per the placements.
     *
     * @throws IllegalArgumentException naming a parameter that holds no values, or a missing offload folder
     */
    static Placed placeMaterialized(Module model, List<Placement> placements, Path offloadFolder) {
        List<String> empty = placements.stream().filter(p -> !p.parameter.isMaterialized()).map(p -> p.name)
                .collect(Collectors.toList());
        if (!empty.isEmpty()) {
            throw new IllegalArgumentException("dispatchModel needs materialized weights, but " + empty.size()
                    + " tensor(s) hold none (on meta or offloaded): " + DeviceMap.pythonList(
                    empty.subList(0, Math.min(10, empty.size()))) + "; use loadCheckpointAndDispatch instead");
        }
        List<String> quantized = placements.stream().filter(p -> p.quantized != null).map(p -> p.name)
                .collect(Collectors.toList());
        if (!quantized.isEmpty()) {
            throw new IllegalArgumentException("dispatchModel cannot move or offload int8/int4 layers that are already"
                    + " loaded (" + quantized.get(0) + ", ...): load the checkpoint with loadCheckpointAndDispatch and"
                    + " DispatchOptions precisions instead");
        }
        boolean needFolder = placements.stream().anyMatch(p -> p.placed.isDisk());
        if (needFolder && offloadFolder == null) {
            throw new IllegalArgumentException("The device map puts weights on disk: an offload folder is needed");
        }
        Placed out = new Placed();
        try {
            if (needFolder) {
                // In-memory weights have no file identity to fingerprint: the folder is always rewritten.
                out.store = OffloadStore.open(offloadFolder, OffloadStore.inMemorySource(null));
                out.resources.add(out.store);
                Map<String, Long> planned = new LinkedHashMap<>();
                for (Placement p : placements) {
                    if (p.placed.isDisk()) {
                        planned.put(p.name, p.parameter.byteSize());
                    }
                }
                out.store.requireRoom(planned);
            }
            for (Placement p : placements) {
                Tensor current = p.parameter.data();
                DType dtype = p.parameter.dtype();
                p.target = dtype;
                if (p.placed.isDisk()) {
                    out.sources.put(p.parameter, out.store.source(p.name, dtype, p.parameter.shape(),
                            () -> copyTo(current, Device.CPU, dtype)));
                    p.parameter.markOffloaded();
                } else if (p.offloaded) {
                    Tensor kept = Tensors.deviceOf(current).isCpu() ? current.alias()
                            : copyTo(current, Device.CPU, dtype);
                    out.sources.put(p.parameter, WeightSource.of(kept));
                    out.resources.add(kept);
                    p.parameter.markOffloaded();
                } else if (!Tensors.deviceOf(current).equals(p.placed)) {
                    p.parameter.set(copyTo(current, p.placed, dtype));
                }
            }
            if (out.store != null) {
                out.store.commit();
            }
            return out;
        } catch (RuntimeException | Error e) {
            release(model, out);
            throw e;
        }
    }

    private static void release(Module model, Placed out) {
        model.toMeta();
        List<AutoCloseable> rs = new ArrayList<>(out.resources);
        Collections.reverse(rs);
        for (AutoCloseable r : rs) {
            try {
                r.close();
            } catch (Exception ex) {
                LOG.debug("release after a failed dispatch: {}", ex.toString());
            }
        }
    }

    /**
     * Attaches one {@link AlignDevicesHook} per hook target and, with prefetch, a {@link Prefetcher} over the
     * offloaded targets in module order. No hooks when everything sits on one device and nothing is offloaded.
     */
    static <M extends Module> DispatchedModel<M> attach(M model, DeviceMap map, Device main, DevicePlan plan,
            Placed placed, int prefetch) {
        Map<String, Device> targets = hookTargets(model, map, main);
        List<HookHandle> handles = new ArrayList<>();
        Prefetcher prefetcher = null;
        boolean severalDevices = new LinkedHashSet<>(targets.values()).size() > 1;
        if (!placed.sources.isEmpty() || severalDevices) {
            Map<String, OffloadedWeights> stages = offloadedStages(model, map, targets, placed);
            if (prefetch > 0 && !stages.isEmpty()) {
                prefetcher = new Prefetcher(new ArrayList<>(stages.values()), prefetch);
            }
            installHooks(model, targets, stages, prefetcher, handles, placed);
            LOG.info("Dispatched {}: {} hooks, {} offloaded modules, main device {}, prefetch {}", model.className(),
                    handles.size(), stages.size(), main, prefetcher == null ? 0 : prefetcher.depth());
        }
        // With hooks in place every module knows its execution device: the model may now derive its own state.
        model.onWeightsLoaded();
        OffloadStore store = placed.store;
        DispatchedModel.OffloadStats stats = new DispatchedModel.OffloadStats(
                store == null ? 0 : store.tensorsWritten(), store == null ? 0 : store.bytesWritten(),
                store == null ? 0 : store.tensorsReused(), placed.inPlace);
        return new DispatchedModel<>(model, map, main, plan, handles, prefetcher, placed.resources, stats);
    }

    /**
     * Step 1 of {@link #attach}: the offloaded weights each hook target brings in, in module order (the order the
     * prefetcher reads ahead in). Each offloaded slot belongs to the deepest hook target above the module holding
     * it; a tied tensor is placed once, under its first name, but every module holding it (an output layer tied to
     * the embedding) brings it in for its own forward.
     */
    private static Map<String, OffloadedWeights> offloadedStages(Module model, DeviceMap map,
            Map<String, Device> targets, Placed placed) {
        Map<String, Map<Parameter, WeightSource>> byTarget = new LinkedHashMap<>();
        for (Map.Entry<String, Module> m : model.namedModules().entrySet()) {
            Device at = map.deviceOf(m.getKey());
            if (at != null && at.isRemote()) {
                continue; // another stage runs it (it may hold a tensor tied to one placed here)
            }
            List<Parameter> held = new ArrayList<>(m.getValue().parameters().values());
            held.addAll(m.getValue().buffers().values());
            for (Parameter p : held) {
                WeightSource s = placed.sources.get(p);
                if (s != null) {
                    byTarget.computeIfAbsent(targetOf(targets.keySet(), m.getKey()),
                            k -> new LinkedHashMap<>()).putIfAbsent(p, s);
                }
            }
        }
        Map<String, OffloadedWeights> stages = new LinkedHashMap<>();
        for (String t : targets.keySet()) {
            Map<Parameter, WeightSource> srcs = byTarget.get(t);
            if (srcs == null) {
                continue;
            }
            // int8/int4 weights arrive in THUDM's portable layout and are laid out for the kernel of the layer.
            Map<Parameter, QuantizedLinear> owners = new IdentityHashMap<>();
            for (Module sub : model.module(t).namedModules().values()) {
                if (sub instanceof QuantizedLinear && ((QuantizedLinear) sub).isQuantized()
                        && srcs.containsKey(((QuantizedLinear) sub).weight())) {
                    owners.put(((QuantizedLinear) sub).weight(), (QuantizedLinear) sub);
                }
            }
            stages.put(t, new OffloadedWeights(t, targets.get(t), srcs, owners));
        }
        return stages;
    }

    /**
     * Step 2 of {@link #attach}: one {@link AlignDevicesHook} per target, in module order; on failure the hooks
     * already added, the prefetcher and the placed weights are released.
     */
    private static void installHooks(Module model, Map<String, Device> targets, Map<String, OffloadedWeights> stages,
            Prefetcher prefetcher, List<HookHandle> handles, Placed placed) {
        List<String> stageOrder = new ArrayList<>(stages.keySet());
        try {
            for (String t : targets.keySet()) {
                AlignDevicesHook hook = new AlignDevicesHook(targets.get(t), stages.get(t), prefetcher,
                        stageOrder.indexOf(t));
                handles.add(model.module(t).addForwardHook(hook));
            }
        } catch (RuntimeException | Error e) {
            handles.forEach(HookHandle::remove);
            if (prefetcher != null) {
                prefetcher.close();
            }
            release(model, placed);
            throw e;
        }
    }

    private static long numel(long[] shape) {
        long n = 1;
        for (long d : shape) {
            n = Math.multiplyExact(n, d);
        }
        return n;
    }
}
