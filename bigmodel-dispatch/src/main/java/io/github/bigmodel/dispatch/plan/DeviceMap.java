package io.github.bigmodel.dispatch.plan;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.Module;
import io.github.bigmodel.core.Parameter;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Comparator;
import java.util.HashMap;
import java.util.HashSet;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.stream.Collectors;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Where each part of a model goes: an ordered map from module (or tensor) names to devices, as accelerate's
 * {@code device_map} / {@code hf_device_map}. A name covers everything below it; {@code ""} is the whole model.
 *
 * <p>JSON is {@code hf_device_map}'s form: a GPU is its integer index, other devices are strings.
 *
 * <p><b>Hosts.</b> A value may name a host: {@code "box-a/cuda:0"}, {@code "box-b/cpu"} ({@link HostDevice}); such a
 * map splits the model into pipeline stages, one per host ({@link #hosts()}), and either every entry names a host or
 * none does. A plain map (no host) is the local host's, exactly as before. {@link #forHost(String)} gives the plain
 * map one host loads, where the other hosts' entries become {@code remote} ({@link Device#REMOTE}): held by another
 * stage, never loaded here.
 *
 * <pre>{@code
 * DeviceMap map = DeviceMap.fromJson("{\"transformer.embedding\": 0, \"transformer.encoder\": 1, \"lm\": \"cpu\"}");
 * map.get("transformer.encoder");        // cuda:1
 * map.toJson();                           // {"transformer.embedding":0,"transformer.encoder":1,"lm":"cpu"}
 *
 * DeviceMap hand = DeviceMap.builder(model)
 *         .put("transformer.embedding", Device.cuda(1))
 *         .layers("transformer.encoder.layers", 1, 12, Device.cuda(1))   // layers 1..12 = children 0..11
 *         .layers("transformer.encoder.layers", 13, 28, Device.cuda(0))
 *         .put("transformer.encoder.final_layernorm", Device.cuda(0))
 *         .put("transformer.output_layer", Device.cuda(0))
 *         .put("transformer.rotary_pos_emb", Device.cuda(1))
 *         .build();                        // validated against the model
 * }</pre>
 */
public final class DeviceMap {

    private static final Logger LOG = LoggerFactory.getLogger(DeviceMap.class);
    private static final ObjectMapper JSON = new ObjectMapper();

    private final Map<String, Device> entries;
    /** Entry name to host, for a host-qualified map (every entry); empty for a plain map. */
    private final Map<String, String> hostOf;

    private DeviceMap(Map<String, Device> entries) {
        this(entries, Map.of());
    }

    private DeviceMap(Map<String, Device> entries, Map<String, String> hostOf) {
        this.entries = Collections.unmodifiableMap(new LinkedHashMap<>(entries));
        this.hostOf = Collections.unmodifiableMap(new LinkedHashMap<>(hostOf));
    }

    /** A map with these entries, in this order. Meta is rejected: it holds no values. */
    public static DeviceMap of(Map<String, Device> entries) {
        for (Map.Entry<String, Device> e : entries.entrySet()) {
            if (e.getKey() == null || e.getValue() == null) {
                throw new IllegalArgumentException("device map entries must not be null: " + e);
            }
            if (e.getValue().isMeta()) {
                throw new IllegalArgumentException("Device map entry '" + e.getKey()
                        + "' is on meta, which holds no values: use a GPU, cpu or disk");
            }
        }
        return new DeviceMap(entries);
    }

    /**
     * A map whose values may name hosts ({@link HostDevice}), in this order: either every value names a host (a
     * pipeline map) or none does (a plain map, as {@link #of}).
     *
     * <pre>{@code
     * DeviceMap m = DeviceMap.ofPlacements(Map.of("embed", HostDevice.parse("box-a/cuda:0"),
     *         "head", HostDevice.parse("box-b/cpu")));
     * }</pre>
     *
     * @throws IllegalArgumentException for null names or values, or a map mixing entries with and without a host
     */
    public static DeviceMap ofPlacements(Map<String, HostDevice> placements) {
        Map<String, Device> devices = new LinkedHashMap<>();
        Map<String, String> hosts = new LinkedHashMap<>();
        String withHost = null;
        String withoutHost = null;
        for (Map.Entry<String, HostDevice> e : placements.entrySet()) {
            if (e.getKey() == null || e.getValue() == null) {
                throw new IllegalArgumentException("device map entries must not be null: " + e);
            }
            devices.put(e.getKey(), e.getValue().device());
            if (e.getValue().isLocal()) {
                withoutHost = withoutHost == null ? e.getKey() : withoutHost;
            } else {
                withHost = withHost == null ? e.getKey() : withHost;
                hosts.put(e.getKey(), e.getValue().host());
            }
        }
        if (withHost != null && withoutHost != null) {
            throw new IllegalArgumentException("Device map entry '" + withoutHost + "' (" + placements.get(withoutHost)
                    + ") names no host while '" + withHost + "' is on " + placements.get(withHost)
                    + ": in a map that names hosts every entry needs one (<host>/<device>, e.g. "
                    + placements.get(withHost).host() + "/" + placements.get(withoutHost).device() + ")");
        }
        of(devices); // the same checks as a plain map
        return new DeviceMap(devices, hosts);
    }

    /**
     * Reads {@code {"name": 0, "other": "cpu", "x": "disk"}}; values may name hosts ({@code "box-a/cuda:0"},
     * {@code "box-b/cpu"}, see {@link HostDevice}) and may be {@code "remote"}.
     *
     * @throws IllegalArgumentException naming the JSON problem or the entry whose device or host is not understood
     */
    public static DeviceMap fromJson(String json) {
        JsonNode root;
        try {
            root = JSON.readTree(json);
        } catch (JsonProcessingException e) {
            throw new IllegalArgumentException("Device map is not valid JSON (" + e.getOriginalMessage() + "): " + json,
                    e);
        }
        if (root == null || !root.isObject()) {
            throw new IllegalArgumentException("A device map must be a JSON object {name: device}, got: " + json);
        }
        Map<String, HostDevice> out = new LinkedHashMap<>();
        Iterator<Map.Entry<String, JsonNode>> it = root.fields();
        while (it.hasNext()) {
            Map.Entry<String, JsonNode> e = it.next();
            JsonNode v = e.getValue();
            HostDevice d;
            if (v.isIntegralNumber() && v.canConvertToInt()) {
                d = HostDevice.local(Device.cuda(v.intValue()));
            } else if (v.isTextual()) {
                try {
                    d = HostDevice.parse(v.textValue());
                } catch (IllegalArgumentException ex) {
                    throw new IllegalArgumentException("Device map entry '" + e.getKey() + "': " + ex.getMessage(), ex);
                }
            } else {
                throw new IllegalArgumentException("Device map entry '" + e.getKey() + "' has device " + v
                        + ": expected a GPU index or \"cpu\"/\"disk\"/\"cuda:N\"/\"remote\"/\"<host>/<device>\"");
            }
            out.put(e.getKey(), d);
        }
        return ofPlacements(out);
    }

    /**
     * {@code hf_device_map} JSON, entries in this map's order; a host-qualified entry is written
     * {@code "host/device"} (a GPU as {@code cuda:N}).
     */
    public String toJson() {
        Map<String, Object> out = new LinkedHashMap<>();
        entries.forEach((k, v) -> out.put(k, hostOf.containsKey(k) ? hostOf.get(k) + "/" + v : v.toJsonValue()));
        try {
            return JSON.writeValueAsString(out);
        } catch (JsonProcessingException e) {
            throw new IllegalStateException("Cannot write device map", e);
        }
    }

    /** Name to device, in order; in a map that names hosts, each value's device part (see {@link #placements()}). */
    public Map<String, Device> asMap() {
        return entries;
    }

    /** Name to host and device, in order; the host is null in a plain map. */
    public Map<String, HostDevice> placements() {
        Map<String, HostDevice> out = new LinkedHashMap<>();
        entries.forEach((k, d) -> out.put(k, new HostDevice(hostOf.get(k), d)));
        return Collections.unmodifiableMap(out);
    }

    /**
     * The hosts this map names, in pipeline order: the order of their first entries (a planned map is in module
     * order; for a hand-written one, {@link #inModuleOrder(Module)} first). A plain map names no host: empty.
     */
    public List<String> hosts() {
        return List.copyOf(new LinkedHashSet<>(hostOf.values()));
    }

    /**
     * The host of module or tensor {@code name}: that of its own entry or its closest ancestor's; null in a plain
     * map or when nothing covers it.
     */
    public String hostOf(String name) {
        String n = name;
        while (true) {
            if (entries.containsKey(n)) {
                return hostOf.get(n);
            }
            if (n.isEmpty()) {
                return null;
            }
            int dot = n.lastIndexOf('.');
            n = dot < 0 ? "" : n.substring(0, dot);
        }
    }

    /**
     * The plain map {@code host} loads: its own entries with the host dropped, every other host's entries
     * {@code remote} (held by another stage; {@code BigModel} leaves them on meta and reads none of their tensors).
     *
     * <pre>{@code
     * DeviceMap pipeline = DeviceMap.fromJson("{\"embed\": \"box-a/cuda:0\", \"head\": \"box-b/cpu\"}");
     * pipeline.forHost("box-b");   // {"embed":"remote","head":"cpu"}
     * }</pre>
     *
     * @throws IllegalArgumentException when the map names no hosts, or not this one (the message lists them)
     */
    public DeviceMap forHost(String host) {
        if (hostOf.isEmpty()) {
            throw new IllegalArgumentException("This device map names no hosts (" + toJson() + "): it is already the"
                    + " local host's map");
        }
        if (host == null || !hostOf.containsValue(host)) {
            throw new IllegalArgumentException("Unknown host '" + host + "': the device map names hosts " + hosts());
        }
        Map<String, Device> out = new LinkedHashMap<>();
        entries.forEach((k, d) -> out.put(k, host.equals(hostOf.get(k)) ? d : Device.REMOTE));
        return new DeviceMap(out);
    }

    /** The device of the entry named exactly {@code name}, or null. */
    public Device get(String name) {
        return entries.get(name);
    }

    public int size() {
        return entries.size();
    }

    /**
     * The device of a module or tensor: its own entry or that of its closest ancestor ({@code ""} included).
     *
     * @return null when nothing covers it
     */
    public Device deviceOf(String name) {
        String n = name;
        while (true) {
            Device d = entries.get(n);
            if (d != null) {
                return d;
            }
            if (n.isEmpty()) {
                return null;
            }
            int dot = n.lastIndexOf('.');
            n = dot < 0 ? "" : n.substring(0, dot);
        }
    }

    /** The devices used, in accelerate's order (GPUs, cpu, disk). */
    public Set<Device> devices() {
        return entries.values().stream().sorted().collect(Collectors.toCollection(LinkedHashSet::new));
    }

    /** The same entries ordered by position in {@code model} (depth-first, a module before what it holds). */
    public DeviceMap inModuleOrder(Module model) {
        Map<String, Integer> pos = positions(model);
        List<String> keys = new ArrayList<>(entries.keySet());
        keys.sort(Comparator.comparing((String k) -> pos.getOrDefault(k, Integer.MAX_VALUE)));
        Map<String, Device> out = new LinkedHashMap<>();
        Map<String, String> hosts = new LinkedHashMap<>();
        keys.forEach(k -> out.put(k, entries.get(k)));
        keys.stream().filter(hostOf::containsKey).forEach(k -> hosts.put(k, hostOf.get(k)));
        return new DeviceMap(out, hosts);
    }

    /**
     * accelerate's {@code check_device_map}: every state-dict name of {@code model} (tied aliases and persistent
     * buffers included, non-persistent buffers exempt) must be covered by an entry equal to it or a prefix of it
     * ending at a dot ({@code remote} covers too). Keys that name no module and tied parameters placed on different
     * devices of one host only warn (logged and returned); tied parameters on different hosts, or held remotely, do
     * not: each pipeline stage loads its own copy.
     *
     * @return the warnings, empty when there are none
     * @throws DeviceMapException ({@code ValueError}, accelerate's message) listing the uncovered names
     */
    public List<String> checkDeviceMap(Module model) {
        List<String> warnings = new ArrayList<>();
        Set<String> moduleNames = model.namedModules().keySet();
        List<String> unknown = entries.keySet().stream()
                .filter(k -> !k.isEmpty() && !moduleNames.contains(k))
                .collect(Collectors.toList());
        if (!unknown.isEmpty()) {
            warnings.add("The following device_map keys do not match any submodules in the model: "
                    + pythonList(unknown));
        }
        List<String> uncovered = new ArrayList<>();
        if (!entries.containsKey("")) {
            for (String name : model.stateDict().keySet()) {
                if (!covered(name)) {
                    uncovered.add(name);
                }
            }
        }
        for (List<String> group : model.tiedParameters()) {
            Map<String, Device> where = new LinkedHashMap<>();
            group.stream().sorted().forEach(p -> where.put(p, deviceOf(p)));
            boolean oneHost = new HashSet<>(group.stream().map(p -> String.valueOf(hostOf(p)))
                    .collect(Collectors.toList())).size() == 1;
            if (oneHost && !where.containsValue(null) && !where.containsValue(Device.REMOTE)
                    && new LinkedHashSet<>(where.values()).size() > 1) {
                warnings.add("Tied parameters are on different devices: " + where.entrySet().stream()
                        .map(e -> "'" + e.getKey() + "': " + pythonDevice(e.getValue()))
                        .collect(Collectors.joining(", ", "{", "}"))
                        + ". Please modify your custom device map or set `device_map='auto'`.");
            }
        }
        warnings.forEach(w -> LOG.warn("{}", w));
        if (!uncovered.isEmpty()) {
            String accelerateMessage = "The device_map provided does not give any device for the following parameters: "
                    + String.join(", ", uncovered);
            throw new DeviceMapException("ValueError", "The device_map provided does not give any device to "
                    + uncovered.size() + " parameter(s), in the module(s): " + uncoveredModules(model, uncovered),
                    accelerateMessage);
        }
        return warnings;
    }

    /**
     * The uncovered parameters as the largest modules none of whose parameters has a device, numbered siblings
     * collapsed ("layers.5..27"): a real model's list of parameters runs to kilobytes, its modules to a line.
     */
    private String uncoveredModules(Module model, List<String> uncovered) {
        Set<String> partlyCovered = new HashSet<>();
        for (String name : model.stateDict().keySet()) {
            if (covered(name)) {
                for (int dot = name.indexOf('.'); dot >= 0; dot = name.indexOf('.', dot + 1)) {
                    partlyCovered.add(name.substring(0, dot));
                }
            }
        }
        Set<String> modules = new LinkedHashSet<>();
        for (String name : uncovered) {
            String top = name;
            for (int dot = name.indexOf('.'); dot >= 0; dot = name.indexOf('.', dot + 1)) {
                if (!partlyCovered.contains(name.substring(0, dot))) {
                    top = name.substring(0, dot);
                    break;
                }
            }
            modules.add(top);
        }
        List<String> compact = new ArrayList<>();
        List<String> list = new ArrayList<>(modules);
        for (int i = 0; i < list.size(); ) {
            String name = list.get(i);
            int dot = name.lastIndexOf('.');
            int first = dot < 0 ? -1 : index(name.substring(dot + 1));
            int j = i;
            while (first >= 0 && j + 1 < list.size() && list.get(j + 1).startsWith(name.substring(0, dot + 1))
                    && index(list.get(j + 1).substring(dot + 1)) == first + (j + 1 - i)) {
                j++;
            }
            compact.add(j > i ? name + ".." + (first + j - i) : name);
            i = j + 1;
        }
        int shown = Math.min(compact.size(), 20);
        return String.join(", ", compact.subList(0, shown))
                + (shown < compact.size() ? " and " + (compact.size() - shown) + " more" : "");
    }

    private static int index(String s) {
        return !s.isEmpty() && s.length() < 7 && s.chars().allMatch(Character::isDigit) ? Integer.parseInt(s) : -1;
    }

    private boolean covered(String name) {
        if (entries.containsKey(name)) {
            return true;
        }
        for (String k : entries.keySet()) {
            if (name.startsWith(k + ".")) {
                return true;
            }
        }
        return false;
    }

    public static String pythonList(List<String> names) {
        return names.stream().map(n -> "'" + n + "'").collect(Collectors.joining(", ", "[", "]"));
    }

    private static String pythonDevice(Device d) {
        return d.isCuda() ? Integer.toString(d.index()) : "'" + d + "'";
    }

    /** Depth-first positions: a module, then its parameters, its buffers, its children. */
    public static Map<String, Integer> positions(Module model) {
        Map<String, Integer> pos = new HashMap<>();
        walk(model, "", pos);
        return pos;
    }

    private static void walk(Module m, String name, Map<String, Integer> pos) {
        pos.putIfAbsent(name, pos.size());
        String prefix = name.isEmpty() ? "" : name + ".";
        m.parameters().keySet().forEach(p -> pos.putIfAbsent(prefix + p, pos.size()));
        m.buffers().keySet().forEach(b -> pos.putIfAbsent(prefix + b, pos.size()));
        m.children().forEach((c, child) -> walk(child, prefix + c, pos));
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof DeviceMap other && other.entries.equals(entries) && other.hostOf.equals(hostOf);
    }

    @Override
    public int hashCode() {
        return entries.hashCode() * 31 + hostOf.hashCode();
    }

    @Override
    public String toString() {
        return toJson();
    }

    /** Starts a hand-written map for {@code model}. */
    public static Builder builder(Module model) {
        return new Builder(model);
    }

    /**
     * Writes a device map by hand, checked against the model: every key must name a module or tensor, keys may not
     * overlap (one inside another, or twice), layer ranges are 1-based and inclusive over the children of a list
     * module, and {@link #build()} runs {@link DeviceMap#checkDeviceMap} so nothing is left without a device. A map
     * that goes back to a device it already left (GPU 0, GPU 1, GPU 0 in model order), or to a host it already left,
     * is legal but makes activations travel back and forth: it is logged as a warning and listed by
     * {@link #warnings()}. Values may name hosts ({@code put("head", "box-b/cpu")}): every entry or none.
     *
     * <pre>{@code
     * DeviceMap map = DeviceMap.builder(model)
     *         .put("transformer.embedding", Device.cuda(1))
     *         .layers("transformer.encoder.layers", 1, 12, Device.cuda(1))
     *         .layers("transformer.encoder.layers", 13, 24, Device.cuda(0))
     *         .layers("transformer.encoder.layers", 25, 28, Device.CPU)
     *         .put("transformer.encoder.final_layernorm", Device.CPU)
     *         .put("transformer.output_layer", Device.CPU)
     *         .put("transformer.rotary_pos_emb", Device.cuda(1))
     *         .build();
     * }</pre>
     */
    public static final class Builder {
        private final Module model;
        private final Map<String, HostDevice> entries = new LinkedHashMap<>();
        private final List<String> warnings = new ArrayList<>();

        private Builder(Module model) {
            if (model == null) {
                throw new IllegalArgumentException("model must not be null");
            }
            this.model = model;
        }

        /**
         * Puts module or tensor {@code name} ({@code ""} = the whole model) on {@code device}.
         *
         * @throws IllegalArgumentException when the name is not in the model, the device is meta, or the name
         *     overlaps an entry already given
         */
        public Builder put(String name, Device device) {
            if (device == null || device.isMeta()) {
                throw new IllegalArgumentException("Device map entry '" + name + "' needs a GPU, cpu or disk, got "
                        + device);
            }
            return put(name, HostDevice.local(device));
        }

        /**
         * Puts module or tensor {@code name} on {@code placement}, which may name a host ({@code box-a/cuda:0}); a
         * map names a host in every entry or in none.
         *
         * @throws IllegalArgumentException as {@link #put(String, Device)}
         */
        public Builder put(String name, HostDevice placement) {
            if (placement == null) {
                throw new IllegalArgumentException("Device map entry '" + name + "' needs a placement");
            }
            if (name == null) {
                throw new IllegalArgumentException("device map name must not be null");
            }
            if (model.findModule(name) == null && model.findTensor(name) == null) {
                throw new IllegalArgumentException("Device map entry '" + name + "': no module or tensor of that name"
                        + " in " + model.className());
            }
            for (String k : entries.keySet()) {
                if (k.equals(name) || k.isEmpty() || name.isEmpty() || name.startsWith(k + ".")
                        || k.startsWith(name + ".")) {
                    throw new IllegalArgumentException("Device map entry '" + name + "' overlaps entry '" + k
                            + "' (" + entries.get(k) + "): each part of the model may be placed once");
                }
            }
            entries.put(name, placement);
            return this;
        }

        /** {@link #put(String, Device)} with a GPU index. */
        public Builder put(String name, int gpu) {
            return put(name, Device.cuda(gpu));
        }

        /**
         * {@link #put(String, HostDevice)} with a device text ({@code "cpu"}, {@code "disk"}, {@code "cuda:1"},
         * {@code "1"}, {@code "remote"}, or with a host: {@code "box-a/cuda:0"}).
         */
        public Builder put(String name, String device) {
            return put(name, HostDevice.parse(device));
        }

        /**
         * Puts layers {@code first..last} (1-based, inclusive: layer 1 is the first child) of the list module at
         * {@code listPath} on {@code device}.
         *
         * @throws IllegalArgumentException when the list module does not exist, the range is empty or outside
         *     1..number of children, or it overlaps entries already given
         */
        public Builder layers(String listPath, int first, int last, Device device) {
            if (device == null || device.isMeta()) {
                throw new IllegalArgumentException("Layers " + first + ".." + last + " of '" + listPath
                        + "' need a GPU, cpu or disk, got " + device);
            }
            return layers(listPath, first, last, HostDevice.local(device));
        }

        /**
         * {@link #layers(String, int, int, Device)} with a placement that may name a host
         * ({@code HostDevice.parse("box-b/cpu")}).
         */
        public Builder layers(String listPath, int first, int last, HostDevice placement) {
            Module list = model.findModule(listPath);
            if (list == null) {
                throw new IllegalArgumentException("No module '" + listPath + "' in " + model.className()
                        + " to take layers " + first + ".." + last + " from");
            }
            List<String> children = new ArrayList<>(list.children().keySet());
            if (first < 1 || last < first || last > children.size()) {
                throw new IllegalArgumentException("Layer range " + first + ".." + last + " of '" + listPath
                        + "' is invalid: layers are numbered 1.." + children.size() + " (1-based, inclusive)");
            }
            String prefix = listPath.isEmpty() ? "" : listPath + ".";
            for (int i = first; i <= last; i++) {
                put(prefix + children.get(i - 1), placement);
            }
            return this;
        }

        /** {@link #layers(String, int, int, Device)} with a GPU index. */
        public Builder layers(String listPath, int first, int last, int gpu) {
            return layers(listPath, first, last, Device.cuda(gpu));
        }

        /** The warnings of the last {@link #build()} (devices revisited, unknown keys, split ties). */
        public List<String> warnings() {
            return List.copyOf(warnings);
        }

        /**
         * The map, in the order the entries were given, after {@link DeviceMap#checkDeviceMap}.
         *
         * @throws DeviceMapException naming every tensor no entry covers
         */
        public DeviceMap build() {
            warnings.clear();
            DeviceMap map = ofPlacements(entries);
            Map<String, Integer> pos = positions(model);
            List<String> ordered = new ArrayList<>(entries.keySet());
            ordered.sort(Comparator.comparing((String k) -> pos.getOrDefault(k, Integer.MAX_VALUE)));
            Set<HostDevice> left = new LinkedHashSet<>();
            HostDevice previous = null;
            List<HostDevice> path = new ArrayList<>();
            for (String k : ordered) {
                HostDevice d = entries.get(k);
                if (previous != null && !d.equals(previous)) {
                    left.add(previous);
                    if (left.contains(d)) {
                        path.add(d);
                        String w = "Device map returns to " + d + " at '" + k + "' after leaving it (" + path.stream()
                                .map(HostDevice::toString).collect(Collectors.joining(" -> "))
                                + "): activations will travel back and forth between devices";
                        warnings.add(w);
                        LOG.warn("{}", w);
                        previous = d;
                        continue;
                    }
                }
                if (previous == null || !d.equals(previous)) {
                    path.add(d);
                }
                previous = d;
            }
            List<String> hostPath = new ArrayList<>();
            for (String k : ordered) {
                String host = entries.get(k).host();
                if (host == null || (!hostPath.isEmpty() && host.equals(hostPath.get(hostPath.size() - 1)))) {
                    continue;
                }
                hostPath.add(host);
                if (hostPath.indexOf(host) < hostPath.size() - 1) {
                    String w = "Device map returns to host " + host + " at '" + k + "' after leaving it ("
                            + String.join(" -> ", hostPath) + "): a pipeline would send activations back to an"
                            + " earlier stage";
                    warnings.add(w);
                    LOG.warn("{}", w);
                    break;
                }
            }
            warnings.addAll(map.checkDeviceMap(model));
            return map;
        }
    }

    /** Sizes of the entries per device, for reports. */
    public Map<Device, Double> bytesPerDevice(ModuleSizes sizes) {
        Map<Device, Double> out = new java.util.TreeMap<>();
        entries.forEach((k, d) -> out.merge(d, sizes.size(k), Double::sum));
        return out;
    }
}
