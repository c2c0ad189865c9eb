package io.github.bigmodel.dispatch.plan;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.Module;
import io.github.bigmodel.core.Parameter;
import io.github.bigmodel.core.quant.Precision;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.stream.Collectors;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Plans where each part of a model goes, with accelerate 1.14's rules (parity with {@code get_balanced_memory},
 * {@code infer_auto_device_map} and {@code clean_device_map}, quirks included; see docs/device-maps.md). Works on a
 * model born on meta: only shapes and dtypes are read, no memory is allocated.
 *
 * <pre>{@code
 * Module model = ...;                                    // on meta
 * DevicePlan plan = DeviceMapPlanner.plan(model, Strategy.AUTO,
 *         MaxMemory.parse("0=10GiB,1=10GiB,cpu=30GiB"),
 *         PlanOptions.builder().dtype(DType.FLOAT16).build());      // blocks whole: the model's no-split classes
 * plan.deviceMap();    // {transformer.word_embeddings=cuda:0, ..., lm_head=cuda:1}
 * }</pre>
 */
public final class DeviceMapPlanner {

    private static final Logger LOG = LoggerFactory.getLogger(DeviceMapPlanner.class);

    private DeviceMapPlanner() {
    }

    /** One item of the planner's work list: a module or a tensor under its full name. */
    private static final class Entry {
        final String name;
        final Module module;
        final Parameter tensor;

        Entry(String name, Module module, Parameter tensor) {
            this.name = name;
            this.module = module;
            this.tensor = tensor;
        }

        boolean isModule() {
            return module != null;
        }

        boolean splittable(Collection<String> noSplit) {
            return module != null && !module.children().isEmpty() && !noSplit.contains(module.className());
        }
    }

    /**
     * The strategy entry point (accelerate's {@code load_checkpoint_and_dispatch}): the budget for the strategy
     * ({@link #budgetFor}), then the map within it ({@link #planWithin}).
     *
     * @param maxMemory the user's budget, or null for this machine's free memory ({@link PlanOptions#inventory()})
     */
    public static DevicePlan plan(Module model, Strategy strategy, MaxMemory maxMemory, PlanOptions options) {
        if (options.hosts != null) {
            throw new IllegalArgumentException("PlanOptions name hosts " + options.hosts.hosts() + ": plan the"
                    + " pipeline with DeviceMapPlanner.planHosts, and load one host's part with map.forHost(host)");
        }
        PlanOptions o = options.forModel(model);
        return planWithin(model, budgetFor(model, strategy, maxMemory, o), o);
    }

    /**
     * Step 1 of {@link #plan}: the budget a strategy plans under. Sequential takes the user's budget (or the
     * machine's); the others balance it ({@link #getBalancedMemory}).
     */
    public static MaxMemory budgetFor(Module model, Strategy strategy, MaxMemory maxMemory, PlanOptions options) {
        if (strategy == Strategy.SEQUENTIAL) {
            return maxMemory != null ? maxMemory : MaxMemory.defaults(options.inventory);
        }
        return getBalancedMemory(model, maxMemory, options, strategy == Strategy.BALANCED_LOW_0);
    }

    /**
     * Step 2 of {@link #plan}: the map within {@code budget} ({@link #inferAutoDeviceMap}) with what it holds per
     * device, the model's size and its largest layer.
     */
    public static DevicePlan planWithin(Module model, MaxMemory budget, PlanOptions options) {
        PlanOptions o = options.forModel(model);
        ModuleSizes sizes = sizesFor(model, o, mainDevice(budget.devices(), o));
        LargestLayer largest = largestLayer(model, sizes, o.noSplit);
        DeviceMap map = inferAutoDeviceMap(model, budget, o);
        return new DevicePlan(map, budget, sizes.total(), largest, deviceMemory(model, map, budget, o));
    }

    /**
     * Plans a model over several hosts ({@link PlanOptions#hosts()}, in pipeline order) as pipeline stages: each
     * host gets a run of consecutive planning units (whole no-split blocks, leaf modules), so a block never
     * straddles two hosts, the first stage holds the embedding and the last the output layer; within a host, its
     * devices are planned by {@link #budgetFor} and {@link #planWithin} with {@code strategy} and its budget. Hosts
     * are filled in order, each with the longest run its memory holds; only when memory cannot hold the model does
     * the last host allowed to use its disk take what the others cannot (see docs/distributed.md).
     *
     * <pre>{@code
     * PipelinePlan p = DeviceMapPlanner.planHosts(model, Strategy.SEQUENTIAL, PlanOptions.builder()
     *         .dtype(DType.FLOAT16)
     *         .hosts(HostBudgets.parse(List.of("box-a=cuda:0:6GiB,cpu:8GiB", "box-b=cpu:16GiB"))).build());
     * DeviceMap mine = p.deviceMap().forHost("box-b");   // what box-b loads; box-a's modules are remote
     * }</pre>
     *
     * @throws PipelineShortfallException when the hosts cannot hold the model and none may use its disk, with the
     *     bytes left over
     * @throws IllegalArgumentException when the options give no hosts
     */
    public static PipelinePlan planHosts(Module model, Strategy strategy, PlanOptions options) {
        return HostPlanner.plan(model, strategy, options);
    }

    /** {@link #plan(Module, Strategy, MaxMemory, PlanOptions)} with the strategy as accelerate's string. */
    public static DevicePlan plan(Module model, String strategy, MaxMemory maxMemory, PlanOptions options) {
        return plan(model, Strategy.parse(strategy), maxMemory, options);
    }

    /**
     * accelerate's {@code get_balanced_memory}: lowers every GPU's budget but the last to an even share of the
     * model plus a margin, so that the planner spreads the model over all GPUs instead of filling the first ones.
     *
     * @param maxMemory the user's budget, or null for this machine's free memory (then a single GPU keeps 10 % free)
     * @param lowZero   keep GPU 0 as empty as possible ({@code balanced_low_0})
     * @throws DeviceMapException as accelerate fails: a {@code disk} key ({@code RuntimeError} from torch), GPU
     *     ids that are not 0..n-1 under lowZero ({@code KeyError})
     */
    public static MaxMemory getBalancedMemory(Module model, MaxMemory maxMemory, PlanOptions planOptions,
            boolean lowZero) {
        PlanOptions options = planOptions.forModel(model);
        boolean userNotSet = maxMemory == null;
        MaxMemory budget = userNotSet ? MaxMemory.defaults(options.inventory) : maxMemory;
        if (budget.contains(Device.DISK)) {
            // accelerate evaluates torch.device(key) for every key, and torch has no "disk" device.
            throw new DeviceMapException("RuntimeError",
                    "Balancing a budget that names \"disk\" fails in accelerate (torch.device(\"disk\") is invalid):"
                            + " give disk no budget, or use the sequential strategy",
                    "Expected one of cpu, cuda, ipu, xpu, mkldnn, opengl, opencl, ideep, hip, ve, fpga, ort, xla,"
                            + " lazy, vulkan, mps, meta, hpu, privateuseone device type at start of device string:"
                            + " disk");
        }
        List<Device> positive = budget.gpus().stream().filter(d -> budget.get(d) > 0).collect(Collectors.toList());
        int n = positive.size();
        if (n == 0) {
            return budget;
        }
        MaxMemory out = budget;
        if (n == 1) {
            lowZero = false;
            if (userNotSet) {
                Device first = budget.gpus().get(0);
                out = out.with(first, out.get(first) * 0.9);
                LOG.info("We will use 90% of the memory on device {} for storing the model, and 10% for the buffer"
                        + " to avoid OOM. You can set `max_memory` in to a higher value to use more memory (at your"
                        + " own risk).", first.index());
            }
        }
        ModuleSizes sizes = sizesFor(model, options, mainDevice(budget.devices(), options));
        double total = sizes.total();
        double perGpu = floorDiv(total, lowZero ? n - 1 : n);

        double noSplitBlock = 0;
        if (!options.noSplit.isEmpty()) {
            Map<String, Double> firstOfClass = new LinkedHashMap<>();
            Set<String> wanted = new HashSet<>(options.noSplit);
            for (Map.Entry<String, Double> e : sizes.asMap().entrySet()) {
                if (e.getKey().isEmpty()) {
                    continue;
                }
                Module m = model.findModule(e.getKey());
                if (m != null && wanted.contains(m.className())) {
                    firstOfClass.putIfAbsent(m.className(), e.getValue());
                }
                if (firstOfClass.keySet().equals(wanted)) {
                    break;
                }
            }
            noSplitBlock = firstOfClass.values().stream().mapToDouble(Double::doubleValue).max().orElse(0);
        }
        Map<String, Double> withoutTensors = new LinkedHashMap<>(sizes.asMap());
        withoutTensors.keySet().removeAll(leaves(withoutTensors.keySet()));
        List<String> finalModules = leaves(withoutTensors.keySet());
        double sum = 0;
        for (String f : finalModules) {
            sum += withoutTensors.get(f);
        }
        double meanLeaves = truncate(sum / Math.max(finalModules.size(), 1));
        double buffer = truncate(1.25 * Math.max(noSplitBlock, meanLeaves));
        perGpu += buffer;
        MemoryReservation reservation = options.reservation;
        if (!reservation.isEmpty()) {
            // Balance what each GPU holds while it runs: its share of the reserved bytes and its workspace too.
            perGpu += floorDiv(reservation.totalModuleBytes(), lowZero ? n - 1 : n) + reservation.workspaceBytes();
        }

        for (int i = 0; i < positive.size() - 1; i++) {
            Device d = positive.get(i);
            double cap = lowZero && d.index() == 0 ? out.get(Device.cuda(0)) : perGpu;
            out = out.with(d, Math.min(cap, out.get(d)));
        }
        if (lowZero) {
            double others = 0;
            for (int i = 1; i < n; i++) {
                others += keyed(out, i);
            }
            double minZero = Math.max(0, total - others);
            out = out.with(Device.cuda(0), Math.min(minZero, keyed(out, 0)));
        }
        return out;
    }

    private static double keyed(MaxMemory m, int gpu) {
        Device d = Device.cuda(gpu);
        if (!m.contains(d)) {
            // accelerate's balanced_low_0 reads GPUs 0..n-1 by number (accelerate issue #4297).
            throw new DeviceMapException("KeyError", "balanced_low_0 needs GPUs numbered 0..n-1 with a budget;"
                    + " GPU " + gpu + " has none in " + m, Integer.toString(gpu));
        }
        return m.get(d);
    }

    /** Names of {@code keys} with no key directly below them (accelerate's {@code get_module_leaves}). */
    private static List<String> leaves(Collection<String> keys) {
        Map<String, Integer> childCount = new LinkedHashMap<>();
        for (String k : keys) {
            int dot = k.lastIndexOf('.');
            if (k.isEmpty() || dot < 0) {
                continue;
            }
            childCount.merge(k.substring(0, dot), 1, Integer::sum);
        }
        List<String> out = new ArrayList<>();
        for (String k : keys) {
            if (!k.isEmpty() && childCount.getOrDefault(k, 0) == 0) {
                out.add(k);
            }
        }
        return out;
    }

    /**
     * accelerate's {@code infer_auto_device_map} with the given switches.
     *
     * @param dtype          load dtype, or null to keep each tensor's own
     * @param specialDtypes  per-tensor dtypes (may be null)
     */
    public static DeviceMap inferAutoDeviceMap(Module model, MaxMemory maxMemory, List<String> noSplitModuleClasses,
            DType dtype, Map<String, DType> specialDtypes, boolean offloadBuffers, boolean cleanResult,
            boolean fallbackAllocation) {
        PlanOptions.Builder b = PlanOptions.builder().noSplitModuleClasses(noSplitModuleClasses).dtype(dtype)
                .offloadBuffers(offloadBuffers).cleanResult(cleanResult).fallbackAllocation(fallbackAllocation);
        if (specialDtypes != null) {
            specialDtypes.forEach(b::specialDtype);
        }
        return inferAutoDeviceMap(model, maxMemory, b.build());
    }

    /**
     * accelerate's {@code infer_auto_device_map}: walks the model (own parameters, children, own buffers), putting
     * each part on the current device while it fits next to the reserve kept for the largest layer, splitting
     * modules that do not fit, keeping tied parameters together, then moving on to the next device (GPUs, cpu,
     * disk, which never fills).
     *
     * @param maxMemory the budget, or null for this machine's free memory
     */
    public static DeviceMap inferAutoDeviceMap(Module model, MaxMemory maxMemory, PlanOptions planOptions) {
        PlanOptions options = planOptions.forModel(model);
        MaxMemory budget = maxMemory != null ? maxMemory : MaxMemory.defaults(options.inventory);
        MemoryReservation reservation = options.reservation;
        if (reservation.isEmpty()) {
            return inferPass(model, budget, options, 0);
        }
        // First pass: the main device keeps every module's reserved bytes, since any module may end up offloaded
        // and then executes (and keeps its KV cache) there. Safe, but with other GPUs it over-reserves for the
        // modules they take: a second pass reserves on the main device only what the first pass left executing
        // there, and is kept when what it leaves there still fits that reserve.
        Device main = mainDevice(withDisk(budget), options);
        double allReserved = reservation.totalModuleBytes();
        DeviceMap first = inferPass(model, budget, options, allReserved);
        DeviceMap chosen = first;
        double onMain = reservedExecutingOn(model, first, main, reservation);
        if (onMain < allReserved) {
            DeviceMap second = inferPass(model, budget, options, onMain);
            if (reservedExecutingOn(model, second, main, reservation) <= onMain) {
                chosen = second;
            }
        }
        LOG.info("Planned with {} bytes reserved beside the weights ({}): {} bytes on the main device {}",
                reservation.totalModuleBytes(), reservation.description(),
                (long) reservedExecutingOn(model, chosen, main, reservation), main);
        return chosen;
    }

    private static List<Device> withDisk(MaxMemory budget) {
        List<Device> devices = new ArrayList<>(budget.devices());
        if (!devices.contains(Device.DISK)) {
            devices.add(Device.DISK);
        }
        return devices;
    }

    /**
     * One planning pass: accelerate's algorithm, where each device's limit is also lowered by what it keeps
     * beside the weights (the workspace on executing devices, {@code mainReserve} on the main device) and a module
     * placed on a GPU other than the main device counts its reserved bytes with its weights. Each entry of the work
     * list meets the steps in order: it is placed when it fits ({@link Pass#place}), else a tied partner is split
     * ({@link Pass#splitTiedPartner}), else the entry itself is split ({@link Pass#splitEntry}), else an empty
     * device may take a smaller module first ({@link Pass#fallBack}), else the device is full and the next one is
     * tried ({@link Pass#nextDevice}).
     */
    private static DeviceMap inferPass(Module model, MaxMemory budget, PlanOptions options, double mainReserve) {
        Pass pass = new Pass(model, budget, options, mainReserve);
        while (pass.hasWork()) {
            Candidate c = pass.next();
            if (c.fits()) {
                pass.place(c);
            } else if (!pass.splitTiedPartner(c) && !pass.splitEntry(c) && !pass.fallBack(c)) {
                pass.nextDevice(c);
            }
        }
        return pass.result();
    }

    /** An entry of the work list sized for the device being filled. */
    private static final class Candidate {
        final Entry entry;
        final Device device;
        final ModuleSizes sizes;
        /** The entry's size here, with its uncharged reserved bytes on a GPU other than the main device. */
        final double size;
        /** The size with the tied partners that must come along. */
        final double withTies;
        /** What the device may hold: its budget less the kept reserve; null for disk (never fills). */
        final Double limit;
        /** What the device keeps back: the largest layer on main devices, the workspace, the main reserve. */
        final double reserved;
        final List<String> tiedParams;
        final List<Entry> tiedEntries;
        final boolean chargesHere;
        final double used;

        Candidate(Entry entry, Device device, ModuleSizes sizes, double size, double withTies, Double limit,
                double reserved, List<String> tiedParams, List<Entry> tiedEntries, boolean chargesHere, double used) {
            this.entry = entry;
            this.device = device;
            this.sizes = sizes;
            this.size = size;
            this.withTies = withTies;
            this.limit = limit;
            this.reserved = reserved;
            this.tiedParams = tiedParams;
            this.tiedEntries = tiedEntries;
            this.chargesHere = chargesHere;
            this.used = used;
        }

        boolean fits() {
            return limit == null || used + withTies <= limit;
        }
    }

    /** The state of one planning pass: the work list, the map so far and what each device holds. */
    private static final class Pass {
        private final MaxMemory budget;
        private final PlanOptions options;
        private final List<String> noSplit;
        private final List<Device> devices = new ArrayList<>();
        private final List<Device> gpus;
        private final List<Device> mainDevices;
        private final Device main;
        private final ModuleSizes sizes;
        private final Map<Device, ModuleSizes> sizesByDevice = new LinkedHashMap<>();
        private final List<List<String>> tiedGroups = new ArrayList<>();
        private final Map<Device, Double> keptFree = new LinkedHashMap<>();
        private final MemoryReservation reservation;
        private final Map<String, Device> map = new LinkedHashMap<>();
        private final Map<Device, Double> used = new LinkedHashMap<>();
        private final Map<Device, Double> bufferSizes = new LinkedHashMap<>();
        private final Map<Device, Double> minimumNeeded = new LinkedHashMap<>();
        private final Set<String> charged = new HashSet<>();
        private List<Entry> work;
        private double maxLayerSize;
        private List<String> maxLayerNames;
        private int current;

        Pass(Module model, MaxMemory budget, PlanOptions options, double mainReserve) {
            this.budget = budget;
            this.options = options;
            this.noSplit = options.noSplit;
            this.reservation = options.reservation;
            devices.addAll(budget.devices());
            if (!devices.contains(Device.DISK)) {
                devices.add(Device.DISK);
            }
            gpus = devices.stream().filter(Device::isCuda).collect(Collectors.toList());
            mainDevices = gpus.isEmpty() ? List.of(Device.CPU) : List.of(gpus.get(0), Device.CPU);
            // Per-device precision: a module placed on a device is sized at the precision of the device it executes
            // on (cpu/disk entries execute on the main device). The reserve main devices keep is for a layer brought
            // to the main device, so it is measured at the main device's precision, like every size used for it.
            main = mainDevice(devices, options);
            sizes = sizesFor(model, options, main);
            for (Device d : devices) {
                Device executing = d.isCuda() ? d : main;
                sizesByDevice.put(d, options.precisionOf(executing) == options.precisionOf(main) ? sizes
                        : sizesFor(model, options, executing));
                boolean executes = d.isCuda() || d.equals(main);
                keptFree.put(d, (executes ? (double) reservation.workspaceBytes() : 0.0)
                        + (d.equals(main) ? mainReserve : 0.0));
                used.put(d, 0.0);
            }
            for (List<String> g : model.tiedParameters()) {
                tiedGroups.add(g.stream().sorted().collect(Collectors.toList()));
            }
            work = directMembers("", model, true);
            // The first reserve counts the root's own tensors too; later ones only the modules left (accelerate).
            LargestLayer largest = maxLayer(work, sizes, noSplit);
            maxLayerSize = largest.size();
            maxLayerNames = new ArrayList<>(largest.names());
        }

        boolean hasWork() {
            return !work.isEmpty();
        }

        /** The reserve main devices keep: the largest layer still to place. */
        private void refreshLargest() {
            LargestLayer largest = maxLayer(modulesOnly(work), sizes, noSplit);
            maxLayerSize = largest.size();
            maxLayerNames = new ArrayList<>(largest.names());
        }

        /** Takes the next entry and sizes it for the current device. */
        Candidate next() {
            Entry entry = work.remove(0);
            String name = entry.name;
            maxLayerNames.removeIf(n -> n.equals(name) || n.startsWith(name + "."));
            if (maxLayerNames.isEmpty()) {
                refreshLargest();
            }
            Device device = devices.get(current);
            ModuleSizes here = sizesByDevice.get(device);
            List<String> tiedParams = outsideTies(name, tiedGroups);
            Double limit = device.isDisk() ? null : budget.get(device);
            double reserved = 0;
            if (mainDevices.contains(device) && limit != null) {
                limit = limit - maxLayerSize;
                reserved = maxLayerSize;
            }
            if (limit != null) {
                limit = limit - keptFree.get(device);
                reserved += keptFree.get(device);
            }
            List<Entry> tiedEntries = tiedEntries(tiedParams, work, name);
            // Reserved bytes count here only on a GPU that is not the main device (the main device keeps them all
            // up front; cpu/disk entries execute on the main device).
            boolean chargesHere = device.isCuda() && !device.equals(main);
            double extra = 0;
            if (chargesHere) {
                extra = unchargedBytes(name, reservation, charged);
                for (Entry tied : tiedEntries) {
                    extra += unchargedBytes(tied.name, reservation, charged);
                }
            }
            double size = here.size(name) + extra;
            double withTies = size;
            for (int i = 0; i < tiedParams.size(); i++) {
                withTies += here.size(tiedEntries.get(i).name) - here.size(tiedParams.get(i));
            }
            return new Candidate(entry, device, here, size, withTies, limit, reserved, tiedParams, tiedEntries,
                    chargesHere, used.get(device));
        }

        /** The entry and its tied partners go on the device. */
        void place(Candidate c) {
            String name = c.entry.name;
            used.put(c.device, c.used + c.withTies);
            map.put(name, c.device);
            markCharged(name, reservation, charged);
            for (Entry tied : c.tiedEntries) {
                markCharged(tied.name, reservation, charged);
                for (int i = 0; i < work.size(); i++) {
                    if (work.get(i).name.equals(tied.name)) {
                        work.remove(i);
                        break;
                    }
                }
                map.put(tied.name, c.device);
            }
            if (!options.offloadBuffers && c.entry.isModule()) {
                double buffers = ModuleSizes.compute(c.entry.module, options.dtypeBytes, options.specialBytes, true)
                        .total();
                bufferSizes.merge(c.device, buffers, Double::sum);
            }
        }

        /**
         * The entry fits without its tied partners: the first splittable partner is replaced by its members, and
         * the entry is tried again.
         */
        boolean splitTiedPartner(Candidate c) {
            if (c.tiedParams.isEmpty() || c.used + c.size > c.limit) {
                return false;
            }
            for (Entry tied : c.tiedEntries) {
                // A tied tensor entry cannot be split (accelerate would fail on it with AttributeError).
                if (!tied.splittable(noSplit)) {
                    continue;
                }
                int index = indexOf(work, tied.name);
                List<Entry> next = new ArrayList<>();
                next.add(c.entry);
                next.addAll(work.subList(0, index));
                next.addAll(directMembers(tied.name, tied.module, false));
                next.addAll(work.subList(index + 1, work.size()));
                work = next;
                refreshLargest();
                return true;
            }
            return false;
        }

        /** The entry does not fit and may be split: its members take its place at the head of the work list. */
        boolean splitEntry(Candidate c) {
            if (c.used + c.size < c.limit || !c.entry.splittable(noSplit)) {
                return false;
            }
            List<Entry> next = directMembers(c.entry.name, c.entry.module, false);
            next.addAll(work);
            work = next;
            refreshLargest();
            return true;
        }

        /** With fallback allocation, an empty device takes the first smaller module that fits, before the entry. */
        boolean fallBack(Candidate c) {
            if (c.used != 0 || !options.fallbackAllocation || c.device.isDisk()) {
                return false;
            }
            double fallbackLimit = budget.get(c.device) - Math.max(maxLayerSize, c.withTies) - c.used
                    - keptFree.get(c.device);
            List<Entry> remaining = new ArrayList<>(work);
            java.util.function.ToDoubleFunction<String> extraOf = n -> c.chargesHere
                    ? unchargedBytes(n, reservation, charged) : 0;
            Entry found = fallback(remaining, c.sizes, fallbackLimit, noSplit, tiedGroups, extraOf);
            if (found == null) {
                return false;
            }
            List<Entry> next = new ArrayList<>();
            next.add(found);
            next.add(c.entry);
            next.addAll(remaining);
            work = next;
            return true;
        }

        /** The device is full: it keeps its reserve, and the entry goes back to the head for the next device. */
        void nextDevice(Candidate c) {
            if (c.used == 0) {
                minimumNeeded.put(c.device, c.withTies + c.reserved);
            }
            used.put(c.device, c.used + c.reserved);
            current++;
            work.add(0, c.entry);
        }

        DeviceMap result() {
            if (options.cleanResult) {
                clean(map, "");
            }
            warnAboutBuffers(budget, used, bufferSizes, gpus, options.offloadBuffers);
            if (!minimumNeeded.isEmpty()) {
                LOG.info("Based on the current allocation process, no modules could be assigned to the following"
                        + " devices due to insufficient memory:\n{}\nThese minimum requirements are specific to this"
                        + " allocation attempt and may vary. Consider increasing the available memory for these"
                        + " devices to at least the specified minimum, or adjusting the model config.",
                        minimumNeeded.entrySet().stream()
                                .map(e -> "  - " + e.getKey() + ": " + MaxMemory.formatBytes(e.getValue())
                                        + " bytes required")
                                .collect(Collectors.joining("\n")));
            }
            return DeviceMap.of(map);
        }
    }

    /** Whether reserved module {@code reserved} is {@code name}, below it, or holds it. */
    private static boolean covers(String name, String reserved) {
        return reserved.equals(name) || reserved.startsWith(name + ".") || name.startsWith(reserved + ".");
    }

    /** Reserved bytes of the modules {@code name} covers (or lies in) that no placed entry has counted yet. */
    private static double unchargedBytes(String name, MemoryReservation reservation, Set<String> charged) {
        double sum = 0;
        for (Map.Entry<String, Long> r : reservation.moduleBytes().entrySet()) {
            if (!charged.contains(r.getKey()) && covers(name, r.getKey())) {
                sum += r.getValue();
            }
        }
        return sum;
    }

    private static void markCharged(String name, MemoryReservation reservation, Set<String> charged) {
        for (String r : reservation.moduleBytes().keySet()) {
            if (covers(name, r)) {
                charged.add(r);
            }
        }
    }

    /**
     * The device reserved module {@code name} executes on under {@code map}: the device of its entry (or its
     * first part's, in module order, when it is split) when that is a GPU, else the main device. Null when the map
     * does not place it or places it {@code remote}.
     */
    static Device executionDeviceOf(String name, DeviceMap orderedMap, Device main) {
        Device placed = orderedMap.deviceOf(name);
        if (placed == null) {
            for (Map.Entry<String, Device> e : orderedMap.asMap().entrySet()) {
                if (e.getKey().startsWith(name + ".")) {
                    placed = e.getValue();
                    break;
                }
            }
        }
        if (placed == null || placed.isRemote()) {
            return null; // a remote module executes on another stage
        }
        return placed.isCuda() ? placed : main;
    }

    private static double reservedExecutingOn(Module model, DeviceMap map, Device device,
            MemoryReservation reservation) {
        DeviceMap ordered = map.inModuleOrder(model);
        double sum = 0;
        for (Map.Entry<String, Long> r : reservation.moduleBytes().entrySet()) {
            if (device.equals(executionDeviceOf(r.getKey(), ordered, device))) {
                sum += r.getValue();
            }
        }
        return sum;
    }

    /**
     * How each device's budget is used under {@code map} (planned or hand-written): weights at the precision of
     * the device they execute on, the {@link PlanOptions#reservation() reserved} bytes of the modules executing
     * there (an offloaded module's on the main device), the workspace on every device that executes something,
     * and on the main device the largest offloaded layer (what is brought in to execute it). Devices in the budget
     * come first, in accelerate's order, then any other device the map uses.
     *
     * <pre>{@code
     * Map<Device, DeviceMemory> m = DeviceMapPlanner.deviceMemory(model, map, budget, options);
     * m.get(Device.cuda(0)).freeBytes();
     * }</pre>
     */
    public static Map<Device, DeviceMemory> deviceMemory(Module model, DeviceMap map, MaxMemory budget,
            PlanOptions planOptions) {
        PlanOptions options = planOptions.forModel(model);
        List<Device> devices = new ArrayList<>(budget.devices());
        for (Device d : map.devices()) {
            if (!devices.contains(d) && !d.isRemote()) {
                devices.add(d);
            }
        }
        Device main = mainDevice(withDisk(budget), options);
        ModuleSizes mainSizes = sizesFor(model, options, main);
        Map<Device, Double> weights = new LinkedHashMap<>();
        Set<Device> executing = new HashSet<>();
        List<Entry> offloaded = new ArrayList<>();
        for (Map.Entry<String, Device> e : map.asMap().entrySet()) {
            Device d = e.getValue();
            if (d.isRemote()) {
                continue; // another stage holds it: nothing of it is on this host
            }
            Device exec = d.isCuda() ? d : main;
            ModuleSizes s = options.precisionOf(exec) == options.precisionOf(main) ? mainSizes
                    : sizesFor(model, options, exec);
            // Buffers the model computes (rotary tables) are made where the module executes, so an offloaded
            // entry's are held on its execution device, not where its weights are.
            double computed = d.equals(exec) ? 0 : computedBufferBytes(model, e.getKey(), s);
            weights.merge(d, s.size(e.getKey()) - computed, Double::sum);
            if (computed > 0) {
                weights.merge(exec, computed, Double::sum);
            }
            executing.add(exec);
            if (!d.equals(exec)) {
                Module m = e.getKey().isEmpty() ? model : model.findModule(e.getKey());
                if (m != null) {
                    offloaded.add(new Entry(e.getKey(), m, null));
                } else {
                    offloaded.add(new Entry(e.getKey(), null, model.findTensor(e.getKey())));
                }
            }
        }
        Map<Device, Long> reserved = new LinkedHashMap<>();
        DeviceMap ordered = map.inModuleOrder(model);
        for (Map.Entry<String, Long> r : options.reservation.moduleBytes().entrySet()) {
            Device exec = executionDeviceOf(r.getKey(), ordered, main);
            if (exec != null) {
                reserved.merge(exec, r.getValue(), Long::sum);
            }
        }
        double buffer = offloaded.isEmpty() ? 0 : maxLayer(offloaded, mainSizes, options.noSplit).size();
        Map<Device, DeviceMemory> out = new LinkedHashMap<>();
        for (Device d : devices) {
            double limit = budget.contains(d) && !d.isDisk() ? budget.get(d) : Double.POSITIVE_INFINITY;
            out.put(d, new DeviceMemory(d, weights.getOrDefault(d, 0.0), reserved.getOrDefault(d, 0L),
                    executing.contains(d) ? options.reservation.workspaceBytes() : 0,
                    d.equals(main) ? buffer : 0, limit));
        }
        return out;
    }

    /**
     * Bytes of the buffers the model computes itself (non-persistent ones and {@link Module#isComputedBuffer}) at or
     * below {@code entry} (a module or tensor name; "" = all).
     */
    private static double computedBufferBytes(Module model, String entry, ModuleSizes sizes) {
        double sum = 0;
        for (Map.Entry<String, Module> m : model.namedModules().entrySet()) {
            for (String b : m.getValue().buffers().keySet()) {
                String full = m.getKey().isEmpty() ? b : m.getKey() + "." + b;
                if (m.getValue().isPersistentBuffer(b) && !model.isComputedBuffer(full)) {
                    continue;
                }
                if (entry.isEmpty() || full.equals(entry) || full.startsWith(entry + ".")) {
                    sum += sizes.size(full);
                }
            }
        }
        return sum;
    }

    /**
     * The main device of a plan: {@link PlanOptions#executionDevice()} when set, else the first GPU among
     * {@code devices}, else the CPU (as {@code Dispatcher} picks it from the planned map).
     */
    static Device mainDevice(Collection<Device> devices, PlanOptions options) {
        if (options.executionDevice != null) {
            return options.executionDevice;
        }
        for (Device d : devices) {
            if (d.isCuda()) {
                return d;
            }
        }
        return Device.CPU;
    }

    /** Sizes of everything at the precision of {@code executing} (accelerate's sizes when it has none). */
    static ModuleSizes sizesFor(Module model, PlanOptions options, Device executing) {
        Precision p = options.precisionOf(executing);
        return ModuleSizes.compute(model, options.dtypeBytes, options.specialBytes, false, p);
    }

    private static void warnAboutBuffers(MaxMemory budget, Map<Device, Double> used, Map<Device, Double> buffers,
            List<Device> gpus, boolean offloadBuffers) {
        double offloaded = buffers.getOrDefault(Device.CPU, 0.0) + buffers.getOrDefault(Device.DISK, 0.0);
        if (offloaded <= 0 || offloadBuffers) {
            return;
        }
        boolean fits = false;
        for (Device d : budget.devices()) {
            if (d.isCuda() && budget.get(d) >= offloaded + used.getOrDefault(d, 0.0)) {
                fits = true;
                break;
            }
        }
        if (!gpus.isEmpty() && !fits) {
            LOG.warn("Current model requires {} bytes of buffer for offloaded layers, which seems does not fit any"
                    + " GPU's remaining memory. If you are experiencing a OOM later, please consider using"
                    + " offload_buffers=True.", MaxMemory.formatBytes(offloaded));
        }
    }

    /** Tie partners of {@code name} outside it, with accelerate's substring containment test. */
    private static List<String> outsideTies(String name, List<List<String>> tiedGroups) {
        List<String> out = new ArrayList<>();
        String needle = name + ".";
        for (List<String> group : tiedGroups) {
            boolean any = false;
            boolean all = true;
            for (String k : group) {
                boolean inside = (k + ".").contains(needle);
                any |= inside;
                all &= inside;
            }
            if (any && !all) {
                for (String k : group) {
                    if (!(k + ".").contains(needle)) {
                        out.add(k);
                    }
                }
            }
        }
        return out;
    }

    /** For each tied parameter, the first work entry whose name is its dotted prefix. */
    private static List<Entry> tiedEntries(List<String> tiedParams, List<Entry> work, String current) {
        List<Entry> out = new ArrayList<>();
        for (String p : tiedParams) {
            Entry found = null;
            for (Entry e : work) {
                if (p.startsWith(e.name + ".")) {
                    found = e;
                    break;
                }
            }
            if (found == null) {
                // accelerate reaches this when its substring test pairs names wrongly (e.g. "1" inside "11.weight").
                throw new DeviceMapException("IndexError", "Cannot place '" + current + "' with its tied parameter '"
                        + p + "': no module still to be placed holds it (accelerate's substring test on tied names"
                        + " fails here with IndexError)", "list index out of range");
            }
            out.add(found);
        }
        return out;
    }

    private static Entry fallback(List<Entry> modules, ModuleSizes sizes, double limit, List<String> noSplit,
            List<List<String>> tiedGroups, java.util.function.ToDoubleFunction<String> extraOf) {
        if (limit < 0) {
            return null; // accelerate's convert_file_size_to_int rejects a negative limit: no fallback
        }
        List<Entry> search = new ArrayList<>(modules);
        Entry found = null;
        while (!search.isEmpty()) {
            Entry e = search.remove(0);
            List<String> tiedParams = outsideTies(e.name, tiedGroups);
            List<Entry> tied = tiedEntries(tiedParams, search, e.name);
            double withTies = sizes.size(e.name) + extraOf.applyAsDouble(e.name);
            for (int i = 0; i < tiedParams.size(); i++) {
                withTies += sizes.size(tied.get(i).name) - sizes.size(tiedParams.get(i));
            }
            if (withTies <= limit) {
                found = e;
                break;
            }
            if (!e.splittable(noSplit)) {
                continue;
            }
            List<Entry> next = directMembers(e.name, e.module, false);
            next.addAll(search);
            search = next;
        }
        if (found == null) {
            return null;
        }
        String name = found.name;
        for (int i = 0; i < name.length(); i++) {
            if (name.charAt(i) != '.') {
                continue;
            }
            String parent = name.substring(0, i);
            int idx = indexOf(modules, parent);
            if (idx >= 0) {
                Entry p = modules.remove(idx);
                modules.addAll(idx, directMembers(parent, p.module, false));
            }
        }
        int target = indexOf(modules, name);
        return modules.remove(target);
    }

    private static int indexOf(List<Entry> work, String name) {
        for (int i = 0; i < work.size(); i++) {
            if (work.get(i).name.equals(name)) {
                return i;
            }
        }
        return -1;
    }

    /** A module's own parameters, then its children, then (for the root only) its own buffers. */
    private static List<Entry> directMembers(String prefix, Module m, boolean withBuffers) {
        String p = prefix.isEmpty() ? "" : prefix + ".";
        List<Entry> out = new ArrayList<>();
        m.parameters().forEach((n, t) -> out.add(new Entry(p + n, null, t)));
        m.children().forEach((n, c) -> out.add(new Entry(p + n, c, null)));
        if (withBuffers) {
            m.buffers().forEach((n, t) -> out.add(new Entry(p + n, null, t)));
        }
        return out;
    }

    private static List<Entry> modulesOnly(List<Entry> work) {
        return work.stream().filter(Entry::isModule).collect(Collectors.toList());
    }

    private static LargestLayer maxLayer(List<Entry> entries, ModuleSizes sizes, Collection<String> noSplit) {
        double max = 0;
        List<String> names = new ArrayList<>();
        List<Entry> todo = new ArrayList<>(entries);
        while (!todo.isEmpty()) {
            Entry e = todo.remove(0);
            if (!e.splittable(noSplit)) {
                double s = sizes.size(e.name);
                if (s > max) {
                    max = s;
                    names = new ArrayList<>();
                    names.add(e.name);
                } else if (s == max) {
                    names.add(e.name);
                }
            } else {
                List<Entry> children = new ArrayList<>();
                String p = e.name + ".";
                e.module.children().forEach((n, c) -> children.add(new Entry(p + n, c, null)));
                children.addAll(todo);
                todo = children;
            }
        }
        return new LargestLayer(max, names);
    }

    /**
     * The largest layer of {@code model} as the planner first sees it: the root's parameters, children and buffers
     * expanded down to modules without children or of a no-split class.
     */
    public static LargestLayer largestLayer(Module model, ModuleSizes sizes, Collection<String> noSplitModuleClasses) {
        return maxLayer(directMembers("", model, true), sizes, noSplitModuleClasses);
    }

    /**
     * accelerate's {@code clean_device_map}: wherever every entry below a prefix has the same device and there is
     * more than one, they become one entry for the prefix (appended at the end).
     */
    public static DeviceMap cleanDeviceMap(DeviceMap map) {
        Map<String, Device> m = new LinkedHashMap<>(map.asMap());
        clean(m, "");
        return DeviceMap.of(m);
    }

    static <V> void clean(Map<String, V> map, String moduleName) {
        String prefix = moduleName.isEmpty() ? "" : moduleName + ".";
        List<String> keys = map.keySet().stream().filter(k -> k.startsWith(prefix)).collect(Collectors.toList());
        Set<V> values = new LinkedHashSet<>();
        keys.forEach(k -> values.add(map.get(k)));
        if (values.size() == 1 && keys.size() > 1) {
            keys.forEach(map::remove);
            map.put(moduleName, values.iterator().next());
        }
        int depth = moduleName.isEmpty() ? 1 : moduleName.split("\\.", -1).length + 1;
        Set<String> children = new LinkedHashSet<>();
        for (String k : map.keySet()) {
            if (k.startsWith(prefix) && k.length() > moduleName.length()) {
                String[] parts = k.split("\\.", -1);
                children.add(String.join(".", java.util.Arrays.copyOf(parts, Math.min(depth, parts.length))));
            }
        }
        for (String child : children) {
            clean(map, child);
        }
    }

    /** Python's float floor division (and exact integer division when both are integral). */
    static double floorDiv(double a, double b) {
        if (a == Math.rint(a) && b == Math.rint(b) && Math.abs(a) < 0x1p53 && Math.abs(b) < 0x1p53) {
            return Math.floorDiv((long) a, (long) b);
        }
        double mod = a % b;
        double div = (a - mod) / b;
        if (mod != 0 && (b < 0) != (mod < 0)) {
            div -= 1.0;
        }
        double floor = Math.floor(div);
        if (div - floor > 0.5) {
            floor += 1.0;
        }
        return floor;
    }

    private static double truncate(double v) {
        return v < 0 ? Math.ceil(v) : Math.floor(v);
    }
}
