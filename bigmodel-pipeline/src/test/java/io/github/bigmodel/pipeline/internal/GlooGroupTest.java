package io.github.bigmodel.pipeline.internal;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.net.ServerSocket;
import java.time.Duration;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.TCPStore;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;

/** Two ranks in one JVM over loopback: a tensor crosses intact, and a receive nobody answers times out. */
class GlooGroupTest {

    static int freePort() throws Exception {
        try (ServerSocket s = new ServerSocket(0)) {
            return s.getLocalPort();
        }
    }

    @Test
    void aTensorCrossesAndASilentPeerTimesOut() throws Exception {
        int port = freePort();
        Duration t = Duration.ofSeconds(20);
        TCPStore server = GlooGroup.store("127.0.0.1", port, true, t);
        CompletableFuture<GlooGroup> other = CompletableFuture.supplyAsync(() -> GlooGroup.join("127.0.0.1", port,
                "g0", 1, 2, "127.0.0.1", t));
        GlooGroup zero = GlooGroup.join("127.0.0.1", port, "g0", 0, 2, "127.0.0.1", t);
        GlooGroup one = other.get(30, TimeUnit.SECONDS);
        Tensor sent = torch.arange(new Scalar(12)).to(torch.ScalarType.Float).reshape(3, 4);
        Tensor got = torch.zeros(3, 4);
        CompletableFuture<Void> receive = CompletableFuture.runAsync(() -> one.recv(got, 0, t));
        zero.send(sent, 1, t);
        receive.get(30, TimeUnit.SECONDS);
        assertThat(got.equal(sent)).isTrue();
        long start = System.nanoTime();
        assertThatThrownBy(() -> zero.recv(torch.zeros(1), 1, Duration.ofMillis(500)))
                .isInstanceOf(GlooGroup.GroupBrokenException.class);
        assertThat(System.nanoTime() - start).isLessThan(TimeUnit.SECONDS.toNanos(10));
        assertThat(zero.isBroken()).isTrue();
        // A second generation under a new prefix of the same store, after the first is released.
        zero.close();
        one.close();
        CompletableFuture<GlooGroup> again = CompletableFuture.supplyAsync(() -> GlooGroup.join("127.0.0.1", port,
                "g1", 1, 2, "127.0.0.1", t));
        GlooGroup zero2 = GlooGroup.join("127.0.0.1", port, "g1", 0, 2, "127.0.0.1", t);
        GlooGroup one2 = again.get(30, TimeUnit.SECONDS);
        Tensor back = torch.zeros(3, 4);
        CompletableFuture<Void> receive2 = CompletableFuture.runAsync(() -> zero2.recv(back, 1, t));
        one2.send(sent, 0, t);
        receive2.get(30, TimeUnit.SECONDS);
        assertThat(back.equal(sent)).isTrue();
        zero2.close();
        one2.close();
        server.close();
    }
}
