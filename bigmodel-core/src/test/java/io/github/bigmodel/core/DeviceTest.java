package io.github.bigmodel.core;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import org.junit.jupiter.api.Test;

class DeviceTest {

    @Test
    void parsesEveryForm() {
        assertThat(Device.parse("cpu")).isEqualTo(Device.CPU);
        assertThat(Device.parse("meta")).isEqualTo(Device.META);
        assertThat(Device.parse("disk")).isEqualTo(Device.DISK);
        assertThat(Device.parse("remote")).isEqualTo(Device.REMOTE);
        assertThat(Device.parse("cuda")).isEqualTo(Device.cuda(0));
        assertThat(Device.parse("cuda:1")).isEqualTo(Device.cuda(1));
        assertThat(Device.parse(" 3 ")).isEqualTo(Device.cuda(3));
    }

    @Test
    void printsAsHfDeviceMap() {
        assertThat(Device.cuda(1).toString()).isEqualTo("cuda:1");
        assertThat(Device.cuda(1).toJsonValue()).isEqualTo(1);
        assertThat(Device.CPU.toJsonValue()).isEqualTo("cpu");
        assertThat(Device.DISK.toJsonValue()).isEqualTo("disk");
        assertThat(Device.fromJsonValue(2)).isEqualTo(Device.cuda(2));
        assertThat(Device.fromJsonValue("cuda:2")).isEqualTo(Device.cuda(2));
        assertThat(Device.fromJsonValue("cpu")).isEqualTo(Device.CPU);
        assertThat(Device.REMOTE.toJsonValue()).isEqualTo("remote");
    }

    @Test
    void remoteHoldsNoTensorHere() {
        assertThat(Device.REMOTE.isRemote()).isTrue();
        assertThat(Device.REMOTE.isTensorDevice()).isFalse();
        assertThat(Device.CPU.isRemote()).isFalse();
        assertThatThrownBy(() -> Tensors.toTorch(Device.REMOTE)).isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("another pipeline stage");
        assertThatThrownBy(() -> Tensors.toTorch(null)).isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("No device to run on");
    }

    @Test
    void rejectsAnythingElseNamingIt() {
        for (String bad : new String[] {"cuda:x", "gpu0", "", "CPU", "cuda:-1", "cuda:1:2", "mps0"}) {
            assertThatThrownBy(() -> Device.parse(bad)).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("'" + bad + "'");
        }
        assertThatThrownBy(() -> Device.parse(null)).isInstanceOf(IllegalArgumentException.class);
        assertThatThrownBy(() -> Device.fromJsonValue(1.5)).isInstanceOf(IllegalArgumentException.class);
    }

    @Test
    void ordersLikeAccelerate() {
        List<Device> devices = new ArrayList<>(List.of(Device.REMOTE, Device.DISK, Device.CPU, Device.cuda(1),
                Device.cuda(0)));
        Collections.sort(devices);
        assertThat(devices).containsExactly(Device.cuda(0), Device.cuda(1), Device.CPU, Device.DISK, Device.REMOTE);
    }
}
