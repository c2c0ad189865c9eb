package io.github.bigmodel.pipeline;

import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.chatglm.model.StageSpan;
import io.github.bigmodel.dispatch.plan.DeviceMap;
import java.util.ArrayList;
import java.util.List;

/**
 * Which rank holds what: rank {@code r} is the {@code r}-th host of a host-qualified device map
 * ({@link DeviceMap#hosts()}, pipeline order), and its {@link StageSpan} is what the map places on that host. Rank 0
 * is the coordinator: it takes token ids, so it holds the embedding (and the first blocks, possibly none); the
 * blocks follow each other rank by rank; the head is on the last rank or on rank 0.
 *
 * <pre>{@code
 * DeviceMap map = DeviceMap.fromJson(Files.readString(Path.of("pipeline.json")));   // "box-a/cpu", "box-b/cuda:0"
 * StagePlan plan = StagePlan.of(map, model);
 * plan.world();          // 2
 * plan.span(1);          // StageSpan[embedding=false, firstLayer=14, endLayer=28, head=true]
 * }</pre>
 */
public final class StagePlan {

    private final List<String> hosts;
    private final List<StageSpan> spans;

    private StagePlan(List<String> hosts, List<StageSpan> spans) {
        this.hosts = List.copyOf(hosts);
        this.spans = List.copyOf(spans);
    }

    /**
     * The plan of {@code map} (every entry naming a host) for {@code model}.
     *
     * @throws IllegalArgumentException when the map names no hosts, or its stages are not a pipeline: the first host
     *     without the embedding, a part split between hosts, blocks out of order, the head elsewhere than on the
     *     last host or the first
     */
    public static StagePlan of(DeviceMap map, ChatGLMLanguageModel model) {
        List<String> hosts = map.hosts();
        if (hosts.isEmpty()) {
            throw new IllegalArgumentException("A pipeline needs a device map whose entries name hosts "
                    + "(\"box-a/cpu\"), got " + map.toJson());
        }
        List<StageSpan> spans = new ArrayList<>();
        for (String host : hosts) {
            spans.add(model.spanWhere(name -> host.equals(map.hostOf(name))));
        }
        return of(hosts, spans, model.config().numLayers());
    }

    /**
     * A plan from spans given rank by rank (hosts named {@code rank0}, {@code rank1}, ...).
     *
     * @throws IllegalArgumentException as {@link #of(DeviceMap, ChatGLMLanguageModel)}
     */
    public static StagePlan of(List<StageSpan> spans, int layers) {
        List<String> hosts = new ArrayList<>();
        for (int i = 0; i < spans.size(); i++) {
            hosts.add("rank" + i);
        }
        return of(hosts, spans, layers);
    }

    private static StagePlan of(List<String> hosts, List<StageSpan> spans, int layers) {
        if (spans.size() < 2) {
            throw new IllegalArgumentException("A pipeline has at least 2 stages, got " + spans.size());
        }
        if (!spans.get(0).embedding()) {
            throw new IllegalArgumentException("The first host (" + hosts.get(0) + ", rank 0, the coordinator) must "
                    + "hold the embedding: it takes the token ids");
        }
        int next = 0;
        for (int r = 0; r < spans.size(); r++) {
            StageSpan s = spans.get(r);
            if (r > 0 && s.embedding()) {
                throw new IllegalArgumentException("Only the first host holds the embedding; " + hosts.get(r)
                        + " holds it too");
            }
            if (s.endLayer() > s.firstLayer() && s.firstLayer() != next) {
                throw new IllegalArgumentException("Host " + hosts.get(r) + " holds blocks [" + s.firstLayer() + ", "
                        + s.endLayer() + ") but the blocks before it end at " + next + ": hosts follow the blocks");
            }
            next = Math.max(next, s.endLayer());
            if (s.head() && r != 0 && r != spans.size() - 1) {
                throw new IllegalArgumentException("The head (final norm and output layer) is on " + hosts.get(r)
                        + ": it must be on the last host or the first");
            }
        }
        if (next != layers) {
            throw new IllegalArgumentException("The hosts hold blocks up to " + next + " of " + layers);
        }
        long heads = spans.stream().filter(StageSpan::head).count();
        if (heads != 1) {
            throw new IllegalArgumentException("Exactly one host holds the head, got " + heads);
        }
        List<StageSpan> fixed = new ArrayList<>();
        int at = 0;
        for (StageSpan s : spans) {
            // A stage without blocks sits where the blocks before it end.
            StageSpan f = s.endLayer() > s.firstLayer() ? s : new StageSpan(s.embedding(), at, at, s.head());
            fixed.add(f);
            at = f.endLayer();
        }
        return new StagePlan(hosts, fixed);
    }

    /** Ranks in the pipeline: one per host. */
    public int world() {
        return spans.size();
    }

    /** The host of {@code rank}. */
    public String host(int rank) {
        return hosts.get(rank);
    }

    public List<String> hosts() {
        return hosts;
    }

    /** What {@code rank} holds. */
    public StageSpan span(int rank) {
        return spans.get(rank);
    }

    @Override
    public String toString() {
        StringBuilder b = new StringBuilder();
        for (int r = 0; r < spans.size(); r++) {
            StageSpan s = spans.get(r);
            b.append(r == 0 ? "" : ", ").append("rank ").append(r).append(' ').append(hosts.get(r)).append(": ")
                    .append(s.embedding() ? "embedding + " : "").append("blocks [").append(s.firstLayer()).append(", ")
                    .append(s.endLayer()).append(')').append(s.head() ? " + head" : "");
        }
        return b.toString();
    }
}
