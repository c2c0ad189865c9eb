package io.github.bigmodel.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.github.bigmodel.chatglm.ChatGLMConfig;
import io.github.bigmodel.chatglm.ChatGLMFamily;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.MemorySize;
import io.github.bigmodel.core.quant.Precision;
import io.github.bigmodel.dispatch.StoredPrecisions;
import io.github.bigmodel.dispatch.plan.DeviceInventory;
import io.github.bigmodel.dispatch.plan.DeviceMapPlanner;
import io.github.bigmodel.dispatch.plan.DevicePlan;
import io.github.bigmodel.dispatch.plan.HostBudgets;
import io.github.bigmodel.dispatch.plan.PipelinePlan;
import io.github.bigmodel.dispatch.plan.Strategy;
import io.github.bigmodel.dispatch.plan.MaxMemory;
import io.github.bigmodel.dispatch.plan.PlanOptions;
import io.github.bigmodel.safetensors.Checkpoint;
import io.github.bigmodel.safetensors.CheckpointException;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.Callable;
import io.github.bigmodel.dispatch.plan.DeviceMemory;
import io.github.bigmodel.dispatch.plan.MemoryReservation;
import picocli.CommandLine.ArgGroup;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/**
 * {@code bigmodel plan}: where each module of a model would go, and how much memory each device needs, without
 * loading weights.
 *
 * <pre>
 * bigmodel plan --preset chatglm3-6b --dtype float16 --max-memory "0=10GiB,cpu=30GiB"
 * bigmodel plan --model path/to/chatglm2-6b --strategy sequential --json
 * bigmodel plan --preset chatglm3-6b --max-memory "0=10GiB,cpu=64GiB" --context 8192 --batch 1
 * bigmodel plan --preset chatglm-6b --host box-a=cuda:0:6GiB,cpu:8GiB --host box-b=cpu:16GiB
 * </pre>
 */
@Command(name = "plan", description = "Plan a device map without loading weights.")
final class PlanCommand implements Callable<Integer> {

    static final class Source {
        @Option(names = "--preset", paramLabel = "NAME",
                description = "A built-in real config: chatglm-6b, chatglm2-6b, chatglm3-6b, chatglm3-6b-32k, "
                        + "chatglm3-6b-128k.")
        String preset;

        @Option(names = "--model", paramLabel = "DIR", description = "A model folder with config.json.")
        Path model;

        @Option(names = "--config", paramLabel = "FILE", description = "A config.json.")
        Path config;
    }

    @ArgGroup(exclusive = true, multiplicity = "1")
    Source source;

    @Option(names = "--dtype", paramLabel = "DTYPE", defaultValue = "float16",
            description = "float32, float16 or bfloat16 (default: ${DEFAULT-VALUE}); int8 or int4 mean THUDM's "
                    + "recipe, --precision int8/int4 with everything else in float16.")
    String dtype;

    @Mixin
    PrecisionOptions precisions = new PrecisionOptions();

    @Option(names = "--max-memory", paramLabel = "BUDGETS",
            description = "Per-device budgets, e.g. \"0=10GiB,1=10GiB,cpu=30GiB\" (keys: GPU index, cuda:N, cpu, "
                    + "disk). Default: this machine's free GPU memory and available RAM.")
    String maxMemory;

    @Option(names = "--host", paramLabel = "NAME=BUDGETS",
            description = "A host of a pipeline, repeated once per host in pipeline order: NAME=DEVICE:SIZE,... with "
                    + "devices cuda:N (or N) and cpu, and 'disk' to let the host offload to its disk, e.g. "
                    + "box-a=cuda:0:6GiB,cpu:8GiB. Each host gets a run of consecutive whole blocks; replaces "
                    + "--max-memory.")
    List<String> hosts;

    @Option(names = "--no-split-module-classes", paramLabel = "CLASS", split = ",",
            description = "Module classes never split across devices (default: the model's own).")
    List<String> noSplitModuleClasses;

    @Option(names = "--strategy", paramLabel = "NAME", defaultValue = "auto",
            description = "auto, balanced, balanced_low_0 or sequential (default: ${DEFAULT-VALUE}).")
    String strategy;

    @Option(names = "--json", description = "Print {\"device_map\", \"max_memory\", \"device_bytes\"} as JSON "
            + "(with --context, also \"device_memory\": weights, kv_cache, workspace, offload_buffer, free per device).")
    boolean json;

    @Mixin
    ContextOptions contextOptions;

    @Spec
    CommandSpec spec;

    @Override
    public Integer call() throws Exception {
        ChatGLMFamily family = source.preset != null ? ChatGLMFamily.ofPreset(source.preset)
                : source.model != null ? ChatGLMFamily.ofFolder(source.model)
                : ChatGLMFamily.of(ChatGLMConfig.fromJson(source.config));
        ChatGLMConfig config = family.config();
        Sizing sizing = sizing(dtype, precisions);
        // Built on meta in the float dtype; a pre-quantized folder's layers are planned as stored, as loading does.
        ChatGLMLanguageModel model = family.createModel(sizing.floatDtype());
        if (source.model != null) {
            planStored(model, source.model, sizing.floatDtype());
        }
        HostBudgets hostBudgets = null;
        if (hosts != null) {
            if (maxMemory != null) {
                throw new IllegalArgumentException("--host and --max-memory exclude each other: give each host's"
                        + " budgets in its --host (e.g. --host box-a=cuda:0:6GiB,cpu:8GiB)");
            }
            hostBudgets = HostBudgets.parse(hosts);
        }
        MaxMemory budget = hostBudgets != null ? null
                : maxMemory == null ? MaxMemory.defaults(DeviceInventory.system()) : MaxMemory.parse(maxMemory);
        // The cache is held in the float dtype activations use (float16 when int8/int4 weights are planned).
        MemoryReservation reservation = contextOptions.reservation(spec.commandLine(), config, model.dtype());
        PlanOptions options = PlanOptions.builder()
                .noSplitModuleClasses(noSplitModuleClasses)
                .dtype(sizing.floatDtype())
                .gpuPrecision(sizing.gpu())
                .cpuPrecision(sizing.cpu())
                .reservation(reservation)
                .hosts(hostBudgets)
                .build();
        if (hostBudgets != null) {
            PipelinePlan pipeline = DeviceMapPlanner.planHosts(model, Strategy.parse(strategy), options);
            PrintWriter out = spec.commandLine().getOut();
            if (json) {
                printPipelineJson(out, pipeline, contextOptions.given());
            } else {
                printPipeline(out, family, sizing.describe(), model, pipeline, reservation, contextOptions.given());
            }
            return 0;
        }
        // After every flag was checked: a refused command line gets its one error line only.
        CliMessages.unavailableGpus(budget, DeviceInventory.system(), spec.commandLine().getErr(),
                "planning it as asked");
        DevicePlan plan = DeviceMapPlanner.plan(model, strategy, budget, options);
        Map<String, Device> map = plan.deviceMap().inModuleOrder(model).asMap();
        Map<Device, Double> perDevice = weightsPerDevice(plan);
        String target = sizing.describe();
        PrintWriter out = spec.commandLine().getOut();
        if (json) {
            printJson(out, map, plan, perDevice, contextOptions.given());
        } else if (contextOptions.given()) {
            printMemoryTable(out, family, target, map, plan, reservation);
        } else {
            printTable(out, family, target, map, plan, perDevice);
        }
        return 0;
    }

    /** The float dtype of the model and the precision of each kind of device, from --dtype and the precision flags. */
    record Sizing(DType floatDtype, Precision gpu, Precision cpu) {
        String describe() {
            String f = floatDtype.torchName();
            if (gpu == null && cpu == null) {
                return f;
            }
            String g = gpu == null ? f : gpu.name().toLowerCase(Locale.ROOT);
            String c = cpu == null ? f : cpu.name().toLowerCase(Locale.ROOT);
            return f + (g.equals(c) ? " + " + g + " linears" : " + linears " + g + " on GPUs, " + c + " on the CPU");
        }
    }

    /**
     * {@code --dtype int8/int4} is THUDM's recipe ({@code model.half().quantize(bits)}): {@code --precision} int8/int4
     * with everything else in float16, exactly what loading with {@code --dtype float16 --precision int4} holds.
     */
    static Sizing sizing(String dtypeText, PrecisionOptions flags) {
        DType d = DType.parse(dtypeText);
        if (d.isFloatingPoint()) {
            return new Sizing(d, flags.gpu(), flags.cpu());
        }
        if (d != DType.INT8 && d != DType.INT4) {
            throw new IllegalArgumentException("--dtype: " + dtypeText + " is no weights dtype: use float32, float16,"
                    + " bfloat16, or --precision int8/int4");
        }
        if (flags.given()) {
            throw new IllegalArgumentException("--dtype " + dtypeText + " already means --precision "
                    + d.torchName() + " with float16 elsewhere: give --dtype float16 with --precision/--gpu-precision/"
                    + "--cpu-precision instead");
        }
        Precision p = Precision.of(d);
        return new Sizing(DType.FLOAT16, p, p);
    }

    /** Plans, on meta, the layers a pre-quantized folder stores as int8/int4 codes (header only, nothing read). */
    private static void planStored(ChatGLMLanguageModel model, Path dir, DType floatDtype) {
        Checkpoint checkpoint;
        try {
            checkpoint = Checkpoint.open(dir);
        } catch (CheckpointException e) {
            if (e.reason() == CheckpointException.Reason.UNKNOWN_FORMAT) {
                return; // a folder with only config.json plans like --config
            }
            throw e;
        }
        try (checkpoint) {
            StoredPrecisions.plan(model, StoredPrecisions.of(model, checkpoint), floatDtype);
        }
    }

    private static void printJson(PrintWriter out, Map<String, Device> map, DevicePlan plan,
            Map<Device, Double> perDevice, boolean withMemory) throws Exception {
        ObjectMapper mapper = new ObjectMapper();
        ObjectNode root = mapper.createObjectNode();
        ObjectNode dm = root.putObject("device_map");
        map.forEach((name, device) -> putDevice(dm, name, device));
        putPlan(root, plan, perDevice, withMemory);
        out.println(mapper.writerWithDefaultPrettyPrinter().writeValueAsString(root));
    }

    /** Weights per device at the precision of the device each module executes on: what loading holds. */
    private static Map<Device, Double> weightsPerDevice(DevicePlan plan) {
        Map<Device, Double> perDevice = new TreeMap<>();
        for (DeviceMemory m : plan.memory().values()) {
            if (m.weightBytes() > 0 || plan.deviceMap().devices().contains(m.device())) {
                perDevice.put(m.device(), m.weightBytes());
            }
        }
        return perDevice;
    }

    /**
     * The pipeline as JSON: the host-qualified {@code device_map}, then per host in pipeline order its units, first
     * and last, weights and the figures of a one-machine plan ({@code max_memory}, {@code device_bytes}, with
     * {@code --context} also {@code device_memory}).
     */
    private static void printPipelineJson(PrintWriter out, PipelinePlan pipeline, boolean withMemory)
            throws Exception {
        ObjectMapper mapper = new ObjectMapper();
        ObjectNode root = mapper.createObjectNode();
        ObjectNode dm = root.putObject("device_map");
        pipeline.deviceMap().placements().forEach((name, p) -> dm.put(name, p.toString()));
        com.fasterxml.jackson.databind.node.ArrayNode hostsNode = root.putArray("hosts");
        for (PipelinePlan.Stage s : pipeline.stages()) {
            ObjectNode h = hostsNode.addObject();
            h.put("host", s.host());
            com.fasterxml.jackson.databind.node.ArrayNode modules = h.putArray("modules");
            s.modules().forEach(modules::add);
            if (s.isEmpty()) {
                h.putNull("first");
                h.putNull("last");
                h.put("weights", 0);
                continue;
            }
            h.put("first", s.first());
            h.put("last", s.last());
            putNumber(h, "weights", s.weightBytes());
            putPlan(h, s.plan(), weightsPerDevice(s.plan()), withMemory);
        }
        out.println(mapper.writerWithDefaultPrettyPrinter().writeValueAsString(root));
    }

    private static void putPlan(ObjectNode root, DevicePlan plan, Map<Device, Double> perDevice, boolean withMemory) {
        MaxMemory budget = plan.budget();
        ObjectNode mm = root.putObject("max_memory");
        budget.asMap().forEach((device, bytes) -> putNumber(mm, key(device), bytes));
        ObjectNode db = root.putObject("device_bytes");
        perDevice.forEach((device, bytes) -> putNumber(db, key(device), bytes));
        if (withMemory) {
            ObjectNode dmem = root.putObject("device_memory");
            for (DeviceMemory m : plan.memory().values()) {
                ObjectNode d = dmem.putObject(key(m.device()));
                putNumber(d, "weights", m.weightBytes());
                d.put("kv_cache", m.reservedBytes());
                d.put("workspace", m.workspaceBytes());
                putNumber(d, "offload_buffer", m.offloadBuffer());
                if (Double.isInfinite(m.budgetBytes())) {
                    d.putNull("free");
                } else {
                    putNumber(d, "free", m.freeBytes());
                }
            }
        }
    }

    /**
     * The pipeline per host, in pipeline order: what it holds (its run of units, layer ranges collapsed) and its
     * weights, then its devices as the one-machine table shows them (with {@code --context}, the memory columns).
     */
    private static void printPipeline(PrintWriter out, ChatGLMFamily family, String target,
            ChatGLMLanguageModel model, PipelinePlan pipeline, MemoryReservation reservation, boolean withMemory) {
        out.printf(Locale.ROOT, "model: %s, %d layers, %s; weights %s in %s%n", family.displayName(),
                family.config().numLayers(), target, MemorySize.format(pipeline.modelSize()), target);
        if (withMemory) {
            out.printf(Locale.ROOT, "room for generation: %s, %s in all; workspace %s per executing device%n",
                    reservation.description(), MemorySize.format(reservation.totalModuleBytes()),
                    MemorySize.format(reservation.workspaceBytes()));
        }
        out.printf(Locale.ROOT, "pipeline: %s (%d of %d hosts hold a stage)%n",
                String.join(" -> ", pipeline.deviceMap().hosts()), pipeline.activeStages().size(),
                pipeline.stages().size());
        for (PipelinePlan.Stage s : pipeline.stages()) {
            if (s.isEmpty()) {
                List<String> budget = new ArrayList<>();
                s.budget().asMap().forEach((d, v) -> budget.add(d + " " + MemorySize.format(v)));
                out.printf(Locale.ROOT, "host %s: nothing (budget %s%s)%n", s.host(), String.join(", ", budget),
                        s.usesDisk() ? ", disk" : "");
                continue;
            }
            out.printf(Locale.ROOT, "host %s: weights %s, holds %s%n", s.host(), MemorySize.format(s.weightBytes()),
                    summarize(s.modules()));
            DevicePlan plan = s.plan();
            Map<Device, List<String>> byDevice = new LinkedHashMap<>();
            plan.deviceMap().inModuleOrder(model).asMap()
                    .forEach((name, device) -> byDevice.computeIfAbsent(device, d -> new ArrayList<>()).add(name));
            if (withMemory) {
                String row = "  %-8s  %11s  %11s  %11s  %11s  %11s  %11s  %s%n";
                out.printf(Locale.ROOT, row, "device", "budget", "weights", "KV cache", "workspace", "offload buf",
                        "free", "modules");
                for (DeviceMemory m : plan.memory().values()) {
                    boolean unlimited = Double.isInfinite(m.budgetBytes());
                    out.printf(Locale.ROOT, row, m.device(),
                            unlimited ? "unlimited" : MemorySize.format(m.budgetBytes()),
                            MemorySize.format(m.weightBytes()), MemorySize.format(m.reservedBytes()),
                            MemorySize.format(m.workspaceBytes()), MemorySize.format(m.offloadBuffer()),
                            unlimited ? "-" : MemorySize.format(m.freeBytes()),
                            summarize(byDevice.getOrDefault(m.device(), List.of())));
                }
            } else {
                out.printf(Locale.ROOT, "  %-8s  %12s  %12s  %s%n", "device", "budget", "weights", "modules");
                for (Map.Entry<Device, Double> e : weightsPerDevice(plan).entrySet()) {
                    Device d = e.getKey();
                    String budget = plan.budget().contains(d) ? MemorySize.format(plan.budget().get(d)) : "unlimited";
                    out.printf(Locale.ROOT, "  %-8s  %12s  %12s  %s%n", d, budget, MemorySize.format(e.getValue()),
                            summarize(byDevice.getOrDefault(d, List.of())));
                }
            }
        }
    }

    private static String key(Device device) {
        return String.valueOf(device.toJsonValue());
    }

    private static void putDevice(ObjectNode node, String name, Device device) {
        Object v = device.toJsonValue();
        if (v instanceof Integer) {
            node.put(name, (Integer) v);
        } else {
            node.put(name, (String) v);
        }
    }

    private static void putNumber(ObjectNode node, String key, double bytes) {
        if (bytes == Math.rint(bytes) && Math.abs(bytes) < 0x1p53) {
            node.put(key, (long) bytes);
        } else {
            node.put(key, bytes);
        }
    }

    private static void printTable(PrintWriter out, ChatGLMFamily family, String target, Map<String, Device> map,
            DevicePlan plan, Map<Device, Double> perDevice) {
        out.printf(Locale.ROOT, "model: %s, %d layers, %s; weights %s in %s%n", family.displayName(),
                family.config().numLayers(), target, MemorySize.format(plan.modelSize()), target);
        Map<Device, List<String>> byDevice = new LinkedHashMap<>();
        map.forEach((name, device) -> byDevice.computeIfAbsent(device, d -> new ArrayList<>()).add(name));
        out.printf(Locale.ROOT, "%-8s  %12s  %12s  %s%n", "device", "budget", "weights", "modules");
        for (Map.Entry<Device, Double> e : perDevice.entrySet()) {
            Device d = e.getKey();
            String budget = plan.budget().contains(d) ? MemorySize.format(plan.budget().get(d)) : "unlimited";
            out.printf(Locale.ROOT, "%-8s  %12s  %12s  %s%n", d, budget, MemorySize.format(e.getValue()),
                    summarize(byDevice.getOrDefault(d, List.of())));
        }
    }

    /**
     * Per device: budget, weights, KV cache at the context, workspace of one step, offload buffer (the largest
     * offloaded layer, brought to the main device to run), free, then the modules placed there.
     */
    private static void printMemoryTable(PrintWriter out, ChatGLMFamily family, String target,
            Map<String, Device> map, DevicePlan plan, MemoryReservation reservation) {
        out.printf(Locale.ROOT, "model: %s, %d layers, %s; weights %s in %s%n", family.displayName(),
                family.config().numLayers(), target, MemorySize.format(plan.modelSize()), target);
        out.printf(Locale.ROOT, "room for generation: %s, %s in all; workspace %s per executing device%n",
                reservation.description(), MemorySize.format(reservation.totalModuleBytes()),
                MemorySize.format(reservation.workspaceBytes()));
        Map<Device, List<String>> byDevice = new LinkedHashMap<>();
        map.forEach((name, device) -> byDevice.computeIfAbsent(device, d -> new ArrayList<>()).add(name));
        String row = "%-8s  %11s  %11s  %11s  %11s  %11s  %11s  %s%n";
        out.printf(Locale.ROOT, row, "device", "budget", "weights", "KV cache", "workspace", "offload buf", "free",
                "modules");
        for (DeviceMemory m : plan.memory().values()) {
            Device d = m.device();
            boolean unlimited = Double.isInfinite(m.budgetBytes());
            out.printf(Locale.ROOT, row, d, unlimited ? "unlimited" : MemorySize.format(m.budgetBytes()),
                    MemorySize.format(m.weightBytes()), MemorySize.format(m.reservedBytes()),
                    MemorySize.format(m.workspaceBytes()), MemorySize.format(m.offloadBuffer()),
                    unlimited ? "-" : MemorySize.format(m.freeBytes()),
                    summarize(byDevice.getOrDefault(d, List.of())));
        }
    }

    /** "transformer.encoder.layers.0..13" for runs of consecutive numbered layers, else the names. */
    static String summarize(List<String> names) {
        List<String> parts = new ArrayList<>();
        int i = 0;
        while (i < names.size()) {
            String name = names.get(i);
            int dot = name.lastIndexOf('.');
            String prefix = dot < 0 ? null : name.substring(0, dot + 1);
            Integer first = dot < 0 ? null : parseIndex(name.substring(dot + 1));
            int j = i;
            if (first != null) {
                while (j + 1 < names.size() && names.get(j + 1).startsWith(prefix)
                        && Integer.valueOf(first + (j + 1 - i)).equals(parseIndex(names.get(j + 1)
                        .substring(prefix.length())))) {
                    j++;
                }
            }
            parts.add(j > i ? prefix + first + ".." + (first + (j - i)) : name);
            i = j + 1;
        }
        return String.join(", ", parts);
    }

    private static Integer parseIndex(String s) {
        if (s.isEmpty() || s.length() > 6 || !s.chars().allMatch(Character::isDigit)) {
            return null;
        }
        return Integer.parseInt(s);
    }
}
