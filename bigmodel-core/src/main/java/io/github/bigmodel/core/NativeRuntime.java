package io.github.bigmodel.core;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.BitSet;
import java.util.HashSet;
import java.util.Set;
import org.bytedeco.pytorch.Tensor;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

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
 *
 * <p><b>Threads.</b> libtorch's intra-op thread count (the threads one matmul or one softmax splits over) is set
 * when bigmodel makes its first tensor ({@link #applyThreads()}): {@value #THREADS} if set, else
 * {@code OMP_NUM_THREADS} if set, else the machine's physical cores ({@link #physicalCores()}: one thread per
 * core, not per hyper-thread, so a sibling stays free for the JVM's own threads). {@link #setThreads(int)} and the
 * command line's {@code --threads} change it later.
 *
 * <pre>{@code
 * java -Dbigmodel.threads=4 ...          // or
 * NativeRuntime.setThreads(4);
 * NativeRuntime.threads();               // 4
 * }</pre>
 */
public final class NativeRuntime {

    /** JavaCPP's system property for its limit on the bytes it allocates itself. */
    public static final String MAX_BYTES = "org.bytedeco.javacpp.maxBytes";
    /** JavaCPP's system property for its limit on the process's resident memory. */
    public static final String MAX_PHYSICAL_BYTES = "org.bytedeco.javacpp.maxPhysicalBytes";

    /** System property: libtorch intra-op threads (a positive integer). */
    public static final String THREADS = "bigmodel.threads";

    private static final Logger LOG = LoggerFactory.getLogger(NativeRuntime.class);

    private static volatile boolean initialized;
    private static volatile boolean threadsApplied;

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
                extractLibtorch();
                initialized = true;
            }
        }
    }

    /**
     * Extracts libtorch's native libraries into JavaCPP's cache before anything loads them. JavaCPP otherwise
     * extracts them one at a time as it loads them, and loads {@code libtorch.so} before {@code libtorch_cpu.so} is
     * in the cache: the dynamic linker then resolves {@code libtorch.so}'s dependency on {@code libtorch_cpu.so}
     * from the system's library path, and where a system libtorch is installed (Debian's {@code libtorch1.13}, a
     * dependency of {@code python3-torch}) two libtorch builds register their operators into one process and the
     * JVM crashes (SIGSEGV in {@code pthread_mutex_lock}) on the first run after each install or cache wipe. Files
     * already cached are kept; a failure is logged and JavaCPP's own extraction goes on as before.
     */
    private static void extractLibtorch() {
        String platform = org.bytedeco.javacpp.Loader.getPlatform();
        for (String folder : new String[] {platform, platform + "-gpu"}) {
            try {
                org.bytedeco.javacpp.Loader.cacheResources(Tensor.class, "/org/bytedeco/pytorch/" + folder + "/");
            } catch (IOException | RuntimeException e) {
                LOG.debug("libtorch's natives for {} not extracted ahead of loading: {}", folder, e.toString());
            }
        }
    }

    /**
     * Sets libtorch's intra-op threads to {@link #defaultThreads()} once per process; later calls do nothing (an
     * explicit {@link #setThreads(int)} is never undone).
     *
     * @throws IllegalArgumentException when {@value #THREADS} or {@code OMP_NUM_THREADS} is not a positive integer
     */
    public static void applyThreads() {
        if (threadsApplied) {
            return;
        }
        synchronized (NativeRuntime.class) {
            if (!threadsApplied) {
                init();
                int n = defaultThreads();
                org.bytedeco.pytorch.global.torch.set_num_threads(n);
                threadsApplied = true;
                LOG.debug("libtorch intra-op threads: {}", n);
            }
        }
    }

    /**
     * Sets libtorch's intra-op threads for the whole process now (every Java thread that runs libtorch kernels
     * after this uses {@code n}).
     *
     * @throws IllegalArgumentException when {@code n} is not positive
     */
    public static void setThreads(int n) {
        if (n <= 0) {
            throw new IllegalArgumentException("The thread count must be positive, got " + n);
        }
        synchronized (NativeRuntime.class) {
            init();
            org.bytedeco.pytorch.global.torch.set_num_threads(n);
            threadsApplied = true;
        }
    }

    /** libtorch's intra-op threads for the calling thread, after applying the default if nothing has yet. */
    public static int threads() {
        applyThreads();
        return org.bytedeco.pytorch.global.torch.get_num_threads();
    }

    /**
     * The thread count applied when nothing else is asked: {@value #THREADS}, else {@code OMP_NUM_THREADS}, else
     * {@link #physicalCores()}.
     *
     * @throws IllegalArgumentException when the property or the variable is set but not a positive integer
     */
    public static int defaultThreads() {
        return threadsFrom(System.getProperty(THREADS), System.getenv("OMP_NUM_THREADS"), physicalCores());
    }

    /** {@link #defaultThreads()} from given values: property first, then environment, then cores. */
    static int threadsFrom(String property, String environment, int cores) {
        if (property != null && !property.isBlank()) {
            return positive(property, "-D" + THREADS);
        }
        if (environment != null && !environment.isBlank()) {
            // OMP_NUM_THREADS may list nested levels ("4,2"): the first is the outer team.
            return positive(environment.split(",")[0], "OMP_NUM_THREADS");
        }
        return cores;
    }

    private static int positive(String value, String what) {
        int n;
        try {
            n = Integer.parseInt(value.trim());
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException(what + " must be a positive integer, got '" + value + "'", e);
        }
        if (n <= 0) {
            throw new IllegalArgumentException(what + " must be a positive integer, got " + n);
        }
        return n;
    }

    /**
     * Physical cores this process may run on: distinct (package, core) pairs among the CPUs of its affinity mask
     * (Linux sysfs), at most {@link Runtime#availableProcessors()} (which honours container CPU quotas). Falls back
     * to {@code availableProcessors()} where the topology cannot be read.
     */
    public static int physicalCores() {
        int available = Runtime.getRuntime().availableProcessors();
        try {
            BitSet allowed = allowedCpus();
            Set<String> cores = new HashSet<>();
            for (int cpu = allowed.nextSetBit(0); cpu >= 0; cpu = allowed.nextSetBit(cpu + 1)) {
                Path topology = Path.of("/sys/devices/system/cpu/cpu" + cpu + "/topology");
                String pkg = Files.readString(topology.resolve("physical_package_id")).trim();
                String core = Files.readString(topology.resolve("core_id")).trim();
                cores.add(pkg + ":" + core);
            }
            return cores.isEmpty() ? available : Math.max(1, Math.min(available, cores.size()));
        } catch (IOException | RuntimeException e) {
            LOG.debug("CPU topology not readable ({}); using {} available processors", e.toString(), available);
            return available;
        }
    }

    /** The CPUs of this process's affinity mask ({@code Cpus_allowed_list} of /proc/self/status). */
    private static BitSet allowedCpus() throws IOException {
        BitSet out = new BitSet();
        for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
            if (line.startsWith("Cpus_allowed_list:")) {
                for (String range : line.substring(line.indexOf(':') + 1).trim().split(",")) {
                    String[] ends = range.trim().split("-");
                    int from = Integer.parseInt(ends[0]);
                    int to = ends.length > 1 ? Integer.parseInt(ends[1]) : from;
                    out.set(from, to + 1);
                }
            }
        }
        if (out.isEmpty()) {
            throw new IOException("no Cpus_allowed_list");
        }
        return out;
    }

    /**
     * Asks the operating system to back {@code tensor}'s memory with 2 MiB pages where it can (Linux
     * {@code MADV_HUGEPAGE}, through bigmodel's native kernels library): for a memory-mapped checkpoint whose pages
     * are not yet cached they then come in as 2 MiB folios, each mapped by one TLB entry, which a decode step that
     * streams gigabytes of weights reads up to twice as fast (docs/benchmarks.md, "Kernels"). Pages already cached
     * in 4 KiB folios stay as they are. A hint only: false where it was not applied (other systems, no library).
     *
     * <pre>{@code
     * Tensor mapped = torch.from_file(path, ...);
     * NativeRuntime.adviseHugePages(mapped);
     * }</pre>
     */
    public static boolean adviseHugePages(Tensor tensor) {
        return io.github.bigmodel.core.kernel.NativeKernels.adviseHugePages(tensor.data_ptr().address(),
                tensor.nbytes());
    }
}
