package io.github.bigmodel.dispatch.plan;

import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.MemorySize;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;

/**
 * The hosts of a pipeline, in pipeline order, each with the memory budget of its own devices ({@link MaxMemory},
 * GPU numbers being that host's) and whether it may put weights on its disk. Given to
 * {@link PlanOptions.Builder#hosts}, it makes {@link DeviceMapPlanner#planHosts} split a model into consecutive runs of blocks, one run per host.
 *
 * <pre>{@code
 * HostBudgets hosts = HostBudgets.parse(List.of("box-a=cuda:0:6GiB,cpu:8GiB", "box-b=cpu:16GiB,disk"));
 * hosts.hosts();                     // [box-a, box-b]
 * hosts.budget("box-a");             // cuda:0=6442450944,cpu=8589934592
 * hosts.mayUseDisk("box-b");         // true
 * HostBudgets same = HostBudgets.builder()
 *         .host("box-a", MaxMemory.ofBytes(Map.of(Device.cuda(0), 6L << 30, Device.CPU, 8L << 30)), false)
 *         .host("box-b", MaxMemory.ofBytes(Map.of(Device.CPU, 16L << 30)), true)
 *         .build();
 * }</pre>
 */
public final class HostBudgets {

    private final Map<String, MaxMemory> budgets;
    private final Map<String, Boolean> disk;

    private HostBudgets(Map<String, MaxMemory> budgets, Map<String, Boolean> disk) {
        this.budgets = Collections.unmodifiableMap(new LinkedHashMap<>(budgets));
        this.disk = Collections.unmodifiableMap(new LinkedHashMap<>(disk));
    }

    public static Builder builder() {
        return new Builder();
    }

    /**
     * Parses one {@code --host} value per host, in pipeline order: {@code NAME=DEVICE:SIZE,DEVICE:SIZE[,disk]}, where
     * a device is {@code cuda:N}, a bare GPU index {@code N} or {@code cpu}, a size is a unit string ({@code 6GiB},
     * {@code 1.5GB}) or a byte count, and {@code disk} (no size: disk never fills) lets the host offload to its disk.
     * Example: {@code box-a=cuda:0:6GiB,cpu:8GiB}.
     *
     * @throws IllegalArgumentException naming the value and the part that is not understood (a bad host name, a
     *     device given twice, a host given twice, {@code remote}/{@code meta}, a size for disk)
     */
    public static HostBudgets parse(List<String> specs) {
        if (specs == null || specs.isEmpty()) {
            throw new IllegalArgumentException("No hosts given: expected e.g. box-a=cuda:0:6GiB,cpu:8GiB");
        }
        Builder b = builder();
        for (String spec : specs) {
            b.parseOne(spec);
        }
        return b.build();
    }

    /** Host names in pipeline order. */
    public List<String> hosts() {
        return List.copyOf(budgets.keySet());
    }

    /**
     * The budget of {@code host}'s devices (disk not included, see {@link #mayUseDisk}).
     *
     * @throws IllegalArgumentException for a host not given, listing the hosts
     */
    public MaxMemory budget(String host) {
        MaxMemory m = budgets.get(host);
        if (m == null) {
            throw new IllegalArgumentException("Unknown host '" + host + "': the hosts are " + hosts());
        }
        return m;
    }

    /** Whether {@code host} may put weights on its disk. */
    public boolean mayUseDisk(String host) {
        budget(host);
        return disk.get(host);
    }

    /** Sum of every host's memory budgets. */
    public double totalBytes() {
        double sum = 0;
        for (MaxMemory m : budgets.values()) {
            for (double v : m.asMap().values()) {
                sum += v;
            }
        }
        return sum;
    }

    /** The {@code --host} form of one host: {@code box-a=cuda:0:6GiB,cpu:8GiB,disk}. */
    public String describe(String host) {
        List<String> parts = new ArrayList<>();
        budget(host).asMap().forEach((d, v) -> parts.add(d + ":" + MemorySize.format(v).replace(" ", "")));
        if (disk.get(host)) {
            parts.add("disk");
        }
        return host + "=" + String.join(",", parts);
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof HostBudgets && ((HostBudgets) o).budgets.equals(budgets)
                && ((HostBudgets) o).disk.equals(disk) && ((HostBudgets) o).hosts().equals(hosts());
    }

    @Override
    public int hashCode() {
        return Objects.hash(budgets, disk);
    }

    @Override
    public String toString() {
        List<String> out = new ArrayList<>();
        hosts().forEach(h -> out.add(describe(h)));
        return String.join(" ", out);
    }

    /** Builds {@link HostBudgets}, hosts in the order given. */
    public static final class Builder {
        private final Map<String, MaxMemory> budgets = new LinkedHashMap<>();
        private final Map<String, Boolean> disk = new LinkedHashMap<>();

        private Builder() {
        }

        /**
         * Adds the next host of the pipeline.
         *
         * @throws IllegalArgumentException for a bad or repeated host name, a null budget, or a budget naming disk
         *     (use {@code mayUseDisk})
         */
        public Builder host(String name, MaxMemory budget, boolean mayUseDisk) {
            HostDevice.checkHost(name);
            if (budgets.containsKey(name)) {
                throw new IllegalArgumentException("Host '" + name + "' is given twice: give each host once");
            }
            if (budget == null) {
                throw new IllegalArgumentException("Host '" + name + "' needs a budget");
            }
            if (budget.contains(Device.DISK)) {
                throw new IllegalArgumentException("Host '" + name + "': disk is no memory budget; allow it with"
                        + " mayUseDisk (\"disk\" in --host)");
            }
            budgets.put(name, budget);
            disk.put(name, mayUseDisk);
            return this;
        }

        private void parseOne(String spec) {
            if (spec == null) {
                throw new IllegalArgumentException("A --host value must not be null");
            }
            int eq = spec.indexOf('=');
            if (eq <= 0 || eq == spec.length() - 1) {
                throw new IllegalArgumentException("Invalid --host '" + spec + "': expected NAME=DEVICE:SIZE,...,"
                        + " e.g. box-a=cuda:0:6GiB,cpu:8GiB");
            }
            String name = spec.substring(0, eq).trim();
            try {
                HostDevice.checkHost(name);
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException("Invalid --host '" + spec + "': " + e.getMessage(), e);
            }
            Map<Device, Double> bytes = new LinkedHashMap<>();
            boolean mayUseDisk = false;
            for (String raw : spec.substring(eq + 1).split(",", -1)) {
                String item = raw.trim();
                if (item.equals("disk")) {
                    mayUseDisk = true;
                    continue;
                }
                int colon = item.lastIndexOf(':');
                if (colon <= 0 || colon == item.length() - 1) {
                    throw new IllegalArgumentException("Invalid --host '" + spec + "': '" + item + "' is not"
                            + " DEVICE:SIZE (e.g. cuda:0:6GiB, cpu:8GiB) nor disk");
                }
                String deviceText = item.substring(0, colon).trim();
                Device device;
                try {
                    device = Device.parse(deviceText);
                } catch (IllegalArgumentException e) {
                    throw new IllegalArgumentException("Invalid --host '" + spec + "': " + e.getMessage(), e);
                }
                if (device.isDisk()) {
                    throw new IllegalArgumentException("Invalid --host '" + spec + "': disk takes no size (it never"
                            + " fills); write disk alone");
                }
                if (!device.isCuda() && !device.isCpu()) {
                    throw new IllegalArgumentException("Invalid --host '" + spec + "': " + device + " holds no budget;"
                            + " use cuda:N, N or cpu");
                }
                String size = item.substring(colon + 1).trim();
                double value;
                try {
                    value = MemorySize.parseBudget(size.matches("\\d+") ? (Object) Long.valueOf(size) : size);
                } catch (IllegalArgumentException e) {
                    throw new IllegalArgumentException("Invalid --host '" + spec + "': " + e.getMessage(), e);
                }
                if (bytes.put(device, value) != null) {
                    throw new IllegalArgumentException("Invalid --host '" + spec + "': " + device
                            + " is given twice");
                }
            }
            if (bytes.isEmpty()) {
                throw new IllegalArgumentException("Invalid --host '" + spec + "': give at least one device budget"
                        + " (e.g. cpu:8GiB)");
            }
            host(name, MaxMemory.ofBytes(bytes), mayUseDisk);
        }

        /** @throws IllegalArgumentException when no host was given */
        public HostBudgets build() {
            if (budgets.isEmpty()) {
                throw new IllegalArgumentException("A pipeline needs at least one host");
            }
            return new HostBudgets(budgets, disk);
        }
    }
}
