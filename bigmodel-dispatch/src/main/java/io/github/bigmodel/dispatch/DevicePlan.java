package io.github.bigmodel.dispatch;

/**
 * The outcome of {@link DeviceMapPlanner#plan}: the device map, the budget actually handed to the planner (after
 * balancing and any quantizer factor), the model's size and its largest layer.
 *
 * <pre>{@code
 * DevicePlan plan = DeviceMapPlanner.plan(model, Strategy.AUTO, MaxMemory.parse("0=10GiB,1=10GiB,cpu=30GiB"),
 *         PlanOptions.builder().noSplit("GLMBlock").dtype(DType.FLOAT16).build());
 * plan.deviceMap().toJson();   // {"transformer.word_embeddings":0, ...}
 * plan.budget();               // cuda:0=7211379664,cuda:1=10737418240,cpu=32212254720
 * }</pre>
 *
 * @param deviceMap    where each module goes
 * @param budget       the budget the map was planned under
 * @param modelSize    bytes of the whole model under the plan's dtypes
 * @param largestLayer the largest layer before planning started
 */
public record DevicePlan(DeviceMap deviceMap, MaxMemory budget, double modelSize, LargestLayer largestLayer) {

    /** Whether anything is placed on cpu or disk. */
    public boolean offloaded() {
        return deviceMap.asMap().values().stream().anyMatch(d -> d.isCpu() || d.isDisk());
    }
}
