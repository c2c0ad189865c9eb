package io.github.bigmodel.pipeline;

import io.github.bigmodel.core.NativeRuntime;
import java.io.IOException;
import java.net.ServerSocket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/** Worker JVMs of a test: started with the test's class path and thread count, always destroyed on close. */
final class Workers implements AutoCloseable {

    private final List<Process> processes = new ArrayList<>();
    private final List<Path> logs = new ArrayList<>();
    private final Path dir;
    /** Put before the java command (e.g. {@code ip netns exec NS}), and the store host and bind address. */
    private final List<String> prefix;
    private final String storeHost;
    private final String bindAddress;

    Workers(Path dir) {
        this(dir, List.of(), "127.0.0.1", "127.0.0.1");
    }

    Workers(Path dir, List<String> prefix, String storeHost, String bindAddress) {
        this.dir = dir;
        this.prefix = prefix;
        this.storeHost = storeHost;
        this.bindAddress = bindAddress;
    }

    static int freePort() throws IOException {
        try (ServerSocket s = new ServerSocket(0)) {
            return s.getLocalPort();
        }
    }

    /** Starts a worker; {@code jvmArgs} go before the class name. */
    Process start(int port, int rank, int world, Path model, Path map, int joinSeconds, int stepSeconds,
            String... jvmArgs) throws IOException {
        List<String> cmd = new ArrayList<>(prefix);
        cmd.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
        cmd.add("-Xmx1g");
        // The same intra-op threads as this JVM: a reduction split differently would round differently.
        cmd.add("-D" + NativeRuntime.THREADS + "=" + NativeRuntime.threads());
        cmd.add("-Dorg.slf4j.simpleLogger.defaultLogLevel=info");
        // The same matmul kernels as this JVM (bigmodel's native kernels round bf16/fp16 steps their own way).
        String kernels = System.getProperty("bigmodel.kernels.native");
        if (kernels != null) {
            cmd.add("-Dbigmodel.kernels.native=" + kernels);
        }
        cmd.addAll(List.of(jvmArgs));
        cmd.add("-cp");
        cmd.add(System.getProperty("java.class.path"));
        cmd.add(WorkerProcess.class.getName());
        cmd.addAll(List.of(storeHost, Integer.toString(port), Integer.toString(rank), Integer.toString(world),
                model.toString(), map.toString(), Integer.toString(joinSeconds), Integer.toString(stepSeconds),
                bindAddress));
        Path log = dir.resolve("worker-" + processes.size() + "-rank" + rank + ".log");
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile()).start();
        processes.add(p);
        logs.add(log);
        return p;
    }

    /** The output of the worker started {@code index}-th. */
    String log(int index) throws IOException {
        return Files.readString(logs.get(index));
    }

    String allLogs() throws IOException {
        StringBuilder b = new StringBuilder();
        for (Path l : logs) {
            b.append("---- ").append(l.getFileName()).append('\n').append(Files.readString(l));
        }
        return b.toString();
    }

    /** Waits for every worker to exit (bounded); true when all did with code 0. */
    boolean awaitExit(long seconds) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds);
        boolean ok = true;
        for (Process p : processes) {
            long left = Math.max(1, deadline - System.nanoTime());
            ok &= p.waitFor(left, TimeUnit.NANOSECONDS) && p.exitValue() == 0;
        }
        return ok;
    }

    static void signal(Process p, String signal) throws IOException, InterruptedException {
        Process kill = new ProcessBuilder("kill", "-" + signal, Long.toString(p.pid())).inheritIO().start();
        if (!kill.waitFor(10, TimeUnit.SECONDS) || kill.exitValue() != 0) {
            throw new IOException("kill -" + signal + " " + p.pid() + " failed");
        }
    }

    @Override
    public void close() throws InterruptedException {
        for (Process p : processes) {
            if (p.isAlive()) {
                try {
                    signal(p, "CONT");
                } catch (IOException e) {
                    // gone already
                }
                p.destroyForcibly();
            }
        }
        for (Process p : processes) {
            p.waitFor(10, TimeUnit.SECONDS);
        }
    }

}
