package io.github.bigmodel.pipeline.internal;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.bytedeco.pytorch.ByteVector;
import org.bytedeco.pytorch.Store;
import org.bytedeco.pytorch.StringVector;

/**
 * Forming the group through the TCPStore, with the checks that come before any tensor moves. The coordinator
 * publishes a generation ({@value #CURRENT}: its instance and a counter); each worker waits for a generation it has
 * not served yet, writes its hello (protocol, version, world, rank, fingerprint) under the generation's prefix and
 * waits for the coordinator's verdict: {@code ok}, {@code refused: why} (this rank cannot serve: wrong world,
 * checkpoint or version) or {@code retry: why} (another rank was refused: wait for the next generation). Only when
 * every rank is accepted does anyone form the Gloo group, under the same prefix.
 */
public final class Rendezvous {

    public static final String CURRENT = "bigmodel/current";
    private static final ObjectMapper JSON = new ObjectMapper();

    private Rendezvous() {
    }

    /** A worker's hello. */
    public record Hello(long protocol, String version, int world, int rank, String fingerprint) {
        byte[] toJson() {
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("protocol", protocol);
            m.put("version", version);
            m.put("world", world);
            m.put("rank", rank);
            m.put("fingerprint", fingerprint);
            try {
                return JSON.writeValueAsBytes(m);
            } catch (IOException e) {
                throw new IllegalStateException(e);
            }
        }

        static Hello parse(byte[] bytes) {
            try {
                JsonNode n = JSON.readTree(bytes);
                return new Hello(n.path("protocol").asLong(), n.path("version").asText(), n.path("world").asInt(),
                        n.path("rank").asInt(), n.path("fingerprint").asText());
            } catch (IOException e) {
                throw new IllegalStateException("Unreadable hello: " + new String(bytes, StandardCharsets.UTF_8), e);
            }
        }
    }

    /** What the coordinator decided about the ranks of one generation. */
    public record Verdicts(List<String> refusals) {
        public boolean accepted() {
            return refusals.isEmpty();
        }
    }

    /** The coordinator's side: publishes {@code generation} and judges each rank's hello, all within {@code wait}. */
    public static Verdicts judge(Store store, String generation, int world, long protocol, String version,
            String[] fingerprints, Duration wait) {
        String prefix = prefix(generation);
        store.set(CURRENT, bytes(generation));
        long deadline = System.nanoTime() + wait.toNanos();
        List<String> refusals = new ArrayList<>();
        String[] verdicts = new String[world];
        for (int r = 1; r < world; r++) {
            String key = prefix + "hello/" + r;
            if (!waitFor(store, key, deadline)) {
                refusals.add("rank " + r + " did not join within " + wait);
                verdicts[r] = null;
                continue;
            }
            Hello h = Hello.parse(store.get(key).get());
            String why = null;
            if (h.protocol() != protocol) {
                why = "protocol " + Long.toHexString(h.protocol()) + ", the coordinator speaks "
                        + Long.toHexString(protocol);
            } else if (!h.version().equals(version)) {
                why = "version " + h.version() + ", the coordinator runs " + version;
            } else if (h.world() != world) {
                why = "world size " + h.world() + ", the coordinator's pipeline has " + world + " ranks";
            } else if (!h.fingerprint().equals(fingerprints[r])) {
                why = "a different checkpoint or split (fingerprint " + abbreviate(h.fingerprint())
                        + ", expected " + abbreviate(fingerprints[r]) + "): every rank loads the coordinator's "
                        + "checkpoint and device map";
            }
            if (why != null) {
                refusals.add("rank " + r + " refused: " + why);
                verdicts[r] = "refused: " + why;
            }
        }
        for (int r = 1; r < world; r++) {
            String v = verdicts[r] != null ? verdicts[r]
                    : refusals.isEmpty() ? "ok" : "retry: " + String.join("; ", refusals);
            store.set(prefix + "verdict/" + r, bytes(v));
        }
        if (!refusals.isEmpty()) {
            // The refused hear why before the store may go away with the coordinator (a few seconds at most).
            long seenBy = System.nanoTime() + Math.min(wait.toNanos(), 5_000_000_000L);
            for (int r = 1; r < world; r++) {
                waitFor(store, prefix + "seen/" + r, seenBy);
            }
        }
        return new Verdicts(refusals);
    }

    /**
     * A worker's side: waits (up to {@code wait}) for a generation other than {@code served}, says hello and waits
     * for the verdict. Returns {@code [generation, verdict]}, or null when no new generation came in time.
     */
    public static String[] hello(Store store, String served, Hello hello, Duration wait) {
        long deadline = System.nanoTime() + wait.toNanos();
        String generation = null;
        while (System.nanoTime() < deadline) {
            if (store.check(new StringVector(CURRENT))) {
                String g = new String(store.get(CURRENT).get(), StandardCharsets.UTF_8);
                if (!g.equals(served)) {
                    generation = g;
                    break;
                }
            }
            sleep(100);
        }
        if (generation == null) {
            return null;
        }
        String prefix = prefix(generation);
        store.set(prefix + "hello/" + hello.rank(), new ByteVector(hello.toJson()));
        String key = prefix + "verdict/" + hello.rank();
        if (!waitFor(store, key, deadline)) {
            return new String[] {generation, "retry: no verdict from the coordinator within " + wait};
        }
        String verdict = new String(store.get(key).get(), StandardCharsets.UTF_8);
        store.set(prefix + "seen/" + hello.rank(), bytes("yes"));
        return new String[] {generation, verdict};
    }

    /** The store prefix of a generation's Gloo group. */
    public static String groupPrefix(String generation) {
        return prefix(generation) + "gloo/";
    }

    private static String prefix(String generation) {
        return "bigmodel/" + generation + "/";
    }

    private static boolean waitFor(Store store, String key, long deadline) {
        while (true) {
            if (store.check(new StringVector(key))) {
                return true;
            }
            long left = deadline - System.nanoTime();
            if (left <= 0) {
                return false;
            }
            sleep(Math.min(50, Math.max(1, left / 1_000_000)));
        }
    }

    private static ByteVector bytes(String s) {
        return new ByteVector(s.getBytes(StandardCharsets.UTF_8));
    }

    private static String abbreviate(String fingerprint) {
        return fingerprint.length() > 12 ? fingerprint.substring(0, 12) : fingerprint;
    }

    private static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("Interrupted while forming the pipeline group", e);
        }
    }

}
