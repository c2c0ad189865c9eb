package io.github.bigmodel.dispatch;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.github.bigmodel.core.Device;
import java.util.Map;
import org.junit.jupiter.api.Test;
import io.github.bigmodel.dispatch.plan.DeviceMap;
import io.github.bigmodel.dispatch.plan.DeviceMapPlanner;
import io.github.bigmodel.dispatch.plan.DeviceMemory;
import io.github.bigmodel.dispatch.plan.DevicePlan;
import io.github.bigmodel.dispatch.plan.MaxMemory;
import io.github.bigmodel.dispatch.plan.MemoryReservation;
import io.github.bigmodel.dispatch.plan.ModuleSizes;
import io.github.bigmodel.dispatch.plan.PlanOptions;
import io.github.bigmodel.dispatch.plan.Strategy;

/**
 * Planning with a {@link MemoryReservation} on a synthetic stack (on meta): reserved bytes of every block, offloaded
 * or not, are counted on the main device; blocks placed on another GPU count theirs there; no reservation plans
 * exactly as without one. Expected counts are derived from the sizes.
 */
class ReservationPlanningTest {

    private static final int BLOCKS = 8;
    private static final long PER_BLOCK = 20_000;
    private static final long WORKSPACE = 30_000;

    private static MemoryReservation reservation(SyntheticStack model) {
        MemoryReservation.Builder b = MemoryReservation.builder("test cache");
        for (int i = 0; i < BLOCKS; i++) {
            b.module("layers." + i, PER_BLOCK);
        }
        return b.workspace(WORKSPACE).build();
    }

    private static int blocksOn(DeviceMap map, Device d) {
        int n = 0;
        for (int i = 0; i < BLOCKS; i++) {
            n += d.equals(map.deviceOf("layers." + i)) ? 1 : 0;
        }
        return n;
    }

    private static PlanOptions.Builder options() {
        return PlanOptions.builder().noSplitModuleClasses("Block");
    }

    @Test
    void noReservationPlansExactlyAsBefore() {
        SyntheticStack model = new SyntheticStack(BLOCKS, 64);
        double block = ModuleSizes.compute(model, null, Map.of()).size("layers.0");
        MaxMemory budget = MaxMemory.of(Map.of(0, (long) (4.5 * block), "cpu", (long) (3 * block)));
        DevicePlan plain = DeviceMapPlanner.plan(model, Strategy.AUTO, budget, options().build());
        DevicePlan none = DeviceMapPlanner.plan(model, Strategy.AUTO, budget,
                options().reservation(MemoryReservation.NONE).build());
        assertThat(none.deviceMap()).isEqualTo(plain.deviceMap());
        assertThat(none.budget()).isEqualTo(plain.budget());
        assertThat(plain.memory().values()).allSatisfy(m -> {
            assertThat(m.reservedBytes()).isZero();
            assertThat(m.workspaceBytes()).isZero();
        });
        // Weights per device add up to the model.
        assertThat(plain.memory().values().stream().mapToDouble(DeviceMemory::weightBytes).sum())
                .isEqualTo(plain.modelSize());
    }

    @Test
    void oneGpuKeepsTheReservationOfEveryBlockAndTakesFewerBlocks() {
        SyntheticStack model = new SyntheticStack(BLOCKS, 64);
        double block = ModuleSizes.compute(model, null, Map.of()).size("layers.0");
        double gpu = 6.5 * block;
        MaxMemory budget = MaxMemory.of(Map.of(0, (long) gpu, "cpu", (long) (20 * block)));
        DevicePlan plain = DeviceMapPlanner.plan(model, Strategy.AUTO, budget, options().build());
        DevicePlan reserved = DeviceMapPlanner.plan(model, Strategy.AUTO, budget,
                options().reservation(reservation(model)).build());

        // GPU 0 keeps the largest layer (one block) for offloaded blocks, the workspace, and every block's bytes.
        int plainExpected = (int) Math.floor((gpu - block) / block);
        int reservedExpected = (int) Math.floor((gpu - block - WORKSPACE - BLOCKS * PER_BLOCK) / block);
        assertThat(blocksOn(plain.deviceMap(), Device.cuda(0))).isEqualTo(plainExpected);
        assertThat(blocksOn(reserved.deviceMap(), Device.cuda(0))).isEqualTo(reservedExpected)
                .isLessThan(plainExpected);

        DeviceMemory g = reserved.memory().get(Device.cuda(0));
        assertThat(g.reservedBytes()).isEqualTo(BLOCKS * PER_BLOCK);
        assertThat(g.workspaceBytes()).isEqualTo(WORKSPACE);
        assertThat(g.weightBytes()).isEqualTo(reservedExpected * block);
        assertThat(g.offloadBuffer()).isEqualTo(block);
        assertThat(g.freeBytes()).isGreaterThanOrEqualTo(0);
        DeviceMemory cpu = reserved.memory().get(Device.CPU);
        // Blocks on the cpu execute on GPU 0: the cpu holds their weights only.
        assertThat(cpu.reservedBytes()).isZero();
        assertThat(cpu.workspaceBytes()).isZero();
        assertThat(cpu.weightBytes()).isEqualTo((BLOCKS - reservedExpected) * block);
    }

    @Test
    void aSecondGpuCountsTheBlocksItTakesAndTheMainDeviceOnlyTheRest() {
        SyntheticStack model = new SyntheticStack(BLOCKS, 64);
        double block = ModuleSizes.compute(model, null, Map.of()).size("layers.0");
        double gpu0 = 5.5 * block;
        double gpu1 = 3.5 * block;
        MaxMemory budget = MaxMemory.of(Map.of(0, (long) gpu0, 1, (long) gpu1, "cpu", (long) (20 * block)));
        DevicePlan plan = DeviceMapPlanner.plan(model, Strategy.SEQUENTIAL, budget,
                options().reservation(reservation(model)).build());
        int on1 = blocksOn(plan.deviceMap(), Device.cuda(1));
        // GPU 1 executes what it holds: its blocks count their bytes with their weights, next to the workspace.
        assertThat(on1).isEqualTo((int) Math.floor((gpu1 - WORKSPACE) / (block + PER_BLOCK)));
        int on0 = blocksOn(plan.deviceMap(), Device.cuda(0));
        int onCpu = blocksOn(plan.deviceMap(), Device.CPU);
        assertThat(on0 + on1 + onCpu).isEqualTo(BLOCKS);
        assertThat(onCpu).isPositive();
        Map<Device, DeviceMemory> m = plan.memory();
        assertThat(m.get(Device.cuda(1)).reservedBytes()).isEqualTo(on1 * PER_BLOCK);
        assertThat(m.get(Device.cuda(0)).reservedBytes()).isEqualTo((on0 + onCpu) * PER_BLOCK);
        assertThat(m.get(Device.cuda(0)).freeBytes()).isGreaterThanOrEqualTo(0);
        assertThat(m.get(Device.cuda(1)).freeBytes()).isGreaterThanOrEqualTo(0);
        // The main device reserves only for what executes there (blocks on GPU 1 are not counted twice).
        int expected0 = (int) Math.floor((gpu0 - block - WORKSPACE - (BLOCKS - on1) * PER_BLOCK) / block);
        assertThat(on0).isEqualTo(expected0);
    }

    @Test
    void badReservationsAreRefused() {
        assertThatThrownBy(() -> MemoryReservation.builder("x").module("layers.0", -1))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("layers.0");
        assertThatThrownBy(() -> MemoryReservation.builder("x").workspace(-5))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("-5");
        assertThatThrownBy(() -> MemoryReservation.builder(" ")).isInstanceOf(IllegalArgumentException.class);
    }
}
