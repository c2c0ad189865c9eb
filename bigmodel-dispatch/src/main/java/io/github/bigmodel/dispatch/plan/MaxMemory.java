package io.github.bigmodel.dispatch.plan;

import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.MemorySize;
import java.util.AbstractMap;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.stream.Collectors;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A memory budget per device, normalised the way accelerate's {@code get_max_memory} does it: sizes converted to
 * bytes, GPUs by ascending id, then {@code cpu}, then {@code disk}. A device without an entry gets nothing (as in
 * accelerate 1.14: no cpu entry means nothing is planned on cpu); an unset budget is every GPU's free memory plus
 * the available RAM ({@link #defaults}).
 *
 * <p>Budgets are held as doubles because accelerate's can be fractional (a single-GPU default of 90 %, the
 * bitsandbytes 0.9 factor, int4 sizes); every integral budget below 2^53 bytes is exact.
 *
 * <pre>{@code
 * MaxMemory m = MaxMemory.parse("0=10GiB,1=10GiB,cpu=30GiB");
 * m.get(Device.cuda(1));        // 1.073741824E10
 * m.devices();                  // [cuda:0, cuda:1, cpu]
 * MaxMemory.parse("0=10 potatoes");   // IllegalArgumentException naming "10 potatoes"
 * }</pre>
 */
public final class MaxMemory {

    private static final Logger LOG = LoggerFactory.getLogger(MaxMemory.class);

    private final Map<Device, Double> budgets;

    private MaxMemory(Map<Device, Double> budgets) {
        this.budgets = Collections.unmodifiableMap(budgets);
    }

    /**
     * Parses {@code "0=10GiB,1=10GiB,cpu=30GiB"}: comma-separated {@code key=size} pairs whose keys are a GPU index,
     * {@code cuda:N}, {@code cpu} or {@code disk} and whose sizes are unit strings ({@code 10GiB}, {@code 1.5GB}) or
     * plain byte counts.
     *
     * @throws IllegalArgumentException naming the pair, key or size that is not understood
     */
    public static MaxMemory parse(String text) {
        return parse(text, DeviceInventory.system());
    }

    /** As {@link #parse(String)}, with the machine figures taken from {@code inventory}. */
    public static MaxMemory parse(String text, DeviceInventory inventory) {
        if (text == null || text.isBlank()) {
            throw new IllegalArgumentException("Empty max_memory text: expected e.g. \"0=10GiB,1=10GiB,cpu=30GiB\"");
        }
        List<Map.Entry<Object, Object>> entries = new ArrayList<>();
        for (String pair : text.split(",")) {
            int eq = pair.indexOf('=');
            if (eq <= 0 || eq == pair.length() - 1) {
                throw new IllegalArgumentException("Invalid max_memory entry '" + pair.trim() + "' in '" + text
                        + "': expected key=size, e.g. 0=10GiB or cpu=30GiB");
            }
            String key = pair.substring(0, eq).trim();
            String size = pair.substring(eq + 1).trim();
            Object budget = size.matches("\\d+") ? (Object) Long.valueOf(size) : size;
            entries.add(new AbstractMap.SimpleEntry<>(lenientKey(key), budget));
        }
        return normalise(entries, inventory);
    }

    /**
     * A budget from a map whose keys are GPU indices ({@link Integer}), {@link Device}s or strings ({@code "cpu"},
     * {@code "disk"}, {@code "cuda:N"}, {@code "N"}) and whose values are byte counts (integral numbers, or
     * doubles) or unit strings. The map's iteration order does not matter.
     *
     * @throws IllegalArgumentException naming the key or the size that is not understood
     */
    public static MaxMemory of(Map<?, ?> budgets) {
        return of(budgets, DeviceInventory.system());
    }

    /** As {@link #of(Map)}, with the machine figures taken from {@code inventory}. */
    public static MaxMemory of(Map<?, ?> budgets, DeviceInventory inventory) {
        List<Map.Entry<Object, Object>> entries = new ArrayList<>();
        for (Map.Entry<?, ?> e : budgets.entrySet()) {
            Object key = e.getKey() instanceof String ? lenientKey((String) e.getKey()) : e.getKey();
            entries.add(new AbstractMap.SimpleEntry<>(key, e.getValue()));
        }
        return normalise(entries, inventory);
    }

    /**
     * accelerate's {@code get_max_memory} on a budget given as ordered pairs with accelerate's key types exactly: an
     * {@link Integer} (or {@link Long}) is a GPU id, strings must be {@code "cpu"} or {@code "disk"}. Sizes are
     * converted first, then keys are checked, as accelerate does. Package-private: only the parity test replays
     * accelerate's typed keys; users give budgets as text or a map ({@link #parse}, {@link #of}).
     *
     * @throws DeviceMapException ({@code ValueError}) with accelerate's message for a bad size or key
     */
    static MaxMemory ofAccelerate(List<? extends Map.Entry<?, ?>> entries, DeviceInventory inventory) {
        List<Map.Entry<Object, Object>> copy = new ArrayList<>();
        for (Map.Entry<?, ?> e : entries) {
            copy.add(new AbstractMap.SimpleEntry<>(e.getKey(), e.getValue()));
        }
        return normalise(copy, inventory);
    }

    /** The unset budget: every visible GPU's free memory and the available RAM. */
    public static MaxMemory defaults(DeviceInventory inventory) {
        Map<Device, Double> out = new LinkedHashMap<>();
        List<Long> gpus = inventory.gpuFreeBytes();
        for (int i = 0; i < gpus.size(); i++) {
            out.put(Device.cuda(i), (double) gpus.get(i));
        }
        out.put(Device.CPU, (double) inventory.cpuAvailableBytes());
        return new MaxMemory(out);
    }

    /** A budget taken as is (already in bytes); it is put in accelerate's device order. */
    public static MaxMemory ofBytes(Map<Device, ? extends Number> bytes) {
        Map<Device, Double> sorted = new java.util.TreeMap<>();
        bytes.forEach((d, v) -> {
            if (d.isMeta() || d.isRemote()) {
                throw new IllegalArgumentException(d + " cannot hold a budget: it stores no values here");
            }
            sorted.put(d, checkBudget(v.doubleValue(), d + "=" + v));
        });
        return new MaxMemory(new LinkedHashMap<>(sorted));
    }

    private static Object lenientKey(String key) {
        String k = key.trim();
        if (k.equals("cpu") || k.equals("disk")) {
            return k;
        }
        if (k.matches("-?\\d{1,6}")) {
            return Integer.valueOf(k);
        }
        if (k.matches("cuda:\\d{1,6}") || k.equals("cuda")) {
            return Device.parse(k);
        }
        return k; // rejected below with accelerate's message, which names it
    }

    private static MaxMemory normalise(List<Map.Entry<Object, Object>> entries, DeviceInventory inventory) {
        // Sizes first, as accelerate converts every value before it looks at the keys.
        List<Double> values = new ArrayList<>();
        for (Map.Entry<Object, Object> e : entries) {
            values.add(budgetValue(e.getValue()));
        }
        Map<Device, Double> byDevice = new java.util.TreeMap<>();
        List<Object> unknown = new ArrayList<>();
        Device twice = null;
        for (int i = 0; i < entries.size(); i++) {
            Device d = keyDevice(entries.get(i).getKey());
            if (d == null) {
                unknown.add(entries.get(i).getKey());
                continue;
            }
            if (byDevice.put(d, values.get(i)) != null && twice == null) {
                twice = d;
            }
        }
        boolean anyGpu = byDevice.keySet().stream().anyMatch(Device::isCuda);
        if (anyGpu) {
            int count = inventory.gpuCount();
            for (Device d : byDevice.keySet()) {
                if (d.isCuda() && (d.index() >= count || d.index() < 0)) {
                    List<Integer> available = new ArrayList<>();
                    for (int i = 0; i < count; i++) {
                        available.add(i);
                    }
                    LOG.warn("Device {} is not available, available devices are {}", d.index(), available);
                }
            }
        }
        if (!unknown.isEmpty()) {
            throw new DeviceMapException("ValueError", "Device " + unknown.get(0)
                    + " is not recognized, available devices are integers(for GPU/XPU), 'mps', 'cpu' and 'disk'");
        }
        if (twice != null) {
            // "cpu=10GiB,cpu=1GiB" (or 0 and cuda:0): keeping either value would silently drop the other.
            Device d = twice;
            List<String> given = new ArrayList<>();
            for (Map.Entry<Object, Object> e : entries) {
                if (d.equals(keyDevice(e.getKey()))) {
                    given.add(e.getKey() + "=" + e.getValue());
                }
            }
            throw new DeviceMapException("ValueError", "max_memory gives " + d + " more than one budget ("
                    + String.join(", ", given) + "): give each device once");
        }
        return new MaxMemory(new LinkedHashMap<>(byDevice));
    }

    private static Device keyDevice(Object key) {
        if (key instanceof Device) {
            Device d = (Device) key;
            return d.isMeta() || d.isRemote() ? null : d;
        }
        if (key instanceof Integer || key instanceof Long || key instanceof Short) {
            return Device.cuda(Math.toIntExact(((Number) key).longValue()));
        }
        if ("cpu".equals(key)) {
            return Device.CPU;
        }
        if ("disk".equals(key)) {
            return Device.DISK;
        }
        return null;
    }

    private static double budgetValue(Object value) {
        if (value instanceof Double || value instanceof Float) {
            return checkBudget(((Number) value).doubleValue(), String.valueOf(value));
        }
        try {
            return MemorySize.parseBudget(value);
        } catch (DeviceMapException e) {
            throw e;
        } catch (IllegalArgumentException e) {
            throw new DeviceMapException("ValueError", e.getMessage());
        }
    }

    private static double checkBudget(double v, String input) {
        if (Double.isNaN(v) || Double.isInfinite(v) || v < 0) {
            throw new DeviceMapException("ValueError", "`size` " + input + " is not in a valid format. Use an"
                    + " integer for bytes, or a string with an unit (like '5.0GB').");
        }
        return v;
    }

    /** The budget of {@code device} in bytes. @throws IllegalArgumentException when it has none */
    public double get(Device device) {
        Double v = budgets.get(device);
        if (v == null) {
            throw new IllegalArgumentException("No budget for " + device + " in " + this);
        }
        return v;
    }

    /** Whether {@code device} has a budget. */
    public boolean contains(Device device) {
        return budgets.containsKey(device);
    }

    /** The devices in accelerate's order. */
    public List<Device> devices() {
        return List.copyOf(budgets.keySet());
    }

    /** The GPUs, ascending. */
    public List<Device> gpus() {
        return budgets.keySet().stream().filter(Device::isCuda).collect(Collectors.toList());
    }

    /** Device to bytes, in accelerate's order. */
    public Map<Device, Double> asMap() {
        return budgets;
    }

    /** A copy with {@code device}'s budget replaced (or added). */
    public MaxMemory with(Device device, double bytes) {
        Map<Device, Double> copy = new java.util.TreeMap<>(budgets);
        copy.put(device, bytes);
        return new MaxMemory(new LinkedHashMap<>(copy));
    }

    /** A copy with every budget multiplied by {@code factor} (transformers' bitsandbytes rule uses 0.90). */
    public MaxMemory scaled(double factor) {
        Map<Device, Double> copy = new LinkedHashMap<>();
        budgets.forEach((d, v) -> copy.put(d, v * factor));
        return new MaxMemory(copy);
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof MaxMemory && ((MaxMemory) o).budgets.equals(budgets);
    }

    @Override
    public int hashCode() {
        return budgets.hashCode();
    }

    /** {@code cuda:0=7211379664,cpu=32212254720} (fractional budgets keep their fraction). */
    @Override
    public String toString() {
        return budgets.entrySet().stream()
                .map(e -> e.getKey() + "=" + formatBytes(e.getValue()))
                .collect(Collectors.joining(","));
    }

    static String formatBytes(double v) {
        return v == Math.rint(v) && Math.abs(v) < 0x1p53 ? Long.toString((long) v) : String.format(Locale.ROOT, "%s", v);
    }
}
