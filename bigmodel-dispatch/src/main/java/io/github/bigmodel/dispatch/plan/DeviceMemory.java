package io.github.bigmodel.dispatch.plan;

import io.github.bigmodel.core.Device;

/**
 * How one device's budget is used under a device map: the weights placed there, the module reservations counted
 * there (a {@link MemoryReservation}'s bytes of the modules executing on it, e.g. their KV cache), the workspace of
 * one forward step when it executes anything, the buffer a main device keeps to bring an offloaded layer in, and
 * what is left.
 *
 * <pre>{@code
 * DevicePlan plan = DeviceMapPlanner.plan(model, Strategy.AUTO, MaxMemory.parse("0=10GiB,cpu=64GiB"), options);
 * DeviceMemory gpu = plan.memory().get(Device.cuda(0));
 * gpu.reservedBytes();   // 234881024 (KV cache of 28 layers at 8192 positions, fp16)
 * gpu.freeBytes();       // what the budget has left
 * }</pre>
 *
 * @param device          the device
 * @param weightBytes     bytes of the weights placed on it (at the precision of the device they execute on)
 * @param reservedBytes   reserved bytes of the modules executing on it
 * @param workspaceBytes  the workspace, when it executes something (else 0)
 * @param offloadBuffer   on the main device: the largest offloaded layer, brought in to execute (else 0)
 * @param budgetBytes     its budget ({@link Double#POSITIVE_INFINITY} for disk or a device without one)
 */
public record DeviceMemory(Device device, double weightBytes, long reservedBytes, long workspaceBytes,
        double offloadBuffer, double budgetBytes) {

    /** The budget minus everything counted here (negative when over budget; infinite without a budget). */
    public double freeBytes() {
        return budgetBytes - weightBytes - reservedBytes - workspaceBytes - offloadBuffer;
    }

    /** Everything counted here. */
    public double usedBytes() {
        return weightBytes + reservedBytes + workspaceBytes + offloadBuffer;
    }
}
