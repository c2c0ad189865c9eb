package io.github.bigmodel.core;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

/**
 * The current process's memory as the Linux kernel counts it ({@code /proc/self/status}): resident total,
 * anonymous resident (heap, native allocations: what loading must keep bounded) and file-backed resident (mapped
 * weights, which the kernel can drop and re-read).
 *
 * <pre>{@code
 * ProcessMemory before = ProcessMemory.read();
 * // ... load tensors ...
 * long grown = ProcessMemory.read().anonymousBytes() - before.anonymousBytes();
 * }</pre>
 */
public final class ProcessMemory {

    private final long residentBytes;
    private final long anonymousBytes;
    private final long fileBytes;
    private final long peakResidentBytes;

    private ProcessMemory(long residentBytes, long anonymousBytes, long fileBytes, long peakResidentBytes) {
        this.residentBytes = residentBytes;
        this.anonymousBytes = anonymousBytes;
        this.fileBytes = fileBytes;
        this.peakResidentBytes = peakResidentBytes;
    }

    /** Reads the figures now. Returns zeros where {@code /proc} is not available (not Linux). */
    public static ProcessMemory read() {
        Path status = Path.of("/proc/self/status");
        if (!Files.isReadable(status)) {
            return new ProcessMemory(0, 0, 0, 0);
        }
        try {
            List<String> lines = Files.readAllLines(status);
            return new ProcessMemory(field(lines, "VmRSS:"), field(lines, "RssAnon:"), field(lines, "RssFile:"),
                    field(lines, "VmHWM:"));
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    private static long field(List<String> lines, String name) {
        for (String line : lines) {
            if (line.startsWith(name)) {
                String[] parts = line.substring(name.length()).trim().split("\\s+");
                return Long.parseLong(parts[0]) * 1024L;
            }
        }
        return 0;
    }

    /** Whether this platform reports these figures. */
    public static boolean isSupported() {
        return Files.isReadable(Path.of("/proc/self/status"));
    }

    public long residentBytes() {
        return residentBytes;
    }

    /** Anonymous resident memory: Java heap in use, native allocations, copy-on-write copies. */
    public long anonymousBytes() {
        return anonymousBytes;
    }

    /** File-backed resident memory: mapped files such as checkpoints. */
    public long fileBytes() {
        return fileBytes;
    }

    /** The high-water mark of resident memory since the process started. */
    public long peakResidentBytes() {
        return peakResidentBytes;
    }

    @Override
    public String toString() {
        return "resident " + MemorySize.format(residentBytes) + ", anonymous " + MemorySize.format(anonymousBytes)
                + ", file " + MemorySize.format(fileBytes);
    }
}
