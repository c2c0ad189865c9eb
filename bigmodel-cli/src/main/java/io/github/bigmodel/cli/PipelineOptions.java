package io.github.bigmodel.cli;

import io.github.bigmodel.chatglm.chat.ChatGLM;
import io.github.bigmodel.dispatch.DispatchOptions;
import io.github.bigmodel.dispatch.plan.DeviceMap;
import io.github.bigmodel.pipeline.PipelineCoordinator;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import picocli.CommandLine;
import picocli.CommandLine.Option;

/**
 * {@code --pipeline HOST:PORT}: run {@code chat} or {@code serve} as rank 0 of a pipeline. The {@code --device-map}
 * file names a host for every entry ({@code "box-a/cpu"}); rank r is its r-th host, this process the first; the
 * workers ({@code bigmodel worker --rank r ...}) connect to the store this process opens at HOST:PORT.
 *
 * <pre>
 * bigmodel chat --model chatglm3-6b --device-map pipeline.json --pipeline 10.0.0.1:29500
 * </pre>
 */
final class PipelineOptions {

    @Option(names = "--pipeline", paramLabel = "HOST:PORT",
            description = "Run as the coordinator (rank 0) of a pipeline whose store listens at HOST:PORT; "
                    + "--device-map must name a host for every entry (rank r = its r-th host, this one the first).")
    String pipeline;

    @Option(names = "--pipeline-bind", paramLabel = "ADDR",
            description = "The address of this host the workers reach it by (default: the --pipeline host, or "
                    + "127.0.0.1 when that is 0.0.0.0).")
    String bind;

    @Option(names = "--join-timeout", paramLabel = "SECONDS", defaultValue = "300",
            description = "How long to wait for every worker to join (default: ${DEFAULT-VALUE}).")
    long joinSeconds;

    @Option(names = "--step-timeout", paramLabel = "SECONDS", defaultValue = "120",
            description = "How long one step may take round the pipeline before the request fails "
                    + "(default: ${DEFAULT-VALUE}).")
    long stepSeconds;

    boolean given() {
        return pipeline != null;
    }

    /** HOST and PORT of {@code value}. */
    static String[] hostPort(CommandLine cmd, String option, String value) {
        int colon = value == null ? -1 : value.lastIndexOf(':');
        if (colon <= 0 || colon == value.length() - 1) {
            throw new CommandLine.ParameterException(cmd, option + " must be HOST:PORT, got '" + value + "'");
        }
        try {
            int port = Integer.parseInt(value.substring(colon + 1));
            if (port <= 0 || port > 65535) {
                throw new NumberFormatException();
            }
        } catch (NumberFormatException e) {
            throw new CommandLine.ParameterException(cmd, option + ": '" + value.substring(colon + 1)
                    + "' is not a port");
        }
        return new String[] {value.substring(0, colon), value.substring(colon + 1)};
    }

    /** The host-qualified device map a pipeline needs. */
    static DeviceMap hostMap(CommandLine cmd, String deviceMap) throws IOException {
        if (deviceMap == null || !Files.isRegularFile(Path.of(deviceMap))) {
            throw new CommandLine.ParameterException(cmd, "A pipeline needs --device-map FILE naming a host for "
                    + "every entry (\"box-a/cpu\"), got " + deviceMap);
        }
        DeviceMap map = DeviceMap.fromJson(Files.readString(Path.of(deviceMap), StandardCharsets.UTF_8));
        if (map.hosts().isEmpty()) {
            throw new CommandLine.ParameterException(cmd, "--device-map " + deviceMap + " names no hosts: write "
                    + "\"host/device\" values (see docs/distributed.md)");
        }
        return map;
    }

    /**
     * The model {@code chat} and {@code serve} run: rank 0 of a pipeline when {@code --pipeline} is given, else the
     * whole model loaded here (no coordinator).
     */
    Coordinated load(CommandLine cmd, Path model, String deviceMap, DispatchOptions options, long context,
            long batch) throws IOException {
        if (given()) {
            // Rank 0 of a pipeline: waits for the workers, then loads the first host's stage.
            return start(cmd, model, deviceMap, options, context, batch);
        }
        return new Coordinated(null, ChatGLM.load(model, options, context, batch));
    }

    /** The coordinator and its chat: both closed by the returned handle, the chat first. */
    Coordinated start(CommandLine cmd, Path model, String deviceMap, DispatchOptions options, long context,
            long batch) throws IOException {
        String[] hp = hostPort(cmd, "--pipeline", pipeline);
        PipelineCoordinator.Options o = PipelineCoordinator.Options.of(hp[0], Integer.parseInt(hp[1]))
                .withTimeouts(Duration.ofSeconds(joinSeconds), Duration.ofSeconds(stepSeconds));
        if (bind != null) {
            o = o.withBindAddress(bind);
        }
        PipelineCoordinator coordinator = PipelineCoordinator.start(model, hostMap(cmd, deviceMap), o);
        try {
            return new Coordinated(coordinator, coordinator.loadChat(options, context, batch));
        } catch (RuntimeException e) {
            coordinator.close();
            throw e;
        }
    }

    /** A chat and, over a pipeline, its coordinator (null otherwise). */
    record Coordinated(PipelineCoordinator coordinator, ChatGLM chat) implements AutoCloseable {
        @Override
        public void close() {
            try {
                chat.close();
            } finally {
                if (coordinator != null) {
                    coordinator.close();
                }
            }
        }
    }
}
