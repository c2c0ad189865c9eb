package io.github.bigmodel.core;

import static org.assertj.core.api.Assertions.assertThat;

import org.junit.jupiter.api.Test;

/**
 * The seed example of accelerate's big-model docs: a model of 1000 Linear(10000, 10000) layers, just over 100B
 * parameters (400 GB in float32), is built without allocating any of it.
 */
class EmptyInitTest {

    @Test
    void hundredBillionParameterModelCostsNothing() {
        ProcessMemory nativeBefore = ProcessMemory.read();
        Runtime rt = Runtime.getRuntime();
        System.gc();
        long heapBefore = rt.totalMemory() - rt.freeMemory();
        long start = System.nanoTime();

        ModuleList<Linear> model = new ModuleList<>();
        for (int i = 0; i < 1000; i++) {
            model.add(new Linear(10000, 10000, true, DType.FLOAT32));
        }
        long params = model.parameterCount();

        double seconds = (System.nanoTime() - start) / 1e9;
        long heapAfter = rt.totalMemory() - rt.freeMemory();
        ProcessMemory nativeAfter = ProcessMemory.read();

        assertThat(params).isEqualTo(1000L * (10000L * 10000L + 10000L));
        assertThat(model.byteSize()).isEqualTo(params * 4);
        assertThat(model.namedParameters().values()).allMatch(p -> p.device().isMeta() && !p.isMaterialized());
        assertThat(seconds).as("build time in seconds").isLessThan(2.0);
        assertThat(heapAfter - heapBefore).as("heap growth").isLessThan(64L << 20);
        if (ProcessMemory.isSupported()) {
            // Resident anonymous memory includes the heap's growth, so this bounds heap + native together.
            assertThat(nativeAfter.anonymousBytes() - nativeBefore.anonymousBytes()).as("anonymous memory growth")
                    .isLessThan(64L << 20);
        }
    }
}
