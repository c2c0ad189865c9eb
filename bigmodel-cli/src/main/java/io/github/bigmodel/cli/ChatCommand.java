package io.github.bigmodel.cli;

import io.github.bigmodel.chatglm.chat.ChatGLM;
import io.github.bigmodel.chatglm.chat.ChatOptions;
import io.github.bigmodel.chatglm.chat.ChatResponse;
import io.github.bigmodel.chatglm.chat.ChatStream;
import io.github.bigmodel.chatglm.generation.GenerationConfig;
import io.github.bigmodel.chatglm.chat.ChatMessage;
import io.github.bigmodel.dispatch.plan.DeviceInventory;
import io.github.bigmodel.dispatch.plan.MaxMemory;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintWriter;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/**
 * {@code bigmodel chat}: an interactive, streaming conversation, as THUDM's {@code cli_demo.py}: type a message,
 * {@code clear} to start over, {@code stop} (or Ctrl-D) to quit. A turn that fails (a message longer than the
 * context, say) prints one error line and the conversation goes on with its history; Ctrl-C stops the reply being
 * written, and Ctrl-C while no reply is being written quits.
 *
 * <pre>
 * bigmodel make-tiny chatglm3-tiny && bigmodel chat --model chatglm3-tiny --max-new-tokens 32
 * bigmodel chat --model chatglm3-6b --max-memory "cpu=4GiB" --offload-folder /tmp/offload
 * bigmodel chat --model chatglm3-6b --system "You are a helpful assistant."
 * </pre>
 */
@Command(name = "chat", description = "Chat with a model, streaming its replies (clear: new conversation; stop or "
        + "Ctrl-D: quit; Ctrl-C: stop the reply, or quit when none is being written).")
final class ChatCommand implements Callable<Integer> {

    @Option(names = "--model", paramLabel = "DIR", required = true, description = "A model folder.")
    Path model;

    @Option(names = "--system", paramLabel = "TEXT", description = "A system message (ChatGLM3).")
    String system;

    @Option(names = "--max-new-tokens", paramLabel = "N",
            description = "At most N tokens per reply (default: THUDM's chat settings, up to --max-length; "
                    + "set e.g. 32 for a quick try).")
    Integer maxNewTokens;

    @Option(names = "--max-length", paramLabel = "N",
            description = "At most N tokens of prompt and reply together (default: THUDM's chat settings, 8192 for "
                    + "ChatGLM2/3, 2048 for ChatGLM-6B, never more than the model's positions).")
    Integer maxLength;

    @Mixin
    ModelOptions modelOptions;

    @Mixin
    ContextOptions contextOptions;

    @Mixin
    PipelineOptions pipelineOptions;

    @Spec
    CommandSpec spec;

    /** The reply being written, if any: what Ctrl-C stops. */
    private volatile ChatStream current;

    @Override
    public Integer call() throws Exception {
        PrintWriter out = spec.commandLine().getOut();
        if (contextOptions.given() || contextOptions.batch != null) {
            // Checked before any weight is read; ChatGLM.load plans with the same reservation.
            contextOptions.reservation(spec.commandLine(),
                    io.github.bigmodel.chatglm.ChatGLMFamily.ofFolder(model).config(),
                    modelOptions.weightsDtype());
        }
        if (modelOptions.maxMemory != null) {
            CliMessages.unavailableGpus(MaxMemory.parse(modelOptions.maxMemory), DeviceInventory.system(),
                    spec.commandLine().getErr(), "weights planned there cannot be loaded");
        }
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
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
        try (AutoCloseable coordinator = pipeline; ChatGLM glm = loaded) {
            Interrupts.onCtrlC(this::interrupt);
            return converse(glm, in, out);
        }
    }

    /**
     * What Ctrl-C does: stops the reply being written (the conversation goes on), or, when none is, quits with
     * 130 as a shell expects of an interrupted program.
     *
     * @return true when a reply was stopped; false when the program should quit
     */
    boolean interrupt() {
        ChatStream stream = current;
        if (stream != null) {
            current = null;
            stream.close(); // from this thread: the step running finishes, no other starts
            return true;
        }
        return false;
    }

    private ChatOptions options(ChatGLM glm) {
        GenerationConfig defaults = GenerationConfig.chatDefaults(glm.model().config().version());
        GenerationConfig.Builder b = defaults.toBuilder();
        if (maxNewTokens != null) {
            b.maxNewTokens(maxNewTokens);
        }
        if (maxLength != null) {
            b.maxLength(maxLength);
        }
        return ChatOptions.builder().generation(b.build()).build();
    }

    int converse(ChatGLM glm, BufferedReader in, PrintWriter out) throws Exception {
        List<ChatMessage> start = system == null ? List.of() : List.of(ChatMessage.of("system", system));
        List<ChatMessage> history = new ArrayList<>(start);
        out.println("Welcome to bigmodel chat. Type a message; 'clear' starts over, 'stop' or Ctrl-D quits, "
                + "Ctrl-C stops a reply.");
        while (true) {
            out.print("\nUser: ");
            out.flush();
            String line = in.readLine();
            if (line == null || line.strip().equals("stop")) {
                out.println();
                out.flush();
                return 0;
            }
            if (line.strip().equals("clear")) {
                history = new ArrayList<>(start);
                out.println("(history cleared)");
                continue;
            }
            if (line.isBlank()) {
                continue;
            }
            history = turn(glm, line, history, options(glm), out);
        }
    }

    /** One exchange; whatever goes wrong is one error line, and the history stays as it was. */
    private List<ChatMessage> turn(ChatGLM glm, String line, List<ChatMessage> history, ChatOptions options,
            PrintWriter out) {
        ChatStream stream;
        try {
            stream = glm.streamChat(line, history, options);
        } catch (RuntimeException e) {
            out.println("error: " + BigModelCli.oneLine(CliMessages.of(e))
                    + " (the conversation goes on; 'clear' starts over)");
            out.flush();
            return history;
        }
        out.print("\nAssistant: ");
        out.flush();
        current = stream;
        try (stream) {
            stream.forEachRemaining(delta -> {
                out.print(delta);
                out.flush();
            });
            if (current == null) {
                out.println();
                out.println("(reply stopped; this exchange is not kept. Ctrl-C again, 'stop' or Ctrl-D quits)");
                return history;
            }
            ChatResponse r = stream.response();
            out.println();
            return new ArrayList<>(r.history());
        } catch (RuntimeException e) {
            out.println();
            out.println("error: " + BigModelCli.oneLine(CliMessages.of(e)) + " (the conversation goes on)");
            return history;
        } finally {
            current = null;
            out.flush();
        }
    }
}
