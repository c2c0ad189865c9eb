package io.github.bigmodel.chatglm.chat;

import io.github.bigmodel.chatglm.generation.GenerationRequest;
import io.github.bigmodel.chatglm.generation.Generator;
import io.github.bigmodel.chatglm.generation.GenerationConfig;
import io.github.bigmodel.core.ProcessMemory;
import java.nio.file.Path;
import java.util.List;
import org.bytedeco.javacpp.PointerScope;

/**
 * Run in a child JVM by {@link NativeMemorySoakTest}, with a fixed, pre-touched heap so that changes of anonymous
 * resident memory are native allocations: warms up, then prints the growth over a 2,000-token generation and over
 * 100 chat turns as {@code generation=BYTES chat=BYTES}.
 */
public final class NativeMemorySoakChild {

    private NativeMemorySoakChild() {
    }

    public static void main(String[] args) {
        Path model = Path.of(args[0]);
        try (ChatGLM glm = ChatGLM.load(model)) {
            Generator generator = new Generator(glm.model());
            long[][] prompt = {{4001, 4003, 100, 200, 300}};
            // Warm-up at the same length: caches, allocator arenas and the JIT reach their steady size.
            generate(generator, prompt);
            long before = anonymous();
            generate(generator, prompt);
            long generation = anonymous() - before;

            ChatOptions options = ChatOptions.builder()
                    .generation(GenerationConfig.builder().maxNewTokens(8).build()).build();
            List<ChatMessage> history = List.of();
            for (int i = 0; i < 30; i++) {
                history = lastTurn(glm.chat("你好 " + i, history, options).history());
            }
            before = anonymous();
            for (int i = 0; i < 100; i++) {
                history = lastTurn(glm.chat("请继续 " + i, history, options).history());
            }
            long chat = anonymous() - before;
            System.out.println("generation=" + generation + " chat=" + chat);
        }
    }

    private static void generate(Generator generator, long[][] prompt) {
        try (PointerScope scope = new PointerScope()) {
            var r = generator.generate(GenerationRequest.builder(prompt).maxNewTokens(2000).stopAtEos(false).build());
            if (r.newIds()[0].length != 2000) {
                throw new IllegalStateException("generated " + r.newIds()[0].length + " tokens, not 2000");
            }
        }
    }

    private static long anonymous() {
        System.gc();
        return ProcessMemory.read().anonymousBytes();
    }

    /** Keeps the last exchange, so the prompt stays short and every turn does the same work. */
    private static List<ChatMessage> lastTurn(List<ChatMessage> history) {
        return history.subList(Math.max(0, history.size() - 2), history.size());
    }
}
