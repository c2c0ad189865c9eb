package io.github.bigmodel.cli;

import io.github.bigmodel.chatglm.ChatGLMConfig;
import io.github.bigmodel.chatglm.chat.ChatGLM;
import io.github.bigmodel.server.OpenAiServer;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/**
 * {@code bigmodel serve}: an OpenAI-compatible server ({@code /v1/chat/completions}, {@code /v1/models}) with a chat
 * page at {@code /}, over one model loaded with every option {@code chat} has.
 *
 * <pre>
 * bigmodel serve --model chatglm3-6b --port 8000
 * bigmodel serve --model chatglm3-6b --max-memory "0=10GiB,cpu=30GiB" --max-sessions 4 --api-key "$KEY"
 * </pre>
 */
@Command(name = "serve", description = "Serve a model over an OpenAI-compatible HTTP API with a chat page at /.")
final class ServeCommand implements Callable<Integer> {

    @Option(names = "--model", paramLabel = "DIR", required = true, description = "A model folder.")
    Path model;

    @Option(names = "--host", paramLabel = "ADDR", defaultValue = "127.0.0.1",
            description = "Address to bind (default: ${DEFAULT-VALUE}; 0.0.0.0 for every interface).")
    String host;

    @Option(names = "--port", paramLabel = "N", defaultValue = "8000", description = "Port (default: ${DEFAULT-VALUE}).")
    int port;

    @Option(names = "--model-id", paramLabel = "NAME",
            description = "The name clients send as 'model' (default: the folder's name).")
    String modelId;

    @Option(names = "--max-sessions", paramLabel = "N", defaultValue = "4",
            description = "Generations decoding at once, each with its own KV cache (default: ${DEFAULT-VALUE}).")
    int maxSessions;

    @Option(names = "--max-queue", paramLabel = "N", defaultValue = "16",
            description = "Requests waiting for a session before the server answers 429 (default: ${DEFAULT-VALUE}).")
    int maxQueue;

    @Option(names = "--max-body", paramLabel = "BYTES", defaultValue = "4194304",
            description = "Largest request body; larger ones get 413 (default: ${DEFAULT-VALUE}).")
    int maxBody;

    @Option(names = "--api-key", paramLabel = "KEY",
            description = "Require 'Authorization: Bearer KEY' on /v1 and /api (default: the BIGMODEL_API_KEY "
                    + "environment variable, else none).")
    String apiKey;

    @Option(names = "--shutdown-grace", paramLabel = "SECONDS", defaultValue = "30",
            description = "On Ctrl-C, how long running replies may finish before they are cancelled "
                    + "(default: ${DEFAULT-VALUE}).")
    int shutdownGrace;

    @Mixin
    ModelOptions modelOptions;

    @Mixin
    ContextOptions contextOptions;

    @Mixin
    PipelineOptions pipelineOptions;

    @Spec
    CommandSpec spec;

    /** The running server, for tests that stop it. */
    volatile OpenAiServer running;

    @Override
    public Integer call() throws Exception {
        PrintWriter out = spec.commandLine().getOut();
        if (contextOptions.given() || contextOptions.batch != null) {
            contextOptions.reservation(spec.commandLine(), ChatGLMConfig.fromJson(model.resolve("config.json")),
                    modelOptions.weightsDtype());
        }
        String key = apiKey != null ? apiKey : System.getenv("BIGMODEL_API_KEY");
        String id = modelId != null ? modelId : model.toAbsolutePath().normalize().getFileName().toString();
        ChatGLM loaded;
        AutoCloseable pipeline = null;
        try (LoadProgress progress = LoadProgress.of(spec.commandLine().getErr(),
                ProgressBars.enabled(modelOptions.progress, false), model)) {
            PipelineOptions.Coordinated c = pipelineOptions.load(spec.commandLine(), model, modelOptions.deviceMap,
                    modelOptions.toDispatchOptions(progress), contextOptions.contextOrZero(),
                    contextOptions.batchOrZero());
            loaded = c.chat();
            pipeline = c.coordinator();
        }
        try (AutoCloseable coordinator = pipeline;
             ChatGLM glm = loaded;
             OpenAiServer server = OpenAiServer.builder(glm).modelId(id).host(host).port(port)
                     .maxSessions(maxSessions).maxQueue(maxQueue).maxBodyBytes(maxBody)
                     .apiKey(key == null || key.isBlank() ? null : key)
                     .shutdownGrace(Duration.ofSeconds(shutdownGrace)).build().start()) {
            Thread hook = new Thread(server::close, "bigmodel-serve-shutdown");
            Runtime.getRuntime().addShutdownHook(hook);
            running = server;
            out.println("Serving " + id + " (" + glm.format() + ") at " + server.baseUrl() + "/  (chat page), "
                    + server.baseUrl() + "/v1 (OpenAI API); Ctrl-C stops.");
            out.flush();
            server.awaitShutdown();
            try {
                Runtime.getRuntime().removeShutdownHook(hook);
            } catch (IllegalStateException e) {
                // Already shutting down: the hook is running.
            }
        }
        return 0;
    }
}
