package io.github.bigmodel.core;

/**
 * Settings that must be in place before JavaCPP loads, applied once by every bigmodel entry point that touches
 * libtorch.
 *
 * <p>JavaCPP tracks "physical bytes" as the process's resident set, which includes the pages of memory-mapped
 * weights; with its defaults (multiples of {@code -Xmx}) reading a large mapped checkpoint would trigger
 * {@code System.gc()} storms and finally "Physical memory usage is too high". bigmodel frees native memory
 * deterministically (try-with-resources and {@code PointerScope}), so both limits are switched off unless the user
 * set them: {@code -Dorg.bytedeco.javacpp.maxBytes} and {@code -Dorg.bytedeco.javacpp.maxPhysicalBytes} still win.
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
