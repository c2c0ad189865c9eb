package io.github.bigmodel.dispatch.hooks;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.ModelClosedException;
import io.github.bigmodel.core.NativeRuntime;
import io.github.bigmodel.core.Parameter;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The crash of issue 18: {@code DispatchedModel.close()} closed the prefetcher without waiting for its running read,
 * then freed the mapped views that read was aliasing. Now {@link Prefetcher#close()} returns only after the running
 * read has ended, skips the queued ones, frees what was read for nobody, and every later {@code take} fails with
 * {@link ModelClosedException}; a read of a closed offload store or of a released CPU copy fails the same way.
 */
class PrefetcherCloseTest {

    @TempDir
    Path dir;

    @BeforeAll
    static void init() {
        NativeRuntime.init();
    }

    /** A source whose reads are counted and may block until released; keeps what it handed out. */
    static final class GatedSource implements WeightSource {
        final CountDownLatch entered = new CountDownLatch(1);
        final CountDownLatch release = new CountDownLatch(1);
        final AtomicInteger reads = new AtomicInteger();
        final List<Tensor> handedOut = new ArrayList<>();
        final boolean gated;

        GatedSource(boolean gated) {
            this.gated = gated;
        }

        @Override
        public Tensor read() {
            reads.incrementAndGet();
            if (gated) {
                entered.countDown();
                try {
                    release.await();
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
            }
            Tensor t = torch.ones(4);
            synchronized (handedOut) {
                handedOut.add(t);
            }
            return t;
        }

        @Override
        public long byteLength() {
            return 16;
        }

        @Override
        public boolean onDisk() {
            return false;
        }
    }

    private static OffloadedWeights stage(String name, WeightSource source) {
        return new OffloadedWeights(name, Device.CPU, Map.of(Parameter.empty(DType.FLOAT32, 4), source));
    }

    @Test
    void closeWaitsForTheRunningReadSkipsQueuedOnesAndFreesWhatNobodyTook() throws Exception {
        GatedSource first = new GatedSource(false);
        GatedSource running = new GatedSource(true);
        GatedSource queued = new GatedSource(false);
        Prefetcher prefetcher = new Prefetcher(List.of(stage("a", first), stage("b", running), stage("c", queued)),
                2);
        Map<Parameter, Tensor> taken = prefetcher.take(0); // read now; b and c scheduled, b blocks in its read
        taken.values().forEach(Tensor::close);
        assertThat(running.entered.await(10, TimeUnit.SECONDS)).as("prefetch of b started").isTrue();

        AtomicBoolean closed = new AtomicBoolean();
        Thread closer = new Thread(() -> {
            prefetcher.close();
            closed.set(true);
        });
        closer.start();
        Thread.sleep(300);
        assertThat(closed).as("close returned while the prefetch thread was still reading").isFalse();
        assertThat(prefetcher.isCancelled()).isTrue();
        assertThatThrownBy(() -> prefetcher.take(1)).isInstanceOf(ModelClosedException.class)
                .hasMessageContaining("closed");

        running.release.countDown();
        closer.join(10_000);
        assertThat(closed).as("close returned once the read ended").isTrue();
        assertThat(queued.reads).as("a read queued before close never starts").hasValue(0);
        assertThat(running.reads).hasValue(1);
        assertThat(running.handedOut).hasSize(1);
        assertThat(running.handedOut.get(0).isNull()).as("the prefetched tensor nobody took is freed").isTrue();
        assertThatThrownBy(() -> prefetcher.take(0)).isInstanceOf(ModelClosedException.class);
        prefetcher.close(); // idempotent
    }

    @Test
    void aTakeWaitingForItsReadWhenCloseBeginsGetsTheExceptionAndNothingLeaks() throws Exception {
        GatedSource first = new GatedSource(false);
        GatedSource slow = new GatedSource(true);
        Prefetcher prefetcher = new Prefetcher(List.of(stage("a", first), stage("b", slow)), 1);
        prefetcher.take(0).values().forEach(Tensor::close);
        assertThat(slow.entered.await(10, TimeUnit.SECONDS)).isTrue();
        List<Throwable> failures = new ArrayList<>();
        Thread forward = new Thread(() -> {
            try {
                prefetcher.take(1).values().forEach(Tensor::close);
            } catch (RuntimeException e) {
                failures.add(e);
            }
        });
        forward.start();
        Thread.sleep(100); // the forward waits in take(1) for b's read
        prefetcher.cancel();
        slow.release.countDown();
        forward.join(10_000);
        prefetcher.close();
        assertThat(failures).singleElement().isInstanceOf(ModelClosedException.class);
        assertThat(slow.handedOut).allSatisfy(t -> assertThat(t.isNull()).as("freed").isTrue());
    }

    @Test
    void readsOfAClosedOffloadStoreOrAReleasedCpuCopyFailWithTheException() {
        OffloadStore store = OffloadStore.open(dir.resolve("offload"), OffloadStore.inMemorySource(null));
        WeightSource mapped = store.source("w", DType.FLOAT32, new long[] {4}, () -> torch.ones(4));
        store.commit();
        Tensor alias = mapped.read();
        store.close();
        assertThatThrownBy(mapped::read).isInstanceOf(ModelClosedException.class).hasMessageContaining("w");
        // An alias handed out before close keeps its mapping alive.
        assertThat(alias.sum().item_float()).isEqualTo(4f);
        alias.close();

        Tensor copy = torch.ones(4);
        WeightSource cpu = WeightSource.of(copy);
        cpu.read().close();
        copy.close();
        assertThatThrownBy(cpu::read).isInstanceOf(ModelClosedException.class);
    }
}
