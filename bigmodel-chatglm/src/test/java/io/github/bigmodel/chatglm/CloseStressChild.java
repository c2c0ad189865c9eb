package io.github.bigmodel.chatglm;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.github.bigmodel.chatglm.generation.GenerationRequest;
import io.github.bigmodel.chatglm.generation.Generator;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.ModelClosedException;
import io.github.bigmodel.core.testing.ReferenceTree;
import io.github.bigmodel.dispatch.BigModel;
import io.github.bigmodel.dispatch.DispatchOptions;
import io.github.bigmodel.dispatch.DispatchedModel;
import io.github.bigmodel.safetensors.Checkpoint;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;

/**
 * Run in a child JVM by {@link NativeCloseStressTest}: loads the tiny reference models again and again with a
 * block on disk read ahead by the prefetcher, generates, and closes them, also from another thread while
 * generations run, with busy threads keeping every core loaded. A crash kills this JVM (the parent reports it);
 * any outcome other than a correct result or {@link ModelClosedException} is printed and makes the exit code 1.
 *
 * <p>Arguments: {@code cycles closeCycles busyThreads workDir seed}. Prints one line
 * {@code RESULT cycles=.. ok=.. closeCycles=.. completed=.. closedException=.. refusedAfterClose=.. steps=..
 * unexpected=.. ms=..}.
 */
public final class CloseStressChild {

    /** Generation threads racing each close. */
    private static final int GENERATORS = 2;
    private static final long JOIN_SECONDS = 120;

    private CloseStressChild() {
    }

    /** One tiny reference model: folder, config, the device map putting blocks on disk, a greedy case. */
    record Subject(String name, Path folder, ChatGLMConfig config, String map, long[] prompt, long[] newIds) {
    }

    private static final AtomicInteger UNEXPECTED = new AtomicInteger();

    public static void main(String[] args) throws Exception {
        int cycles = Integer.parseInt(args[0]);
        int closeCycles = Integer.parseInt(args[1]);
        int busy = Integer.parseInt(args[2]);
        Path work = Path.of(args[3]);
        SplittableRandom random = new SplittableRandom(Long.parseLong(args[4]));
        List<Subject> subjects = new ArrayList<>();
        for (String name : new String[] {"chatglm3-6b-tiny", "chatglm-6b-tiny"}) {
            subjects.add(subject(name));
        }
        AtomicBoolean stop = new AtomicBoolean();
        List<Thread> busyThreads = startBusy(busy, stop);
        long started = System.nanoTime();
        int ok = 0;
        for (int i = 0; i < cycles; i++) {
            Subject s = subjects.get(i % subjects.size());
            try {
                ok += loadGenerateClose(s, variant(i / subjects.size()), work) ? 1 : 0;
            } catch (RuntimeException | Error e) {
                unexpected("cycle " + i + " (" + s.name() + ")", e);
            }
        }
        long[] counts = new long[4]; // completed, closedException, refusedAfterClose, steps
        for (int i = 0; i < closeCycles; i++) {
            Subject s = subjects.get(i % subjects.size());
            try {
                closeDuringGeneration(s, i / subjects.size() % 3, work, random.split(), counts);
            } catch (RuntimeException | Error e) {
                unexpected("close cycle " + i + " (" + s.name() + ")", e);
            }
        }
        long ms = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - started);
        stop.set(true);
        for (Thread t : busyThreads) {
            t.join(10_000);
        }
        System.out.println("RESULT cycles=" + cycles + " ok=" + ok + " closeCycles=" + closeCycles + " completed="
                + counts[0] + " closedException=" + counts[1] + " refusedAfterClose=" + counts[2] + " steps="
                + counts[3] + " unexpected=" + UNEXPECTED.get() + " ms=" + ms);
        System.out.flush();
        System.exit(UNEXPECTED.get() == 0 ? 0 : 1);
    }

    /** Checkpoint forms in turn: safetensors read in place, and .bin shards rewritten into an offload folder. */
    private static String variant(int n) {
        return n % 2 == 0 ? "model.safetensors.index.json" : "pytorch_model.bin.index.json";
    }

    private static Subject subject(String name) throws Exception {
        Path folder = ReferenceTree.models().resolve(name);
        ChatGLMConfig config = ChatGLMConfig.fromJson(folder.resolve("config.json"));
        JsonNode cases = new ObjectMapper().readTree(folder.resolve("expected.json").toFile()).get("cases");
        for (JsonNode c : cases) {
            if (c.get("kind").asText().equals("greedy")) {
                return new Subject(name, folder, config, diskMap(config), longs(c.get("prompt_ids")),
                        longs(c.get("new_ids")));
            }
        }
        throw new IllegalStateException(folder + "/expected.json has no greedy case");
    }

    /** Embedding on the CPU, even blocks on disk, odd ones on the CPU, the final norm (and ChatGLM2/3's head) on disk. */
    private static String diskMap(ChatGLMConfig c) {
        boolean v1 = c.version() == ChatGLMConfig.Version.CHATGLM_6B;
        String blocks = v1 ? "transformer.layers" : "transformer.encoder.layers";
        StringBuilder map = new StringBuilder("{");
        map.append(v1 ? "\"transformer.word_embeddings\": \"cpu\""
                : "\"transformer.embedding\": \"cpu\", \"transformer.rotary_pos_emb\": \"cpu\"");
        for (int i = 0; i < c.numLayers(); i++) {
            map.append(", \"").append(blocks).append('.').append(i).append("\": \"").append(i % 2 == 0 ? "disk" : "cpu")
                    .append('"');
        }
        map.append(v1 ? ", \"transformer.final_layernorm\": \"disk\", \"lm_head\": \"cpu\""
                : ", \"transformer.encoder.final_layernorm\": \"disk\", \"transformer.output_layer\": \"disk\"");
        return map.append('}').toString();
    }

    private static DispatchedModel<ChatGLMLanguageModel> load(Subject s, String checkpoint, Path work) {
        ChatGLMLanguageModel model = ChatGLMLanguageModel.create(s.config(), DType.FLOAT32);
        DispatchOptions options = DispatchOptions.builder().deviceMap(s.map()).prefetch(1)
                .offloadFolder(work.resolve(s.name() + "-offload")).noSplitModuleClasses("GLMBlock").build();
        return BigModel.loadCheckpointAndDispatch(model, s.folder().resolve(checkpoint), options);
    }

    private static GenerationRequest request(Subject s, int maxNew) {
        return GenerationRequest.builder(new long[][] {s.prompt()}).maxNewTokens(maxNew).stopAtEos(false).build();
    }

    /** Load, generate the fixture's greedy ids (a few), close: true when the ids are THUDM's. */
    private static boolean loadGenerateClose(Subject s, String checkpoint, Path work) {
        int n = Math.min(4, s.newIds().length);
        long[] got;
        try (DispatchedModel<ChatGLMLanguageModel> d = load(s, checkpoint, work);
                PointerScope scope = new PointerScope()) {
            got = new Generator(d.model()).generate(request(s, n)).newIds()[0];
        }
        if (!Arrays.equals(got, Arrays.copyOf(s.newIds(), n))) {
            unexpected("wrong ids for " + s.name() + " from " + checkpoint + ": " + Arrays.toString(got), null);
            return false;
        }
        return true;
    }

    /**
     * Loads (dispatched from safetensors, dispatched through the offload folder, or in memory), starts
     * {@link #GENERATORS} threads generating in a loop, closes the model after a random number of steps from this
     * thread, and checks every outcome: complete and correct, or {@link ModelClosedException}. Afterwards a new
     * generation must be refused with it too.
     */
    private static void closeDuringGeneration(Subject s, int kind, Path work, SplittableRandom random, long[] counts)
            throws Exception {
        ChatGLMLanguageModel model;
        DispatchedModel<ChatGLMLanguageModel> dispatched = null;
        if (kind == 2) {
            model = ChatGLMLanguageModel.create(s.config(), DType.FLOAT32);
            try (Checkpoint checkpoint = Checkpoint.open(s.folder().resolve("model.safetensors"))) {
                model.loadWeights(checkpoint::load, Device.CPU, DType.FLOAT32);
            }
        } else {
            dispatched = load(s, variant(kind), work);
            model = dispatched.model();
        }
        int n = Math.min(6, s.newIds().length);
        long[] want = Arrays.copyOf(s.newIds(), n);
        AtomicLong steps = new AtomicLong();
        AtomicLong completed = new AtomicLong();
        AtomicLong closed = new AtomicLong();
        Generator generator = new Generator(model);
        List<Thread> threads = new ArrayList<>();
        for (int g = 0; g < GENERATORS; g++) {
            Thread t = new Thread(() -> {
                while (true) {
                    try (PointerScope scope = new PointerScope();
                            Generator.Session session = generator.start(request(s, n))) {
                        while (!session.isFinished()) {
                            session.step();
                            steps.incrementAndGet();
                        }
                        long[] got = session.result().newIds()[0];
                        if (!Arrays.equals(got, want)) {
                            unexpected("wrong ids under close for " + s.name() + ": " + Arrays.toString(got), null);
                            return;
                        }
                        if (session.holdsCache()) {
                            unexpected("a finished session still holds its cache", null);
                        }
                        completed.incrementAndGet();
                    } catch (ModelClosedException e) {
                        closed.incrementAndGet();
                        return;
                    } catch (RuntimeException | Error e) {
                        unexpected("generation of " + s.name() + " (kind " + kind + ")", e);
                        return;
                    }
                }
            }, "stress-generate-" + g);
            t.setDaemon(true);
            threads.add(t);
        }
        threads.forEach(Thread::start);
        // Close anywhere from before the first forward to a few tokens in, and sometimes mid-step.
        long target = random.nextInt(2 * n + 1);
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (steps.get() < target && System.nanoTime() < deadline && threads.stream().anyMatch(Thread::isAlive)) {
            Thread.onSpinWait();
        }
        if (random.nextBoolean()) {
            busyWaitNanos(random.nextInt(200_000));
        }
        if (dispatched != null) {
            dispatched.close();
        } else {
            model.useGuard().close(); // what ChatGLM.close() does for weights it loaded
            model.toMeta();
        }
        for (Thread t : threads) {
            t.join(TimeUnit.SECONDS.toMillis(JOIN_SECONDS));
            if (t.isAlive()) {
                unexpected("a generation thread did not end " + JOIN_SECONDS + " s after close (deadlock?)", null);
            }
        }
        try {
            generator.start(request(s, n)).close();
            unexpected("a generation started after close", null);
        } catch (ModelClosedException expected) {
            counts[2]++;
        }
        counts[0] += completed.get();
        counts[1] += closed.get();
        counts[3] += steps.get();
    }

    private static void busyWaitNanos(long nanos) {
        long end = System.nanoTime() + nanos;
        while (System.nanoTime() < end) {
            Thread.onSpinWait();
        }
    }

    /** Threads that keep the cores busy with small libtorch ops and allocations (and so the allocator and GC). */
    private static List<Thread> startBusy(int count, AtomicBoolean stop) {
        List<Thread> threads = new ArrayList<>();
        for (int i = 0; i < count; i++) {
            Thread t = new Thread(() -> {
                long sink = 0;
                while (!stop.get()) {
                    try (PointerScope scope = new PointerScope()) {
                        Tensor a = torch.randn(48, 48);
                        sink += (long) a.matmul(a).sum().item_float();
                    }
                    byte[] garbage = new byte[1 << 14];
                    sink += garbage.length;
                }
                if (sink == 42) {
                    System.out.print("");
                }
            }, "stress-busy-" + i);
            t.setDaemon(true);
            t.start();
            threads.add(t);
        }
        return threads;
    }

    private static synchronized void unexpected(String what, Throwable e) {
        UNEXPECTED.incrementAndGet();
        System.out.println("UNEXPECTED " + what + (e == null ? "" : ": " + e));
        if (e != null) {
            e.printStackTrace(System.out);
        }
    }

    private static long[] longs(JsonNode array) {
        long[] out = new long[array.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = array.get(i).asLong();
        }
        return out;
    }
}
