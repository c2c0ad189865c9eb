package io.github.bigmodel.dispatch.plan;

import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.MemorySize;
import io.github.bigmodel.core.Module;
import io.github.bigmodel.core.Parameter;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Hosts as one level above devices: cuts the model's planning units (whole no-split blocks and leaf modules, in
 * module order) into consecutive runs, one per host in pipeline order, and plans each run over its host's devices
 * with {@link DeviceMapPlanner} itself (the strategy, budgets, reserves and ties of one machine). A run "fits" a
 * host when that plan puts nothing on disk. Hosts are filled in order, each taking the longest run that fits, in
 * up to three rounds, each used only when the one before cannot hold the model: (1) memory that executes: a host's
 * GPUs, or its CPU when it has no GPU; (2) every memory budget, so a host with a GPU also offloads to its CPU
 * memory; (3) disk: the last host that may use its disk takes what the others cannot hold (the hosts before it
 * filled in order, the hosts after it taking the longest runs that end the model), its overflow going to disk as
 * on one machine.
 */
final class HostPlanner {

    private static final Logger LOG = LoggerFactory.getLogger(HostPlanner.class);

    private final Module model;
    private final Strategy strategy;
    private final PlanOptions options;
    private final HostBudgets hosts;
    private final List<String> units;
    private final Map<String, DevicePlan> trials = new HashMap<>();
    /** 1: executing memory only; 2: CPU offload next to GPUs too (and disk for the disk host, see {@link #run}). */
    private int round = 1;
    /** Sizes of the whole model for messages, at the last host's main device precision; made when first needed. */
    private ModuleSizes unitSizes;

    private HostPlanner(Module model, Strategy strategy, PlanOptions options) {
        this.model = model;
        this.strategy = strategy;
        this.options = options;
        this.hosts = options.hosts;
        this.units = units(model, options.noSplit);
    }

    static PipelinePlan plan(Module model, Strategy strategy, PlanOptions planOptions) {
        if (planOptions.hosts == null) {
            throw new IllegalArgumentException("planHosts needs PlanOptions.hosts(...): the hosts and their budgets");
        }
        return new HostPlanner(model, strategy == null ? Strategy.AUTO : strategy, planOptions.forModel(model)).run();
    }

    private PipelinePlan run() {
        List<String> names = hosts.hosts();
        List<String> warnings = new ArrayList<>();
        Map<String, int[]> runs = new LinkedHashMap<>();
        int end = fillForward(names, 0, runs, warnings);
        if (end < units.size()) {
            // The GPUs cannot hold it: hosts with a GPU offload to their CPU memory too.
            round = 2;
            warnings.clear();
            runs.clear();
            end = fillForward(names, 0, runs, warnings);
        }
        String diskHost = null;
        if (end < units.size()) {
            for (String h : names) {
                if (hosts.mayUseDisk(h)) {
                    diskHost = h;
                }
            }
            if (diskHost == null) {
                throw shortfall(end, runs);
            }
            // Memory alone is not enough: the last host that may use its disk takes what the others cannot hold.
            warnings.clear();
            runs.clear();
            int d = names.indexOf(diskHost);
            int from = fillForward(names.subList(0, d), 0, runs, warnings);
            int to = units.size();
            Map<String, int[]> after = new LinkedHashMap<>();
            for (int i = names.size() - 1; i > d; i--) {
                String h = names.get(i);
                int start = extendBackward(h, from, to);
                if (start == to) {
                    warnings.add(to == from ? "Host " + h + " holds nothing: the other hosts hold the whole model"
                            : emptyHostWarning(h, to - 1));
                }
                after.put(h, new int[] {start, to});
                to = start;
            }
            runs.put(diskHost, new int[] {from, to});
            for (int i = d + 1; i < names.size(); i++) {
                runs.put(names.get(i), after.get(names.get(i)));
            }
        }
        warnings.forEach(w -> LOG.warn("{}", w));

        List<PipelinePlan.Stage> stages = new ArrayList<>();
        Map<String, HostDevice> placements = new LinkedHashMap<>();
        for (String h : names) {
            int[] r = runs.get(h);
            List<String> held = units.subList(r[0], r[1]);
            DevicePlan plan = null;
            if (!held.isEmpty()) {
                plan = planRun(h, r[0], r[1], options);
                plan.deviceMap().asMap().forEach((k, dev) -> placements.put(k, new HostDevice(h, dev)));
            }
            stages.add(new PipelinePlan.Stage(h, held, plan, hosts.budget(h), hosts.mayUseDisk(h)));
        }
        if (options.cleanResult) {
            DeviceMapPlanner.clean(placements, "");
        }
        DeviceMap map = DeviceMap.ofPlacements(placements).inModuleOrder(model);
        MaxMemory first = hosts.budget(names.get(0));
        double modelSize = DeviceMapPlanner.sizesFor(model, options,
                DeviceMapPlanner.mainDevice(first.devices(), options)).total();
        LOG.info("Planned a pipeline over {}: {}", map.hosts(), map);
        return new PipelinePlan(map, stages, modelSize, warnings);
    }

    /** Fills {@code names} in order from unit {@code start}, each host taking the longest run that fits it. */
    private int fillForward(List<String> names, int start, Map<String, int[]> runs, List<String> warnings) {
        int pos = start;
        for (String h : names) {
            int end = extendForward(h, pos);
            if (end == pos) {
                warnings.add(pos == units.size()
                        ? "Host " + h + " holds nothing: the hosts before it hold the whole model"
                        : emptyHostWarning(h, pos));
            }
            runs.put(h, new int[] {pos, end});
            pos = end;
        }
        return pos;
    }

    private String emptyHostWarning(String host, int unit) {
        String name = units.get(unit);
        return "Host " + host + " holds nothing: its budget (" + hosts.describe(host) + (round == 1
                && !hosts.budget(host).gpus().isEmpty() ? ", GPUs only while they suffice" : "") + ") cannot hold '"
                + name + "' (" + MemorySize.format(unitSizes().size(name)) + ") beside the reserve its devices keep";
    }

    /** The largest end such that units {@code from..end-1} fit {@code host} (galloping, then bisection). */
    private int extendForward(String host, int from) {
        return gallop(from, units.size(), to -> fits(host, from, to));
    }

    /** The smallest start, at least {@code floor}, such that units {@code start..to-1} fit {@code host}. */
    private int extendBackward(String host, int floor, int to) {
        return gallop(to, floor, start -> fits(host, start, to));
    }

    /**
     * The edge farthest from {@code anchor} towards {@code limit} for which the run between them still fits
     * ({@code fitsTo}), or {@code anchor} when not even one unit does: doubling steps until a run does not fit, then
     * bisection, so a host's run costs O(log n) trial plans. Fitting is monotone (a shorter run fits when a longer
     * one does), which the search relies on.
     */
    private static int gallop(int anchor, int limit, java.util.function.IntPredicate fitsTo) {
        int dir = limit >= anchor ? 1 : -1;
        if (anchor == limit || !fitsTo.test(anchor + dir)) {
            return anchor;
        }
        int good = anchor + dir;
        int step = 1;
        int bad = -1;
        while (good != limit) {
            int next = dir > 0 ? Math.min(limit, good + step) : Math.max(limit, good - step);
            if (fitsTo.test(next)) {
                good = next;
                step *= 2;
            } else {
                bad = next;
                break;
            }
        }
        if (bad < 0) {
            return good;
        }
        while (Math.abs(bad - good) > 1) {
            int mid = (good + bad) >>> 1;
            if (fitsTo.test(mid)) {
                good = mid;
            } else {
                bad = mid;
            }
        }
        return good;
    }

    /** Whether {@code host}'s memory holds units {@code from..to-1}: its plan puts nothing on disk. */
    private boolean fits(String host, int from, int to) {
        DevicePlan p = trials.computeIfAbsent(round + "/" + host + "/" + from + "/" + to,
                k -> planRun(host, from, to, options.toBuilder().offloadBuffers(true).build()));
        return !p.deviceMap().asMap().containsValue(Device.DISK);
    }

    /** The budget {@code host} plans under in this round: in round 1 a host with GPUs gives only their budgets. */
    private MaxMemory roundBudget(String host) {
        MaxMemory full = hosts.budget(host);
        if (round > 1 || full.gpus().isEmpty()) {
            return full;
        }
        Map<Device, Double> gpus = new LinkedHashMap<>();
        full.gpus().forEach(d -> gpus.put(d, full.get(d)));
        return MaxMemory.ofBytes(gpus);
    }

    /**
     * The plan of units {@code from..to-1} over {@code host}'s devices: {@link DeviceMapPlanner#budgetFor} and
     * {@link DeviceMapPlanner#planWithin} on a model holding only those units, with the reserved bytes of the
     * modules among them. Entries stay unmerged (merging happens on the whole pipeline's map).
     */
    private DevicePlan planRun(String host, int from, int to, PlanOptions base) {
        Module view = view(units.subList(from, to));
        PlanOptions o = base.toBuilder().hosts(null).executionDevice(null).cleanResult(false)
                .reservation(reservationOf(units.subList(from, to))).build();
        MaxMemory budget = DeviceMapPlanner.budgetFor(view, strategy, roundBudget(host), o);
        DevicePlan p = DeviceMapPlanner.planWithin(view, budget, o);
        return new DevicePlan(unitsOf(p.deviceMap(), units.subList(from, to)), p.budget(), p.modelSize(),
                p.largestLayer(), p.memory());
    }

    /**
     * The view's map in the model's names: an entry for a stand-in container (or {@code ""}) stands for the run's
     * units below it only, so it is replaced by them; entries of units or inside units are kept.
     */
    private static DeviceMap unitsOf(DeviceMap viewMap, List<String> run) {
        Map<String, Device> out = new LinkedHashMap<>();
        viewMap.asMap().forEach((k, d) -> {
            boolean inUnit = run.stream().anyMatch(u -> k.equals(u) || k.startsWith(u + "."));
            if (inUnit) {
                out.put(k, d);
                return;
            }
            for (String u : run) {
                if (k.isEmpty() || u.startsWith(k + ".")) {
                    out.put(u, d);
                }
            }
        });
        return DeviceMap.of(out);
    }

    private MemoryReservation reservationOf(List<String> run) {
        MemoryReservation all = options.reservation;
        if (all.isEmpty()) {
            return all;
        }
        MemoryReservation.Builder b = MemoryReservation.builder(all.description()).workspace(all.workspaceBytes());
        all.moduleBytes().forEach((name, bytes) -> {
            for (String u : run) {
                if (name.equals(u) || name.startsWith(u + ".") || u.startsWith(name + ".")) {
                    b.module(name, bytes);
                    break;
                }
            }
        });
        return b.build();
    }

    private ModuleSizes unitSizes() {
        if (unitSizes == null) {
            MaxMemory last = hosts.budget(hosts.hosts().get(hosts.hosts().size() - 1));
            unitSizes = DeviceMapPlanner.sizesFor(model, options, DeviceMapPlanner.mainDevice(last.devices(), options));
        }
        return unitSizes;
    }

    private PipelineShortfallException shortfall(int end, Map<String, int[]> runs) {
        List<String> left = units.subList(end, units.size());
        double bytes = 0;
        for (String u : left) {
            bytes += unitSizes().size(u);
        }
        List<String> held = new ArrayList<>();
        runs.forEach((h, r) -> held.add(h + " " + (r[0] == r[1] ? "nothing" : r[1] - r[0] == 1 ? units.get(r[0])
                : units.get(r[0]) + " .. " + units.get(r[1] - 1))));
        return new PipelineShortfallException("The hosts cannot hold " + model.className() + ": "
                + MemorySize.format(bytes) + " of weights are left (" + left.get(0)
                + (left.size() > 1 ? " .. " + left.get(left.size() - 1) : "") + ", " + left.size()
                + " unit(s)) after " + String.join(", ", held) + ". Give the hosts about " + MemorySize.format(bytes)
                + " more (plus the reserve their devices keep for the largest layer), add a host, or let a host use"
                + " its disk (\"disk\" in --host)", bytes, left);
    }

    /**
     * The planning units of {@code model} in module order: a module's own parameters, then each child (whole when
     * it is of a no-split class or has no children, else its own units), then its own buffers. Hosts never split a
     * unit, so a block never straddles two hosts.
     */
    static List<String> units(Module model, List<String> noSplit) {
        List<String> out = new ArrayList<>();
        collect(model, "", noSplit, out);
        return out;
    }

    private static void collect(Module m, String prefix, List<String> noSplit, List<String> out) {
        String p = prefix.isEmpty() ? "" : prefix + ".";
        m.parameters().keySet().forEach(n -> out.add(p + n));
        m.children().forEach((n, c) -> {
            if (c.children().isEmpty() || noSplit.contains(c.className())) {
                out.add(p + n);
            } else {
                collect(c, p + n, noSplit, out);
            }
        });
        m.buffers().keySet().forEach(n -> out.add(p + n));
    }

    /**
     * A model holding only {@code run}, under the same names: the real modules and tensors hung on stand-in
     * containers (each reporting its real counterpart's class name). A tensor tied to one outside the run is this
     * run's own here, so a stage keeps (and is sized for) its own copy.
     */
    private Module view(List<String> run) {
        Module root = new Module(model.className()) {
            @Override
            public boolean isComputedBuffer(String stateDictName) {
                return model.isComputedBuffer(stateDictName);
            }

            @Override
            public Set<String> noSplitModuleClasses() {
                return model.noSplitModuleClasses();
            }
        };
        Map<String, Module> containers = new HashMap<>();
        containers.put("", root);
        for (String u : run) {
            int dot = u.lastIndexOf('.');
            String parent = dot < 0 ? "" : u.substring(0, dot);
            String leaf = u.substring(dot + 1);
            Module holder = container(parent, containers);
            Module real = model.findModule(u);
            if (real != null) {
                holder.registerModule(leaf, real);
                continue;
            }
            Module owner = model.module(parent);
            Parameter t = model.tensor(u);
            if (owner.parameters().containsKey(leaf)) {
                holder.registerParameter(leaf, t);
            } else {
                holder.registerBuffer(leaf, t, owner.isPersistentBuffer(leaf));
            }
        }
        return root;
    }

    private Module container(String path, Map<String, Module> containers) {
        Module c = containers.get(path);
        if (c != null) {
            return c;
        }
        int dot = path.lastIndexOf('.');
        Module parent = container(dot < 0 ? "" : path.substring(0, dot), containers);
        c = parent.registerModule(path.substring(dot + 1), new Module(model.module(path).className()));
        containers.put(path, c);
        return c;
    }
}
