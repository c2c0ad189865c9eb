package io.github.bigmodel.core;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicReference;
import org.bytedeco.pytorch.Tensor;
import org.junit.jupiter.api.Test;

/** The guard that makes closing a model wait for the threads using it, and refuse the ones that come after. */
class UseGuardTest {

    @Test
    void closeWaitsForTheThreadInsideThenRefusesNewUsers() throws Exception {
        UseGuard guard = new UseGuard("model T");
        CountDownLatch inside = new CountDownLatch(1);
        CountDownLatch leave = new CountDownLatch(1);
        Thread user = new Thread(() -> {
            guard.enter();
            guard.enter(); // nested: a forward inside a forward
            inside.countDown();
            try {
                leave.await();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            guard.exit();
            guard.exit();
        });
        user.start();
        assertThat(inside.await(10, TimeUnit.SECONDS)).isTrue();
        assertThat(guard.activeUsers()).isEqualTo(1);
        AtomicBoolean closed = new AtomicBoolean();
        Thread closer = new Thread(() -> {
            guard.close();
            closed.set(true);
        });
        closer.start();
        Thread.sleep(300);
        assertThat(closed).as("close returned while a thread was inside").isFalse();
        assertThat(guard.isClosed()).isTrue();
        assertThatThrownBy(guard::enter).isInstanceOf(ModelClosedException.class).hasMessageContaining("model T")
                .hasMessageContaining("closed");
        leave.countDown();
        closer.join(10_000);
        assertThat(closed).as("close returned once the last user left").isTrue();
        assertThat(guard.activeUsers()).isZero();
        assertThatThrownBy(guard::checkOpen).isInstanceOf(ModelClosedException.class);
        guard.reopen();
        guard.enter();
        guard.exit();
    }

    @Test
    void aThreadInsideCannotCloseAndAnExitWithoutEnterIsRefused() {
        UseGuard guard = new UseGuard("model T");
        assertThatThrownBy(guard::exit).isInstanceOf(IllegalStateException.class)
                .hasMessageContaining("did not enter");
        guard.enter();
        assertThat(guard.isHeldByCurrentThread()).isTrue();
        assertThatThrownBy(guard::close).isInstanceOf(IllegalStateException.class)
                .isNotInstanceOf(ModelClosedException.class).hasMessageContaining("inside its own forward pass");
        assertThat(guard.isClosed()).as("a refused close changes nothing").isFalse();
        guard.exit();
        guard.close();
        guard.close(); // idempotent
        assertThat(guard.isClosed()).isTrue();
    }

    @Test
    void anInterruptDoesNotCutTheWaitShortAndIsKept() throws Exception {
        UseGuard guard = new UseGuard("model T");
        CountDownLatch inside = new CountDownLatch(1);
        CountDownLatch leave = new CountDownLatch(1);
        Thread user = new Thread(() -> {
            guard.enter();
            inside.countDown();
            try {
                leave.await();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            guard.exit();
        });
        user.start();
        assertThat(inside.await(10, TimeUnit.SECONDS)).isTrue();
        AtomicBoolean returned = new AtomicBoolean();
        AtomicBoolean interruptKept = new AtomicBoolean();
        Thread closer = new Thread(() -> {
            guard.close();
            returned.set(true);
            interruptKept.set(Thread.currentThread().isInterrupted());
        });
        closer.start();
        Thread.sleep(100);
        closer.interrupt();
        Thread.sleep(300);
        assertThat(returned).as("close returned on interrupt while a user was inside").isFalse();
        leave.countDown();
        closer.join(10_000);
        assertThat(returned).isTrue();
        assertThat(interruptKept).as("the interrupt is kept for the caller").isTrue();
    }

    /** A module whose forward runs its hooks, recording the order in which hooks saw it. */
    static final class Probe extends Module {
        Probe() {
            super("Probe");
        }

        void forward() {
            try (ForwardScope f = enterForward()) {
                f.hashCode();
            }
        }
    }

    @Test
    void theGuardHookRunsBeforeEveryOtherHookOfTheModule() {
        Probe probe = new Probe();
        List<String> seen = new ArrayList<>();
        AtomicReference<Boolean> heldWhenOtherHookRan = new AtomicReference<>();
        probe.addForwardHook(new ForwardHook() {
            @Override
            public void beforeForward(Module module) {
                heldWhenOtherHookRan.set(module.useGuard().isHeldByCurrentThread());
                seen.add("other");
            }

            @Override
            public Tensor onInput(Module module, Tensor input) {
                return input;
            }
        });
        HookHandle h = probe.addFirstForwardHook(probe.useGuard().forwardHook());
        probe.forward();
        assertThat(heldWhenOtherHookRan.get()).as("guard held before the other hook brings weights in").isTrue();
        assertThat(probe.useGuard().activeUsers()).as("left after the forward").isZero();
        probe.useGuard().close();
        seen.clear();
        assertThatThrownBy(probe::forward).isInstanceOf(ModelClosedException.class);
        assertThat(seen).as("no other hook runs once closed").isEmpty();
        h.remove();
        assertThat(probe.forwardHooks()).hasSize(1);
    }
}
