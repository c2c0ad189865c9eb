package io.github.bigmodel.dispatch;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.HookHandle;
import io.github.bigmodel.core.Module;
import io.github.bigmodel.core.ModuleList;
import io.github.bigmodel.core.Parameter;
import io.github.bigmodel.core.Tensors;
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
import java.util.stream.Collectors;
import org.bytedeco.pytorch.MemoryFormatOptional;
import org.bytedeco.pytorch.Tensor;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The placement engine behind {@link BigModel}: checks a map against a model, decides per parameter where its values
 * go and where its module executes, places the values one tensor at a time, and attaches the hooks.
 */
final class Dispatcher {

    private static final Logger LOG = LoggerFactory.getLogger(Dispatcher.class);

    private Dispatcher() {
    }

    /** Where a module placed on {@code placed} computes, given the main device. */
    static Device executionDevice(Device placed, Device main) {
        return placed.isCuda() ? placed : main;
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
        String hookTarget;
        String checkpointName;
        TensorInfo info;
        DType target;
        boolean inPlace;

        Placement(String name, Parameter parameter, String entry, Device placed, Device main) {
            this.name = name;
            this.parameter = parameter;
            this.entry = entry;
            this.placed = placed;
            this.execution = executionDevice(placed, main);
            this.offloaded = Dispatcher.offloaded(placed, main);
        }
    }

    /** Every distinct parameter and buffer of the state dict (tied ones once, under their first name). */
    static List<Placement> placements(Module model, DeviceMap map, Device main) {
        Map<Parameter, Placement> byParam = new IdentityHashMap<>();
        List<Placement> out = new ArrayList<>();
        for (Map.Entry<String, Parameter> e : model.stateDict().entrySet()) {
            if (byParam.containsKey(e.getValue())) {
                continue;
            }
            String entry = closestEntry(map, e.getKey());
            Placement p = new Placement(e.getKey(), e.getValue(), entry, map.get(entry), main);
            p.hookTarget = hookTarget(model, entry, e.getKey());
            byParam.put(e.getValue(), p);
            out.add(p);
        }
        return out;
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
     * The module whose hook brings in a tensor placed by {@code entry}: the entry module itself; for a tensor entry
     * its owning module; for a list module (which has no forward of its own) the child holding the tensor; for the
     * whole model ({@code ""}) the module that owns the tensor directly.
     */
    static String hookTarget(Module model, String entry, String tensorName) {
        Module m = model.findModule(entry);
        if (m == null) {
            return parent(entry);
        }
        if (entry.isEmpty()) {
            return parent(tensorName);
        }
        if (m instanceof ModuleList && !m.children().isEmpty()) {
            String rest = tensorName.substring(entry.length() + 1);
            int dot = rest.indexOf('.');
            return dot < 0 ? entry : entry + "." + rest.substring(0, dot);
        }
        return entry;
    }

    private static String parent(String name) {
        int dot = name.lastIndexOf('.');
        return dot < 0 ? "" : name.substring(0, dot);
    }

    /** The hook targets of every entry, for modules that hold no tensor of their own too (they align inputs). */
    static Map<String, Device> hookTargets(Module model, DeviceMap map, Device main, List<Placement> placements) {
        Map<String, Device> out = new LinkedHashMap<>();
        for (Map.Entry<String, Device> e : map.asMap().entrySet()) {
            Module m = model.findModule(e.getKey());
            Device exec = executionDevice(e.getValue(), main);
            if (m == null) {
                String owner = parent(e.getKey());
                LOG.info("Device map entry '{}' names a tensor: its hook is attached to the owning module '{}'",
                        e.getKey(), owner);
                // Several tensor entries of one module: a GPU among them decides where it executes.
                out.merge(owner, exec, (a, b) -> a.isCuda() ? a : b);
            } else if (e.getKey().isEmpty()) {
                // Every module that holds a tensor slot directly, tied aliases included (an output layer tied
                // to the embedding holds the embedding's parameter and must bring it in for its own forward).
                for (Placement p : placements) {
                    out.putIfAbsent(p.hookTarget, exec);
                }
                for (Map.Entry<String, Module> sub : model.namedModules().entrySet()) {
                    if (!sub.getValue().parameters().isEmpty() || !sub.getValue().buffers().isEmpty()) {
                        out.putIfAbsent(sub.getKey(), exec);
                    }
                }
            } else if (m instanceof ModuleList && !m.children().isEmpty()) {
                for (String child : m.children().keySet()) {
                    out.put(e.getKey() + "." + child, exec);
                }
                if (!m.parameters().isEmpty() || !m.buffers().isEmpty()) {
                    out.put(e.getKey(), exec);
                }
            } else {
                out.put(e.getKey(), exec);
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

    /** A copy of {@code source} on {@code device} in {@code dtype} (always a new tensor). */
    static Tensor copyTo(Tensor source, Device device, DType dtype) {
        return source.to(Tensors.toTorch(device), dtype.scalarType(), false, true, new MemoryFormatOptional());
    }

    /** The dtype a checkpoint tensor is loaded as: integers never change; floats take the load or declared dtype. */
    static DType targetDtype(DType stored, DType loadDtype, DType declared) {
        if (!stored.isFloatingPoint()) {
            return stored;
        }
        if (loadDtype != null) {
            return loadDtype;
        }
        return declared.isFloatingPoint() ? declared : stored;
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
                missing.add(p.name);
                continue;
            }
            byCheckpointName.put(p.checkpointName, p);
        }
        if (!missing.isEmpty()) {
            throw new IllegalArgumentException("The checkpoint " + checkpoint.source() + " lacks " + missing.size()
                    + " tensor(s) of " + model.className() + ": " + DeviceMap.pythonList(missing));
        }
        List<String> needFolder = new ArrayList<>();
        List<String> badShapes = new ArrayList<>();
        for (Placement p : placements) {
            p.info = checkpoint.info(p.checkpointName);
            if (!Arrays.equals(p.info.shape(), p.parameter.shape())) {
                badShapes.add(p.checkpointName + ": checkpoint " + Arrays.toString(p.info.shape()) + ", model "
                        + Arrays.toString(p.parameter.shape()));
            }
            p.target = targetDtype(p.info.dtype(), options.dtype(), p.parameter.dtype());
            boolean safetensors = p.info.file() != null
                    && p.info.file().getFileName().toString().toLowerCase(Locale.ROOT).endsWith(".safetensors");
            p.inPlace = p.placed.isDisk() && safetensors && p.target == p.info.dtype();
            if (p.placed.isDisk() && !p.inPlace) {
                needFolder.add(p.name);
            }
        }
        if (!badShapes.isEmpty()) {
            throw new IllegalArgumentException("Checkpoint tensors do not fit " + model.className() + ": "
                    + String.join("; ", badShapes));
        }
        if (!needFolder.isEmpty() && options.offloadFolder() == null) {
            throw new IllegalArgumentException(needFolder.size() + " weight(s) placed on disk must be rewritten"
                    + " (a dtype conversion or a non-safetensors checkpoint), so an offload folder is needed: set"
                    + " DispatchOptions.offloadFolder. First: " + needFolder.get(0));
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
                out.store = OffloadStore.open(options.offloadFolder(), OffloadStore.describeSource(files,
                        options.dtype()));
                out.resources.add(out.store);
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
            for (Placement p : ordered) {
                keepsCheckpoint |= p.inPlace;
                placeFromCheckpoint(p, checkpoint, options, out);
                done++;
                if (options.progress() != null) {
                    options.progress().placed(p.name, p.placed, done, ordered.size());
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

    private static void placeFromCheckpoint(Placement p, Checkpoint checkpoint, DispatchOptions options,
            Placed out) {
        String name = p.checkpointName;
        if (p.placed.isDisk()) {
            if (p.inPlace) {
                out.sources.put(p.parameter, WeightSource.lazy(() -> checkpoint.load(name), p.info.byteLength()));
                out.inPlace++;
            } else {
                DType target = p.target;
                out.sources.put(p.parameter, out.store.source(name, target, p.info.shape(), () -> {
                    try (Tensor view = checkpoint.load(name)) {
                        return copyTo(view, Device.CPU, target);
                    }
                }));
            }
            p.parameter.setPlannedDtype(p.target);
            p.parameter.markOffloaded();
            return;
        }
        Tensor value;
        try (Tensor view = checkpoint.load(name)) {
            boolean keepView = p.placed.isCpu() && options.offloadStateDict() && p.target == p.info.dtype();
            value = keepView ? view.alias() : copyTo(view, p.placed, p.target);
        }
        if (p.offloaded) {
            out.sources.put(p.parameter, WeightSource.of(value));
            out.resources.add(value);
            p.parameter.setPlannedDtype(p.target);
            p.parameter.markOffloaded();
        } else {
            p.parameter.set(value);
        }
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
            List<Placement> placements, Placed placed, int prefetch) {
        Map<String, Device> targets = hookTargets(model, map, main, placements);
        boolean anyOffloaded = !placed.sources.isEmpty();
        boolean severalDevices = new LinkedHashSet<>(targets.values()).size() > 1;
        List<HookHandle> handles = new ArrayList<>();
        Prefetcher prefetcher = null;
        if (anyOffloaded || severalDevices) {
            Map<String, Map<Parameter, WeightSource>> byTarget = new LinkedHashMap<>();
            for (Placement p : placements) {
                WeightSource s = placed.sources.get(p.parameter);
                if (s != null) {
                    byTarget.computeIfAbsent(p.hookTarget, k -> new LinkedHashMap<>()).put(p.parameter, s);
                    targets.putIfAbsent(p.hookTarget, p.execution);
                }
            }
            // A tied tensor is placed once, under its owner; every other hooked module that holds it (an output
            // layer tied to the embedding) must bring it in for its own forward too.
            for (String t : targets.keySet()) {
                Module m = model.module(t);
                List<Parameter> held = new ArrayList<>(m.namedParameters().values());
                held.addAll(m.namedBuffers().values());
                for (Parameter p : held) {
                    WeightSource s = placed.sources.get(p);
                    if (s != null) {
                        byTarget.computeIfAbsent(t, k -> new LinkedHashMap<>()).putIfAbsent(p, s);
                    }
                }
            }
            List<String> order = new ArrayList<>(targets.keySet());
            Map<String, OffloadedWeights> weights = new LinkedHashMap<>();
            List<OffloadedWeights> stages = new ArrayList<>();
            Map<String, Integer> stageOf = new LinkedHashMap<>();
            for (String t : order) {
                Map<Parameter, WeightSource> srcs = byTarget.get(t);
                if (srcs != null) {
                    OffloadedWeights w = new OffloadedWeights(t, targets.get(t), srcs);
                    weights.put(t, w);
                    stageOf.put(t, stages.size());
                    stages.add(w);
                }
            }
            if (prefetch > 0 && !stages.isEmpty()) {
                prefetcher = new Prefetcher(stages, prefetch);
            }
            try {
                for (String t : order) {
                    Module m = model.module(t);
                    AlignDevicesHook hook = new AlignDevicesHook(targets.get(t), weights.get(t), prefetcher,
                            stageOf.getOrDefault(t, -1));
                    handles.add(m.addForwardHook(hook));
                }
            } catch (RuntimeException | Error e) {
                handles.forEach(HookHandle::remove);
                if (prefetcher != null) {
                    prefetcher.close();
                }
                release(model, placed);
                throw e;
            }
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
}
