package io.github.bigmodel.benchmarks.decode;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.ObjectMapper;

/**
 * What one row of the decode benchmark measured, as the child process reports it to the parent (one JSON line).
 * Times in milliseconds, sizes in bytes.
 *
 * <pre>{@code
 * RowResult r = RowResult.fromJson(line);
 * double floorMs = r.ramBytesPerToken / memBandwidth * 1e3;
 * }</pre>
 */
public final class RowResult {

    private static final ObjectMapper JSON = new ObjectMapper();

    /** The row's key ({@code a}, {@code b-prefetch}, ...). */
    public String row;
    /** libtorch threads used. */
    public int threads;
    /** From the call to {@code loadCheckpointAndDispatch} to its return. */
    public double loadMs;
    /** Time to first token: the prompt's forward pass and the choice of the first token. */
    public double ttftMs;
    /** Mean time of the steps after the first (one token each). */
    public double msPerToken;
    /** Median of the same steps. */
    public double medianMsPerToken;
    /** Steps the mean is over. */
    public int measuredTokens;
    /** {@code VmHWM}: the process's peak resident set, load included. */
    public long peakRssBytes;
    /** The largest {@code RssAnon} sampled (every 10 ms), load included. */
    public long peakAnonBytes;
    /** {@code RssAnon} after loading, before decode. */
    public long anonAfterLoadBytes;
    /** Weight bytes each token reads from memory: every block and head weight, one embedding row. */
    public long ramBytesPerToken;
    /** Weight bytes each token reads from disk (offloaded blocks). */
    public long diskBytesPerToken;
    /**
     * Bytes read from storage per decode step, measured ({@code /proc/self/io} over the timed steps): what the disk
     * rows really read, which exceeds {@link #diskBytesPerToken} when the page cache also evicts blocks kept on
     * the CPU.
     */
    public long storageReadBytesPerToken;
    /**
     * File-mapped bytes mapped by 2 MiB entries at the end of the decode ({@code FilePmdMapped}): a mapped
     * checkpoint whose page cache is in small folios is read through 4 KiB entries, and decodes slower.
     */
    public long filePmdMappedBytes;
    /** Modules the device map puts on disk. */
    public int diskModules;
    /** Wall clock ({@code System.currentTimeMillis}) when this JVM started. */
    public long jvmStartEpochMs;
    /** Wall clock when the first token was chosen: minus the launch time, the time to first token from start. */
    public long firstTokenEpochMs;
    /** Prompt then generated ids. */
    public long[] ids;

    public String toJson() {
        try {
            return JSON.writeValueAsString(this);
        } catch (JsonProcessingException e) {
            throw new IllegalStateException(e);
        }
    }

    /** Parses {@link #toJson()}. */
    public static RowResult fromJson(String json) {
        try {
            return JSON.readValue(json, RowResult.class);
        } catch (JsonProcessingException e) {
            throw new IllegalArgumentException("Not a row result: " + json, e);
        }
    }
}
