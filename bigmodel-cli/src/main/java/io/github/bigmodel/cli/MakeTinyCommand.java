package io.github.bigmodel.cli;

import io.github.bigmodel.chatglm.ChatGLMConfig;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.chatglm.TinyChatGLM3;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.MemorySize;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.Locale;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

/**
 * {@code bigmodel make-tiny DIR}: writes a tiny ChatGLM3 model ({@link TinyChatGLM3}: ChatGLM3-6B's architecture in
 * miniature, a real ChatGLM3 tokenizer, random weights) to chat with at once, no download.
 *
 * <pre>
 * ./bigmodel make-tiny chatglm3-tiny
 * ./bigmodel chat --model chatglm3-tiny --max-new-tokens 32
 * </pre>
 */
@Command(name = "make-tiny", description = "Write a tiny ChatGLM3 model with its tokenizer (random weights, 29 MiB) "
        + "to try chat, generate and plan without a download.")
final class MakeTinyCommand implements Callable<Integer> {

    @Parameters(index = "0", paramLabel = "DIR", description = "The folder to write (created; must hold no config.json).")
    Path dir;

    @Spec
    CommandSpec spec;

    @Override
    public Integer call() {
        PrintWriter out = spec.commandLine().getOut();
        TinyChatGLM3.write(dir);
        ChatGLMConfig config = ChatGLMConfig.fromJson(dir.resolve("config.json"));
        ChatGLMLanguageModel meta = ChatGLMLanguageModel.create(config, DType.FLOAT32);
        out.printf(Locale.ROOT, "wrote a tiny ChatGLM3 to %s: %d layers, %,d parameters (%s in float32), "
                        + "a %d-token vocabulary; the weights are random, so replies are nonsense%n", dir,
                config.numLayers(), meta.parameterCount(), MemorySize.format(meta.byteSize()), config.vocabSize());
        out.println("try: ./bigmodel chat --model " + dir + " --max-new-tokens 32");
        return 0;
    }
}
