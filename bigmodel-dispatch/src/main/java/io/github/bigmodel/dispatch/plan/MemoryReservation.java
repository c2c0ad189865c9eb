package io.github.bigmodel.dispatch.plan;

import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Objects;

/**
 * Memory a model needs while it runs, beside its weights, that a device map must leave room for: bytes tied to
 * named modules (a decoder block's KV cache, for instance) and a workspace every executing device needs for the
 * temporaries of one forward step. The planner ({@link DeviceMapPlanner}) knows nothing of what the bytes are for;
 * a model family builds the reservation (bigmodel-chatglm's {@code ContextReservation} does for a context length).
 *
 * <p>Where reserved bytes are counted: a module's bytes go to the device the module <em>executes</em> on. A module
 * placed on a GPU executes there; a module placed on {@code cpu} or {@code disk} executes on the main device (the
 * first GPU, or {@link PlanOptions.Builder#executionDevice}), so its bytes are counted there, not on the device
 * holding its weights. A module split over several devices counts its bytes once, where its first part executes.
 * The workspace is counted once on every device that executes something.
 *
 * <pre>{@code
 * MemoryReservation r = MemoryReservation.builder("KV cache at 8192 positions")
 *         .module("transformer.encoder.layers.0", 8L << 20)
 *         .module("transformer.encoder.layers.1", 8L << 20)
 *         .workspace(300L << 20)
 *         .build();
 * PlanOptions o = PlanOptions.builder().reservation(r).build();
 * }</pre>
 */
public final class MemoryReservation {

    /** Nothing reserved: plans are exactly accelerate's. */
    public static final MemoryReservation NONE = new MemoryReservation("nothing reserved", Map.of(), 0);

    private final String description;
    private final Map<String, Long> moduleBytes;
    private final long workspaceBytes;
    private final long totalModuleBytes;

    private MemoryReservation(String description, Map<String, Long> moduleBytes, long workspaceBytes) {
        this.description = description;
        this.moduleBytes = Collections.unmodifiableMap(new LinkedHashMap<>(moduleBytes));
        this.workspaceBytes = workspaceBytes;
        long total = 0;
        for (long b : moduleBytes.values()) {
            total = Math.addExact(total, b);
        }
        this.totalModuleBytes = total;
    }

    /** Starts a reservation; {@code description} says what it is for (shown in logs and by the CLI). */
    public static Builder builder(String description) {
        return new Builder(description);
    }

    /** What the reservation is for, e.g. "KV cache for 8192 positions x batch 1 in float16". */
    public String description() {
        return description;
    }

    /** Bytes per module name, in the order given. */
    public Map<String, Long> moduleBytes() {
        return moduleBytes;
    }

    /** Bytes reserved for module {@code name} itself (0 when none). */
    public long bytesOf(String name) {
        return moduleBytes.getOrDefault(name, 0L);
    }

    /** The sum of every module's bytes. */
    public long totalModuleBytes() {
        return totalModuleBytes;
    }

    /** Bytes each executing device keeps for one forward step's temporaries. */
    public long workspaceBytes() {
        return workspaceBytes;
    }

    /** Whether nothing at all is reserved. */
    public boolean isEmpty() {
        return totalModuleBytes == 0 && workspaceBytes == 0;
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof MemoryReservation r && r.description.equals(description)
                && r.moduleBytes.equals(moduleBytes) && r.workspaceBytes == workspaceBytes;
    }

    @Override
    public int hashCode() {
        return Objects.hash(description, moduleBytes, workspaceBytes);
    }

    @Override
    public String toString() {
        return description + " (" + moduleBytes.size() + " modules, " + totalModuleBytes + " bytes; workspace "
                + workspaceBytes + " bytes per executing device)";
    }

    /** Builds a {@link MemoryReservation}. */
    public static final class Builder {
        private final String description;
        private final Map<String, Long> moduleBytes = new LinkedHashMap<>();
        private long workspaceBytes;

        private Builder(String description) {
            if (description == null || description.isBlank()) {
                throw new IllegalArgumentException("A reservation needs a description of what it is for");
            }
            this.description = description;
        }

        /**
         * Reserves {@code bytes} for module {@code name} on the device it executes on (added to what was given
         * for it before).
         *
         * @throws IllegalArgumentException for a null/empty name or negative bytes
         */
        public Builder module(String name, long bytes) {
            if (name == null || name.isEmpty()) {
                throw new IllegalArgumentException("A reservation names a module, got '" + name + "'");
            }
            if (bytes < 0) {
                throw new IllegalArgumentException("Reserved bytes must be >= 0, got " + bytes + " for " + name);
            }
            moduleBytes.merge(name, bytes, Math::addExact);
            return this;
        }

        /**
         * The workspace each executing device keeps.
         *
         * @throws IllegalArgumentException for negative bytes
         */
        public Builder workspace(long bytes) {
            if (bytes < 0) {
                throw new IllegalArgumentException("Workspace bytes must be >= 0, got " + bytes);
            }
            workspaceBytes = bytes;
            return this;
        }

        public MemoryReservation build() {
            return new MemoryReservation(description, moduleBytes, workspaceBytes);
        }
    }
}
