package io.github.bigmodel.dispatch.plan;

import java.util.List;

/**
 * The outcome of {@link DeviceMapPlanner#planHosts}: a host-qualified device map (every entry names its host, see
 * {@link DeviceMap#forHost}) and, per host in pipeline order, the run of modules it holds and the plan of its own
 * devices.
 *
 * <pre>{@code
 * PipelinePlan p = DeviceMapPlanner.planHosts(model, Strategy.SEQUENTIAL, PlanOptions.builder()
 *         .hosts(HostBudgets.parse(List.of("box-a=cuda:0:6GiB,cpu:8GiB", "box-b=cpu:16GiB"))).build());
 * p.deviceMap().toJson();                  // {"transformer.word_embeddings":"box-a/cuda:0", ...}
 * p.stage("box-b").first();                // transformer.layers.17
 * p.stage("box-b").plan().memory();        // box-b's devices: weights, reserved, free
 * }</pre>
 *
 * @param deviceMap the map of the whole pipeline, host-qualified, in module order
 * @param stages    one per host given, in pipeline order; a host that holds nothing has an empty stage
 * @param modelSize bytes of the whole model (a tensor tied across stages counted once)
 * @param warnings  hosts left empty and why (also logged)
 */
public record PipelinePlan(DeviceMap deviceMap, List<Stage> stages, double modelSize, List<String> warnings) {

    public PipelinePlan {
        stages = List.copyOf(stages);
        warnings = List.copyOf(warnings);
    }

    /**
     * One host's part: the consecutive planning units it holds (whole no-split blocks and leaf modules, in module
     * order) and the plan of those units over its devices.
     *
     * @param host     the host
     * @param modules  the units it holds, in module order; empty when it holds nothing
     * @param plan     its devices' plan (map, budget after the strategy, weights, per-device memory); null when empty
     * @param budget   the budget given for the host
     * @param usesDisk whether it may use its disk
     */
    public record Stage(String host, List<String> modules, DevicePlan plan, MaxMemory budget, boolean usesDisk) {

        public Stage {
            modules = List.copyOf(modules);
        }

        /** Whether the host holds nothing. */
        public boolean isEmpty() {
            return modules.isEmpty();
        }

        /** The first unit it holds, or null. */
        public String first() {
            return modules.isEmpty() ? null : modules.get(0);
        }

        /** The last unit it holds, or null. */
        public String last() {
            return modules.isEmpty() ? null : modules.get(modules.size() - 1);
        }

        /** Bytes of the weights it holds (a tensor tied to another stage's counted here too: it keeps a copy). */
        public double weightBytes() {
            return plan == null ? 0 : plan.modelSize();
        }
    }

    /** The stages that hold something, in pipeline order. */
    public List<Stage> activeStages() {
        return stages.stream().filter(s -> !s.isEmpty()).toList();
    }

    /**
     * The stage of {@code host}.
     *
     * @throws IllegalArgumentException for a host not planned, listing the hosts
     */
    public Stage stage(String host) {
        for (Stage s : stages) {
            if (s.host().equals(host)) {
                return s;
            }
        }
        throw new IllegalArgumentException("Unknown host '" + host + "': the pipeline's hosts are "
                + stages.stream().map(Stage::host).toList());
    }
}
