package io.github.bigmodel.server;

import java.util.Locale;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.LongAdder;

/** Counters and gauges of the server, written in Prometheus' text format by {@code GET /metrics}. */
final class ServerMetrics {

    private final Map<Integer, LongAdder> responses = new ConcurrentHashMap<>();
    final LongAdder promptTokens = new LongAdder();
    final LongAdder completionTokens = new LongAdder();
    final LongAdder cancelled = new LongAdder();
    private final AtomicLong decodeNanos = new AtomicLong();

    void response(int status) {
        responses.computeIfAbsent(status, s -> new LongAdder()).increment();
    }

    void generated(int prompt, int completion, long nanos) {
        promptTokens.add(prompt);
        completionTokens.add(completion);
        decodeNanos.addAndGet(nanos);
    }

    long responses(int status) {
        LongAdder a = responses.get(status);
        return a == null ? 0 : a.sum();
    }

    String render(int active, int queued, long kvBytes, int maxSessions, int maxQueue) {
        StringBuilder out = new StringBuilder();
        out.append("# HELP bigmodel_requests_total HTTP responses sent, by status code.\n");
        out.append("# TYPE bigmodel_requests_total counter\n");
        new TreeMap<>(responses).forEach((status, n) -> out.append("bigmodel_requests_total{code=\"")
                .append(status).append("\"} ").append(n.sum()).append('\n'));
        counter(out, "bigmodel_prompt_tokens_total", "Prompt tokens of finished or cancelled generations.",
                promptTokens.sum());
        counter(out, "bigmodel_completion_tokens_total", "Tokens generated.", completionTokens.sum());
        counter(out, "bigmodel_generations_cancelled_total", "Generations stopped because the client went away.",
                cancelled.sum());
        double seconds = decodeNanos.get() / 1e9;
        counter(out, "bigmodel_generation_seconds_total", "Time spent generating, summed over requests.", seconds);
        gauge(out, "bigmodel_tokens_per_second", "Completion tokens per second of generation time, so far.",
                seconds == 0 ? 0 : completionTokens.sum() / seconds);
        gauge(out, "bigmodel_active_sessions", "Generations running now.", active);
        gauge(out, "bigmodel_max_sessions", "Generations that may run at once.", maxSessions);
        gauge(out, "bigmodel_queue_depth", "Requests waiting for a generation slot.", queued);
        gauge(out, "bigmodel_queue_limit", "Requests that may wait before 429.", maxQueue);
        gauge(out, "bigmodel_kv_cache_bytes", "Native bytes held by the KV caches of live generations.", kvBytes);
        return out.toString();
    }

    private static void counter(StringBuilder out, String name, String help, double value) {
        metric(out, name, help, "counter", value);
    }

    private static void gauge(StringBuilder out, String name, String help, double value) {
        metric(out, name, help, "gauge", value);
    }

    private static void metric(StringBuilder out, String name, String help, String type, double value) {
        out.append("# HELP ").append(name).append(' ').append(help).append('\n');
        out.append("# TYPE ").append(name).append(' ').append(type).append('\n');
        out.append(name).append(' ');
        if (value == Math.rint(value) && Math.abs(value) < 1e15) {
            out.append((long) value);
        } else {
            out.append(String.format(Locale.ROOT, "%.6g", value));
        }
        out.append('\n');
    }
}
