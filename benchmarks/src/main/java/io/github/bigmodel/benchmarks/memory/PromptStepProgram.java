package io.github.bigmodel.benchmarks.memory;

import io.github.bigmodel.benchmarks.decode.GenerateCheckpoint;
import io.github.bigmodel.chatglm.ChatGLMConfig;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.chatglm.model.ForwardInput;
import io.github.bigmodel.chatglm.model.KvCache;
import io.github.bigmodel.chatglm.model.StepWorkspace;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.MemorySize;
import io.github.bigmodel.core.NativeRuntime;
import io.github.bigmodel.core.Parameter;
import io.github.bigmodel.core.ProcessMemory;
import io.github.bigmodel.core.quant.Precision;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;

/**
 * The memory and speed of one prompt step on a 6B-shaped model cut to a few layers (random weights made in
 * memory, a small vocabulary): the process's peak resident memory during a prompt of {@code --tokens} positions
 * above its resident memory before it, less the KV cache the step writes, beside {@link StepWorkspace}'s
 * estimate; then prompt throughput (tokens/s) of a {@code --speed-tokens} prompt, best and median of
 * {@code --repeats}. Prints one markdown row per figure. docs/memory.md has the method and the figures.
 *
 * <pre>{@code
 * java -Xms512m -Xmx512m -XX:+AlwaysPreTouch -cp benchmarks/target/benchmarks.jar \
 *     io.github.bigmodel.benchmarks.memory.PromptStepProgram --preset chatglm3-6b --layers 2 --dtype bf16 \
 *     --tokens 2048 --speed-tokens 512 --repeats 3
 * }</pre>
 *
 * <p>Uses only the public API, so the same file measures an older build of the library.
 */
// PointerScope blocks are used for what they release on close, not referenced by name.
@SuppressWarnings("try")
public final class PromptStepProgram {

    private PromptStepProgram() {
    }

    /**
     * {@code [--preset chatglm3-6b|chatglm-6b] [--layers 2] [--dtype bf16] [--tokens 2048] [--speed-tokens 512]
     * [--repeats 3] [--threads N]}.
     */
    public static void main(String[] args) throws IOException {
        String preset = "chatglm3-6b";
        int layers = 2;
        DType dtype = DType.BFLOAT16;
        int tokens = 2048;
        int speedTokens = 512;
        int repeats = 3;
        for (int i = 0; i < args.length; i += 2) {
            if (i + 1 >= args.length) {
                throw new IllegalArgumentException("Option " + args[i] + " needs a value");
            }
            String v = args[i + 1];
            switch (args[i]) {
                case "--preset" -> preset = v;
                case "--layers" -> layers = Integer.parseInt(v);
                case "--dtype" -> dtype = Precision.parse(v).dtype();
                case "--tokens" -> tokens = Integer.parseInt(v);
                case "--speed-tokens" -> speedTokens = Integer.parseInt(v);
                case "--repeats" -> repeats = Integer.parseInt(v);
                case "--threads" -> NativeRuntime.setThreads(Integer.parseInt(v));
                default -> throw new IllegalArgumentException("Unknown option " + args[i] + "; options: --preset, "
                        + "--layers, --dtype, --tokens, --speed-tokens, --repeats, --threads");
            }
        }
        NativeRuntime.init();
        ChatGLMConfig config = config(preset, layers, dtype);
        ChatGLMLanguageModel model = ChatGLMLanguageModel.create(config, dtype);
        try {
            loadRandom(model, dtype);
            // Warm-up: kernels' first use, thread pools, the allocator's first arenas.
            prompt(model, 64);
            prompt(model, Math.min(speedTokens, tokens));
            System.gc();

            long kv = config.kvCacheBytesPerLayer(tokens, 1, dtype) * config.numLayers();
            long predicted = StepWorkspace.bytes(config, dtype, 1, tokens, tokens, config.numLayers());
            long before = ProcessMemory.read().residentBytes();
            boolean reset = resetPeak();
            long start = System.nanoTime();
            prompt(model, tokens);
            double seconds = (System.nanoTime() - start) / 1e9;
            long peak = ProcessMemory.read().peakResidentBytes();
            long measured = reset ? peak - before - kv : -1;
            System.out.printf(Locale.ROOT, "| %s, %d layers, %s, %d threads | %d-token prompt | workspace measured %s"
                    + " (peak %s above %s, less KV %s) | estimated %s | %.1f s |%n", preset, layers,
                    dtype.torchName(), torch.get_num_threads(), tokens,
                    reset ? MemorySize.format(measured) : "n/a (no clear_refs)", MemorySize.format(peak - before),
                    MemorySize.format(before), MemorySize.format(kv), MemorySize.format(predicted), seconds);

            double[] rates = new double[repeats];
            for (int r = 0; r < repeats; r++) {
                long t0 = System.nanoTime();
                prompt(model, speedTokens);
                rates[r] = speedTokens / ((System.nanoTime() - t0) / 1e9);
            }
            Arrays.sort(rates);
            System.out.printf(Locale.ROOT, "| %s, %d layers, %s, %d threads | %d-token prompt | %.1f tokens/s best,"
                    + " %.1f median of %d |%n", preset, layers, dtype.torchName(), torch.get_num_threads(),
                    speedTokens, rates[repeats - 1], rates[repeats / 2], repeats);
        } finally {
            model.toMeta();
        }
    }

    /** The preset with {@code layers} blocks and a 1024-token vocabulary (ChatGLM-6B's special ids moved into it). */
    static ChatGLMConfig config(String preset, int layers, DType dtype) {
        ChatGLMConfig base = ChatGLMConfig.preset(preset);
        Map<String, String> set = new LinkedHashMap<>();
        set.put("num_layers", Integer.toString(layers));
        if (base.version() == ChatGLMConfig.Version.CHATGLM2) {
            set.put("padded_vocab_size", "1024");
        } else {
            set.put("vocab_size", "1024");
            set.put("mask_token_id", "1000");
            set.put("gmask_token_id", "1001");
            set.put("bos_token_id", "1002");
            set.put("eos_token_id", "1003");
        }
        return ChatGLMConfig.fromJsonString(GenerateCheckpoint.configJson(preset, set, dtype).toString());
    }

    private static void loadRandom(ChatGLMLanguageModel model, DType dtype) {
        Map<String, Parameter> state = model.stateDict();
        torch.manual_seed(42);
        model.loadWeights(name -> {
            Parameter p = state.get(name);
            if (p == null) {
                return null;
            }
            Tensor t = name.endsWith("layernorm.weight") ? torch.ones(p.shape())
                    : torch.randn(p.shape()).mul_(new Scalar(0.02));
            return t.to(dtype.scalarType());
        }, Device.CPU, dtype);
    }

    /** One prompt step of {@code n} tokens on a fresh cache, the last position's logits only (as generation). */
    private static void prompt(ChatGLMLanguageModel model, int n) {
        ChatGLMConfig c = model.config();
        long[] ids = new long[n];
        for (int i = 0; i < n; i++) {
            ids[i] = 5 + (i * 7919L) % 900;
        }
        if (c.version() == ChatGLMConfig.Version.CHATGLM_6B) {
            ids[n - 2] = c.gmaskTokenId();
            ids[n - 1] = c.bosTokenId();
        }
        try (KvCache cache = model.newCache(1, n); PointerScope scope = new PointerScope()) {
            model.forward(ForwardInput.builder(new long[][] {ids}).cache(cache).lastLogitOnly(true).build());
        }
    }

    /** Resets the kernel's high-water mark of resident memory (Linux {@code clear_refs} 5); false if it cannot. */
    private static boolean resetPeak() {
        try {
            Files.writeString(Path.of("/proc/self/clear_refs"), "5");
            return true;
        } catch (IOException e) {
            return false;
        }
    }
}
