package io.github.bigmodel.chatglm.chat;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.github.bigmodel.chatglm.generation.GenerationConfig;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.ForwardHook;
import io.github.bigmodel.core.HookHandle;
import io.github.bigmodel.core.ModelClosedException;
import io.github.bigmodel.core.Module;
import io.github.bigmodel.dispatch.DispatchOptions;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@link ChatGLM#close()} from another thread while a reply streams: close waits for the forward pass under way
 * (held inside a block by a test hook), frees nothing before it ends, and the stream's next step fails with
 * {@link ModelClosedException}; the stream still frees its KV cache when closed, and every later turn is refused.
 * In memory (copies, and the default mapped views, whose file close then unmaps) and dispatched (a block, the final
 * norm and the head on disk through an offload folder, prefetch 1).
 */
class ChatGLMCloseTest {

    @TempDir
    static Path dir;
    static Path model;

    @BeforeAll
    static void writeModel() throws Exception {
        // float16 on disk, float32 in the model: disk entries are rewritten into the offload folder (mapped views).
        model = ChatTestSupport.writeSmallChatGLM3(dir.resolve("model"), 512, DType.FLOAT16, 3);
    }

    @Test
    void inMemory() throws Exception {
        closeWhileStreaming(ChatGLM.load(model));
    }

    @Test
    void inMemoryMappedViews() throws Exception {
        // float16 as stored: every weight is a view of the mapped checkpoint, which must stay mapped until the
        // forward under way has ended and be unmapped by close.
        ChatGLM glm = ChatGLM.load(model, DType.FLOAT16);
        assertThat(mappedFiles()).as("the weights are views of the mapped shards")
                .anyMatch(f -> f.startsWith(model.toString()) && f.endsWith(".safetensors"));
        closeWhileStreaming(glm);
        assertThat(mappedFiles()).as("closing the model unmaps the checkpoint")
                .noneMatch(f -> f.startsWith(model.toString()));
    }

    /** The files this process maps now, from /proc/self/maps. */
    private static List<String> mappedFiles() throws Exception {
        List<String> out = new java.util.ArrayList<>();
        for (String line : Files.readAllLines(Path.of("/proc/self/maps"))) {
            int slash = line.indexOf('/');
            if (slash >= 0) {
                out.add(line.substring(slash));
            }
        }
        return out;
    }

    @Test
    void dispatchedWithDiskOffloadAndPrefetch() throws Exception {
        ChatGLM glm = ChatGLM.load(model, DispatchOptions.builder().deviceMap("{\"transformer.embedding\": \"cpu\","
                + " \"transformer.rotary_pos_emb\": \"cpu\", \"transformer.encoder.layers.0\": \"cpu\","
                + " \"transformer.encoder.layers.1\": \"disk\", \"transformer.encoder.final_layernorm\": \"disk\","
                + " \"transformer.output_layer\": \"disk\"}").prefetch(1).offloadFolder(dir.resolve("offload"))
                .build());
        assertThat(Files.list(dir.resolve("offload")).anyMatch(f -> f.toString().endsWith(".dat"))).isTrue();
        closeWhileStreaming(glm);
    }

    private static void closeWhileStreaming(ChatGLM glm) throws Exception {
        ChatOptions options = ChatOptions.builder().generation(GenerationConfig.builder().maxNewTokens(40)
                .doSample(false).build()).build();
        ChatStream stream = glm.streamChat("你好", List.of(), options);
        long cache = stream.cacheBytes();
        assertThat(cache).isPositive();

        // Holds the consumer inside block 0's first forward (the prompt's), so the close below overlaps a forward.
        AtomicBoolean armed = new AtomicBoolean(true);
        CountDownLatch inside = new CountDownLatch(1);
        CountDownLatch proceed = new CountDownLatch(1);
        Module block = glm.model().module("transformer.encoder.layers.0");
        HookHandle hook = block.addForwardHook(new ForwardHook() {
            @Override
            public void beforeForward(Module m) {
                if (armed.getAndSet(false)) {
                    inside.countDown();
                    try {
                        proceed.await();
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                    }
                }
            }
        });

        AtomicReference<Throwable> consumerEnd = new AtomicReference<>();
        Thread consumer = new Thread(() -> {
            try {
                while (stream.hasNext()) {
                    stream.next();
                }
                consumerEnd.set(new AssertionError("the reply ended normally although the model was closed"));
            } catch (Throwable e) {
                consumerEnd.set(e);
            }
        });
        consumer.start();
        assertThat(inside.await(30, TimeUnit.SECONDS)).as("consumer inside a forward").isTrue();

        AtomicBoolean closed = new AtomicBoolean();
        Thread closer = new Thread(() -> {
            glm.close();
            closed.set(true);
        });
        closer.start();
        Thread.sleep(300);
        assertThat(closed).as("close returned while a forward was running").isFalse();
        assertThat(glm.model().useGuard().isClosed()).isTrue();
        assertThat(glm.model().useGuard().activeUsers()).isEqualTo(1);
        assertThat(glm.model().tensor("transformer.encoder.layers.0.mlp.dense_h_to_4h.weight").isMaterialized()).as("no weight freed while the forward runs").isTrue();

        proceed.countDown();
        closer.join(30_000);
        consumer.join(30_000);
        assertThat(closed).isTrue();
        assertThat(consumerEnd.get()).isInstanceOf(ModelClosedException.class);
        assertThat(glm.model().tensor("transformer.encoder.layers.0.mlp.dense_h_to_4h.weight").isMaterialized())
                .as("weights released after the forward ended").isFalse();

        assertThat(stream.cacheBytes()).as("the stream still owns its cache").isEqualTo(cache);
        stream.close();
        assertThat(stream.cacheBytes()).isZero();
        assertThat(stream.hasNext()).isFalse();
        hook.remove();

        assertThat(glm.isClosed()).isTrue();
        assertThatThrownBy(() -> glm.chat("你好", List.of(), options)).isInstanceOf(ModelClosedException.class)
                .hasMessageContaining("closed");
        assertThatThrownBy(() -> glm.streamChat("你好", List.of(), options))
                .isInstanceOf(ModelClosedException.class);
        glm.close(); // idempotent
    }
}
