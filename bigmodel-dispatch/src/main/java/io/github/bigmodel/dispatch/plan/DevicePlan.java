package io.github.bigmodel.dispatch.plan;

import io.github.bigmodel.core.Device;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * The outcome of {@link DeviceMapPlanner#plan}: the device map, the budget actually handed to the planner (after
 * balancing and any quantizer factor), the model's size, its largest layer, and how each device's budget is used
 * (weights, reserved bytes such as a KV cache, workspace, free).
 *
 * <pre>{@code
 * DevicePlan plan = DeviceMapPlanner.plan(model, Strategy.AUTO, MaxMemory.parse("0=10GiB,1=10GiB,cpu=30GiB"),
 *         PlanOptions.builder().dtype(DType.FLOAT16).build());
 * plan.deviceMap().toJson();   // {"transformer.word_embeddings":0, ...}
 * plan.budget();               // cuda:0=7211379664,cuda:1=10737418240,cpu=32212254720
 * plan.memory().get(Device.cuda(0)).freeBytes();
 * }</pre>
 *
 * @param deviceMap    where each module goes
 * @param budget       the budget the map was planned under
 * @param modelSize    bytes of the whole model under the plan's dtypes
 * @param largestLayer the largest layer before planning started
 * @param memory       per device, in the budget's order: see {@link DeviceMapPlanner#deviceMemory}
 */
public record DevicePlan(DeviceMap deviceMap, MaxMemory budget, double modelSize, LargestLayer largestLayer,
        Map<Device, DeviceMemory> memory) {

    public DevicePlan {
        memory = Collections.unmodifiableMap(new LinkedHashMap<>(memory));
    }

    /** Whether anything is placed on cpu or disk. */
    public boolean offloaded() {
        return deviceMap.asMap().values().stream().anyMatch(d -> d.isCpu() || d.isDisk());
    }
}
