package io.github.bigmodel.cli;

import io.github.bigmodel.chatglm.chat.ChatGLM;
import io.github.bigmodel.chatglm.chat.ChatOptions;
import io.github.bigmodel.chatglm.chat.ChatResponse;
import io.github.bigmodel.chatglm.chat.ChatStream;
import io.github.bigmodel.chatglm.generation.GenerationConfig;
import io.github.bigmodel.chatglm.chat.ChatMessage;
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
 * {@code clear} to start over, {@code stop} to quit.
 *
 * <pre>
 * bigmodel chat --model chatglm3-6b --max-memory "cpu=4GiB" --offload-folder /tmp/offload
 * bigmodel chat --model chatglm3-6b --system "You are a helpful assistant."
 * </pre>
 */
@Command(name = "chat", description = "Chat with a model, streaming its replies (clear: new conversation; stop: quit).")
final class ChatCommand implements Callable<Integer> {

    @Option(names = "--model", paramLabel = "DIR", required = true, description = "A model folder.")
    Path model;

    @Option(names = "--system", paramLabel = "TEXT", description = "A system message (ChatGLM3).")
    String system;

    @Option(names = "--max-new-tokens", paramLabel = "N",
            description = "At most N tokens per reply (default: THUDM's chat settings, up to max_length).")
    Integer maxNewTokens;

    @Mixin
    ModelOptions modelOptions;

    @Mixin
    ContextOptions contextOptions;

    @Spec
    CommandSpec spec;

    @Override
    public Integer call() throws Exception {
        PrintWriter out = spec.commandLine().getOut();
        if (contextOptions.given() || contextOptions.batch != null) {
            // Checked before any weight is read; ChatGLM.load plans with the same reservation.
            contextOptions.reservation(spec.commandLine(),
                    io.github.bigmodel.chatglm.ChatGLMFamily.ofFolder(model).config(),
                    modelOptions.weightsDtype());
        }
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        ChatGLM loaded;
        try (LoadProgress progress = LoadProgress.of(spec.commandLine().getErr(),
                ProgressBars.enabled(modelOptions.progress, false), model)) {
            loaded = ChatGLM.load(model, modelOptions.toDispatchOptions(progress), contextOptions.contextOrZero(),
                    contextOptions.batchOrZero());
        }
        try (ChatGLM glm = loaded) {
            return converse(glm, in, out);
        }
    }

    private ChatOptions options(ChatGLM glm) {
        GenerationConfig defaults = GenerationConfig.chatDefaults(glm.model().config().version());
        GenerationConfig generation = maxNewTokens == null ? defaults
                : defaults.toBuilder().maxNewTokens(maxNewTokens).build();
        return ChatOptions.builder().generation(generation).build();
    }

    int converse(ChatGLM glm, BufferedReader in, PrintWriter out) throws Exception {
        List<ChatMessage> start = system == null ? List.of() : List.of(ChatMessage.of("system", system));
        List<ChatMessage> history = new ArrayList<>(start);
        out.println("Welcome to bigmodel chat. Type a message; 'clear' starts over, 'stop' quits.");
        while (true) {
            out.print("\nUser: ");
            out.flush();
            String line = in.readLine();
            if (line == null || line.strip().equals("stop")) {
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
            out.print("\nAssistant: ");
            try (ChatStream stream = glm.streamChat(line, history, options(glm))) {
                ChatResponse r = stream.drain(delta -> {
                    out.print(delta);
                    out.flush();
                });
                history = new ArrayList<>(r.history());
            }
            out.println();
        }
    }
}
