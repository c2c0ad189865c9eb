package io.github.bigmodel.dispatch.plan;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.Linear;
import io.github.bigmodel.core.Module;
import io.github.bigmodel.core.ModuleList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/** Host-qualified device maps: the syntax, its round trip, the pipeline order of hosts and each host's own map. */
class DeviceMapHostsTest {

    private static final String PIPELINE = "{\"embed\":\"box-a/cuda:0\",\"layers.0\":\"box-a/cpu\","
            + "\"layers.1\":\"box-b/cpu\",\"layers.2\":\"box-b/disk\",\"head\":\"gpu.lan_2/cuda:1\"}";

    private static Module stack() {
        Module root = new Module("Stack");
        root.registerModule("embed", new Linear(4, 4, false, DType.FLOAT32));
        ModuleList<Linear> layers = root.registerModule("layers", new ModuleList<>());
        for (int i = 0; i < 3; i++) {
            layers.add(new Linear(4, 4, false, DType.FLOAT32));
        }
        root.registerModule("head", new Linear(4, 4, false, DType.FLOAT32));
        return root;
    }

    @Test
    void hostQualifiedValuesParseAndRoundTrip() {
        DeviceMap map = DeviceMap.fromJson(PIPELINE);
        assertThat(map.hosts()).containsExactly("box-a", "box-b", "gpu.lan_2");
        assertThat(map.get("embed")).isEqualTo(Device.cuda(0));
        assertThat(map.placements().get("layers.2")).isEqualTo(new HostDevice("box-b", Device.DISK));
        assertThat(map.hostOf("layers.1.weight")).isEqualTo("box-b");
        assertThat(map.hostOf("nothing")).isNull();
        assertThat(map.toJson()).isEqualTo(PIPELINE);
        assertThat(DeviceMap.fromJson(map.toJson())).isEqualTo(map);
        // Same devices on other hosts are another map.
        assertThat(map).isNotEqualTo(DeviceMap.of(map.asMap()));
    }

    @Test
    void aPlainMapNamesNoHostAndIsUnchanged() {
        DeviceMap plain = DeviceMap.fromJson("{\"embed\":0,\"layers\":\"cpu\",\"head\":\"remote\"}");
        assertThat(plain.hosts()).isEmpty();
        assertThat(plain.hostOf("layers.1")).isNull();
        assertThat(plain.get("head")).isEqualTo(Device.REMOTE);
        assertThat(plain.toJson()).isEqualTo("{\"embed\":0,\"layers\":\"cpu\",\"head\":\"remote\"}");
        assertThat(plain).isEqualTo(DeviceMap.of(plain.asMap()));
        assertThatThrownBy(() -> plain.forHost("box-a")).isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("names no hosts");
    }

    @Test
    void forHostKeepsItsOwnEntriesAndMakesTheOthersRemote() {
        DeviceMap map = DeviceMap.fromJson(PIPELINE);
        assertThat(map.forHost("box-b").toJson()).isEqualTo("{\"embed\":\"remote\",\"layers.0\":\"remote\","
                + "\"layers.1\":\"cpu\",\"layers.2\":\"disk\",\"head\":\"remote\"}");
        assertThat(map.forHost("box-a").asMap()).containsExactly(Map.entry("embed", Device.cuda(0)),
                Map.entry("layers.0", Device.CPU), Map.entry("layers.1", Device.REMOTE),
                Map.entry("layers.2", Device.REMOTE), Map.entry("head", Device.REMOTE));
        assertThat(map.forHost("gpu.lan_2").hosts()).isEmpty();
        assertThatThrownBy(() -> map.forHost("box-c")).isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("box-c").hasMessageContaining("[box-a, box-b, gpu.lan_2]");
        // Each host's map covers the model and passes accelerate's check, remote entries included.
        Module model = stack();
        for (String host : map.hosts()) {
            assertThat(map.forHost(host).checkDeviceMap(model)).as(host).isEmpty();
        }
    }

    @Test
    void badHostsAndMixedMapsAreRefusedClearly() {
        assertThatThrownBy(() -> DeviceMap.fromJson("{\"embed\":\"box a/cpu\"}"))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("'embed'")
                .hasMessageContaining("Invalid host name 'box a'");
        assertThatThrownBy(() -> DeviceMap.fromJson("{\"embed\":\"box:1/cpu\"}"))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("Invalid host name 'box:1'");
        assertThatThrownBy(() -> DeviceMap.fromJson("{\"embed\":\"/cpu\"}"))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("Invalid host name ''");
        assertThatThrownBy(() -> DeviceMap.fromJson("{\"embed\":\"box-a/gpu0\"}"))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("Unknown device 'gpu0'");
        assertThatThrownBy(() -> DeviceMap.fromJson("{\"embed\":\"box-a/cpu/0\"}"))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("more than one '/'");
        assertThatThrownBy(() -> DeviceMap.fromJson("{\"embed\":\"box-a/remote\"}"))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("contradictory");
        assertThatThrownBy(() -> DeviceMap.fromJson("{\"embed\":\"box-a/meta\"}"))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("meta");
        assertThatThrownBy(() -> DeviceMap.fromJson("{\"embed\":\"box-a/cpu\",\"head\":\"cpu\"}"))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("'head' (cpu) names no host")
                .hasMessageContaining("box-a/cpu");
        assertThatThrownBy(() -> DeviceMap.fromJson("{\"embed\":\"box-a/cpu\",\"head\":0}"))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("names no host");
    }

    @Test
    void theBuilderTakesHostTextAndWarnsWhenAPipelineComesBackToAHost() {
        Module model = stack();
        DeviceMap.Builder b = DeviceMap.builder(model).put("embed", "box-a/cuda:0")
                .put("layers.0", "box-b/cpu").put("layers.1", "box-a/cpu").put("layers.2", "box-a/cpu")
                .put("head", HostDevice.parse("box-b/cpu"));
        DeviceMap map = b.build();
        assertThat(map.hosts()).containsExactly("box-a", "box-b");
        assertThat(b.warnings()).anyMatch(w -> w.contains("returns to host box-a at 'layers.1'")
                && w.contains("box-a -> box-b -> box-a"));
        DeviceMap ranges = DeviceMap.builder(model).put("embed", "box-a/cuda:0")
                .layers("layers", 1, 2, HostDevice.parse("box-a/cpu"))
                .layers("layers", 3, 3, HostDevice.parse("box-b/disk"))
                .put("head", "box-b/cpu").build();
        assertThat(ranges.toJson()).isEqualTo("{\"embed\":\"box-a/cuda:0\",\"layers.0\":\"box-a/cpu\","
                + "\"layers.1\":\"box-a/cpu\",\"layers.2\":\"box-b/disk\",\"head\":\"box-b/cpu\"}");
        DeviceMap.Builder mixed = DeviceMap.builder(model).put("embed", "box-a/cuda:0").put("layers", Device.CPU)
                .put("head", "box-a/cpu");
        assertThatThrownBy(mixed::build).isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("names no host");
    }

    @Test
    void inModuleOrderKeepsHostsAndReordersThem() {
        Map<String, HostDevice> m = new LinkedHashMap<>();
        m.put("head", HostDevice.parse("box-b/cpu"));
        m.put("layers", HostDevice.parse("box-a/cpu"));
        m.put("embed", HostDevice.parse("box-a/cuda:0"));
        DeviceMap map = DeviceMap.ofPlacements(m);
        assertThat(map.hosts()).containsExactly("box-b", "box-a");
        DeviceMap ordered = map.inModuleOrder(stack());
        assertThat(ordered.hosts()).containsExactly("box-a", "box-b");
        assertThat(ordered.toJson()).isEqualTo("{\"embed\":\"box-a/cuda:0\",\"layers\":\"box-a/cpu\","
                + "\"head\":\"box-b/cpu\"}");
    }

    @Test
    void remoteIsAPlacementNotABudgetNorAnExecutionDevice() {
        assertThat(Device.parse("remote")).isEqualTo(Device.REMOTE);
        assertThat(Device.REMOTE.isTensorDevice()).isFalse();
        assertThatThrownBy(() -> MaxMemory.ofBytes(Map.of(Device.REMOTE, 1L)))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("remote");
        assertThatThrownBy(() -> MaxMemory.of(Map.of(Device.REMOTE, 1L)))
                .isInstanceOf(DeviceMapException.class);
        assertThatThrownBy(() -> PlanOptions.builder().executionDevice(Device.REMOTE))
                .isInstanceOf(IllegalArgumentException.class);
        List<String> hosts = DeviceMap.fromJson("{\"a\":\"h1/cpu\",\"b\":\"h2/cpu\",\"c\":\"h1/disk\"}").hosts();
        assertThat(hosts).containsExactly("h1", "h2");
    }
}
