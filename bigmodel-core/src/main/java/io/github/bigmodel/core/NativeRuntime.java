package io.github.bigmodel.core;

/**
 * Settings that must be in place before JavaCPP loads, applied once by every bigmodel entry point that touches
 * libtorch.
 *
 * <p>JavaCPP compares the process's memory with {@code maxPhysicalBytes} (by default twice {@code -Xmx}) at each of
 * its own allocations, calling {@code System.gc()} and finally failing with "Physical memory usage is too high".
 * Model weights are far larger than any sensible heap and are allocated by libtorch, not JavaCPP, so that check only
 * produces GC storms and false failures. Measured with JavaCPP 1.5.13 (JavaCppLimitsTest): its count leaves out
 * file-backed pages, so memory-mapped weights do not trip it, but weights held in anonymous memory (loaded or
 * converted onto the CPU) do. bigmodel frees native memory deterministically (try-with-resources and
 * {@code PointerScope}), so both limits are switched off unless the user set them:
 * {@code -Dorg.bytedeco.javacpp.maxBytes} and {@code -Dorg.bytedeco.javacpp.maxPhysicalBytes} still win.
 *
 * <pre>{@code
 * NativeRuntime.init();   // idempotent; called for you by bigmodel's own classes
 * }</pre>
 */
public final class NativeRuntime {

    /** JavaCPP's system property for its limit on the bytes it allocates itself. */
    public static final String MAX_BYTES = "org.bytedeco.javacpp.maxBytes";
    /** JavaCPP's system property for its limit on the process's resident memory. */
    public static final String MAX_PHYSICAL_BYTES = "org.bytedeco.javacpp.maxPhysicalBytes";

    private static volatile boolean initialized;

    private NativeRuntime() {
    }

    /** Applies the settings if JavaCPP has not read them yet. */
    public static void init() {
        if (initialized) {
            return;
        }
        synchronized (NativeRuntime.class) {
            if (!initialized) {
                if (System.getProperty(MAX_BYTES) == null) {
                    System.setProperty(MAX_BYTES, "0");
                }
                if (System.getProperty(MAX_PHYSICAL_BYTES) == null) {
                    System.setProperty(MAX_PHYSICAL_BYTES, "0");
                }
                initialized = true;
            }
        }
    }
}
