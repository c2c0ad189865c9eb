package io.github.bigmodel.benchmarks.decode;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * Samples this process's anonymous resident memory ({@code RssAnon} of {@code /proc/self/status}) every few
 * milliseconds on a daemon thread and keeps the peak: the kernel keeps a high-water mark for the whole resident set
 * ({@code VmHWM}) but none for its anonymous part, which is what a CPU budget must bound (file-backed pages of mapped
 * weights can be dropped and re-read). A peak shorter than the period can be missed.
 *
 * <pre>{@code
 * try (MemorySampler s = MemorySampler.start(10)) {
 *     // ... load and decode ...
 *     long peakAnon = s.peakAnonymousBytes();
 * }
 * }</pre>
 */
public final class MemorySampler implements AutoCloseable {

    private static final Path STATUS = Path.of("/proc/self/status");

    private final Thread thread;
    private volatile boolean stopped;
    private volatile long peakAnonymous;

    private MemorySampler(long periodMillis) {
        peakAnonymous = anonymousNow();
        thread = new Thread(() -> {
            while (!stopped) {
                sample();
                try {
                    Thread.sleep(periodMillis);
                } catch (InterruptedException e) {
                    return;
                }
            }
        }, "bigmodel-memory-sampler");
        thread.setDaemon(true);
        thread.start();
    }

    /** Starts sampling every {@code periodMillis} ms. */
    public static MemorySampler start(long periodMillis) {
        if (periodMillis <= 0) {
            throw new IllegalArgumentException("period must be positive, got " + periodMillis);
        }
        return new MemorySampler(periodMillis);
    }

    private synchronized void sample() {
        long now = anonymousNow();
        if (now > peakAnonymous) {
            peakAnonymous = now;
        }
    }

    /** The largest anonymous resident size seen so far (a sample is taken now too), in bytes. */
    public long peakAnonymousBytes() {
        sample();
        return peakAnonymous;
    }

    /** {@code RssAnon} now, in bytes; 0 where {@code /proc} is not available. */
    public static long anonymousNow() {
        return statusField("RssAnon:");
    }

    /** {@code VmHWM} (peak resident set of the process), in bytes; 0 where {@code /proc} is not available. */
    public static long peakResidentBytes() {
        return statusField("VmHWM:");
    }

    /**
     * Bytes this process has caused to be read from storage ({@code read_bytes} of {@code /proc/self/io}: page
     * faults on mapped files and read-ahead included, page-cache hits not); 0 where {@code /proc} is not available.
     */
    public static long storageReadBytes() {
        try {
            for (String line : Files.readAllLines(Path.of("/proc/self/io"), StandardCharsets.US_ASCII)) {
                if (line.startsWith("read_bytes:")) {
                    return Long.parseLong(line.substring("read_bytes:".length()).trim());
                }
            }
            return 0;
        } catch (IOException | RuntimeException e) {
            return 0;
        }
    }

    /**
     * Bytes of this process's file mappings mapped by 2 MiB page-table entries now ({@code FilePmdMapped} of
     * {@code /proc/self/smaps_rollup}): how much of a mapped checkpoint a decode step reads through one TLB entry
     * per 2 MiB rather than per 4 KiB; 0 where {@code /proc} does not say.
     */
    public static long filePmdMappedBytes() {
        return field(Path.of("/proc/self/smaps_rollup"), "FilePmdMapped:");
    }

    private static long statusField(String name) {
        return field(STATUS, name);
    }

    /** A "Name: value kB" field of a /proc file, in bytes; 0 when absent or unreadable. */
    private static long field(Path file, String name) {
        try {
            String text = Files.readString(file, StandardCharsets.US_ASCII);
            int at = text.indexOf(name);
            if (at < 0) {
                return 0;
            }
            int end = text.indexOf('\n', at);
            String[] parts = text.substring(at + name.length(), end < 0 ? text.length() : end).trim().split("\\s+");
            return Long.parseLong(parts[0]) * 1024L;
        } catch (IOException | RuntimeException e) {
            return 0;
        }
    }

    @Override
    public void close() {
        stopped = true;
        thread.interrupt();
    }
}
