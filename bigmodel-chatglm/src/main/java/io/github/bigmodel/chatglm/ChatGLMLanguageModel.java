package io.github.bigmodel.chatglm;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.Module;
import io.github.bigmodel.core.Parameter;
import io.github.bigmodel.core.Tensors;
import java.util.Arrays;
import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.Map;
import java.util.Set;
import java.util.function.Function;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A ChatGLM causal language model ({@code ChatGLMForConditionalGeneration}) as a {@link Module} tree with the
 * official parameter names, so that official checkpoints load by name and device maps can be planned on it.
 * Built on meta from a {@link ChatGLMConfig}: no memory is used until {@link #loadWeights} puts tensors in.
 *
 * <p>{@link #forward(ForwardInput)} returns float32 logits {@code [batch, L (or 1), vocab]}; every temporary of
 * the pass is released before it returns (the logits are the caller's to close, or belong to the caller's
 * innermost {@link PointerScope} when one is open).
 *
 * <pre>{@code
 * ChatGLMLanguageModel model = ChatGLMLanguageModel.create(ChatGLMConfig.fromJson(dir.resolve("config.json")));
 * model.loadWeights(checkpoint::tensor, Device.CPU, DType.FLOAT32);
 * try (Tensor logits = model.forward(ForwardInput.builder(new long[][] {{64790, 64792, 36474}}).build())) {
 *     ...
 * }
 * }</pre>
 */
// PointerScope blocks are used for what they release on close, not referenced by name.
@SuppressWarnings("try")
public abstract class ChatGLMLanguageModel extends Module {

    private static final Logger LOG = LoggerFactory.getLogger(ChatGLMLanguageModel.class);

    private final ChatGLMConfig config;
    private DType computeDtype;

    protected ChatGLMLanguageModel(ChatGLMConfig config, DType dtype) {
        super("ChatGLMForConditionalGeneration");
        if (config == null) {
            throw new IllegalArgumentException("config must not be null");
        }
        if (dtype == null || !dtype.isFloatingPoint() || !dtype.hasScalarType()) {
            throw new IllegalArgumentException("Model dtype must be a floating-point type, got " + dtype);
        }
        this.config = config;
        this.computeDtype = dtype;
    }

    /** The model for this config, parameters on meta in the config's {@code torch_dtype}. */
    public static ChatGLMLanguageModel create(ChatGLMConfig config) {
        return create(config, config.torchDtype());
    }

    /** The model for this config, parameters on meta in {@code dtype}. */
    public static ChatGLMLanguageModel create(ChatGLMConfig config, DType dtype) {
        if (config.version() == ChatGLMConfig.Version.CHATGLM2) {
            return new ChatGLM2ForConditionalGeneration(config, dtype);
        }
        return new ChatGLM6BForConditionalGeneration(config, dtype);
    }

    public ChatGLMConfig config() {
        return config;
    }

    /** The dtype activations and the cache use: the weights' dtype once loaded. */
    public DType dtype() {
        return computeDtype;
    }

    /** State-dict names this model computes itself and does not need from a checkpoint (rotary inv_freq). */
    protected abstract boolean isComputedBuffer(String name);

    /**
     * Where {@code module} computes; when it cannot tell (its weights are offloaded under a hook on an ancestor),
     * where the model computes.
     */
    protected final Device runsOn(Module module) {
        Device d = module.executionDevice();
        if (d == null) {
            d = executionDevice();
        }
        if (d == null) {
            throw new IllegalStateException("Weights are not loaded: no device holds or runs " + module.className());
        }
        return d;
    }

    /** Fills the computed buffers after loading. */
    protected abstract void initComputedBuffers();

    /**
     * Derives the rotary tables once an external loader (bigmodel-dispatch's {@code BigModel}) has placed the
     * weights, on the devices the layers execute on.
     */
    @Override
    public void onWeightsLoaded() {
        initComputedBuffers();
    }

    /** The devices the layers' weights are on, in layer order (for the cache). */
    protected abstract Device[] layerDevices();

    /** The forward pass proper; runs inside a pointer scope owned by {@link #forward}. */
    protected abstract Tensor forwardInScope(ForwardInput input);

    /** Builds what the generation loop feeds the model, per the official generation hooks. */
    abstract Decoding startDecoding(GenerationRequest request);

    /** Loads every weight onto one device, converted to {@code dtype}. */
    public void loadWeights(Function<String, Tensor> source, Device device, DType dtype) {
        loadWeights(source, name -> device, dtype);
    }

    /**
     * Loads every weight of the state dict from {@code source} (state-dict name to a tensor on any device, or null
     * when absent), converted to {@code dtype} and placed where {@code placement} says. The source's tensors stay
     * the caller's: the model keeps its own handles (sharing storage when no conversion was needed). A tied
     * weight is read once under its first name.
     *
     * @throws WeightLoadException naming the tensor when one is missing, not floating point or of the wrong shape
     */
    public void loadWeights(Function<String, Tensor> source, Function<String, Device> placement, DType dtype) {
        if (dtype == null || !dtype.isFloatingPoint() || !dtype.hasScalarType()) {
            throw new IllegalArgumentException("Weights dtype must be a floating-point type, got " + dtype);
        }
        Set<Parameter> loaded = Collections.newSetFromMap(new IdentityHashMap<>());
        int count = 0;
        try (PointerScope scope = new PointerScope()) {
            for (Map.Entry<String, Parameter> e : stateDict().entrySet()) {
                String name = e.getKey();
                Parameter p = e.getValue();
                if (loaded.contains(p) || isComputedBuffer(name)) {
                    continue;
                }
                Tensor src = source.apply(name);
                if (src == null) {
                    throw new WeightLoadException(name, "The checkpoint has no tensor '" + name + "'");
                }
                DType srcType = DType.of(src.scalar_type());
                if (!srcType.isFloatingPoint()) {
                    throw new WeightLoadException(name, "Tensor '" + name + "' is " + srcType.torchName()
                            + ", a weight must be floating point");
                }
                long[] shape = Tensors.shape(src);
                if (!Arrays.equals(shape, p.shape())) {
                    throw new WeightLoadException(name, "Tensor '" + name + "' has shape " + Arrays.toString(shape)
                            + ", the model expects " + Arrays.toString(p.shape()));
                }
                Device device = placement.apply(name);
                if (device == null || !device.isTensorDevice() || device.isMeta()) {
                    throw new WeightLoadException(name, "No usable device for '" + name + "': " + device);
                }
                Tensor t = src.to(Tensors.toTorch(device), dtype.scalarType()).contiguous();
                t.retainReference();
                p.set(t);
                loaded.add(p);
                count++;
            }
        }
        this.computeDtype = dtype;
        initComputedBuffers();
        LOG.debug("Loaded {} tensors into {} as {}", count, config, dtype.torchName());
    }

    /** A cache for {@code batch} sequences of up to {@code capacity} positions, on the layers' devices. */
    public KvCache newCache(int batch, long capacity) {
        return new KvCache(layerDevices(), batch, capacity, config.kvHeads(), config.headDim(), computeDtype);
    }

    /**
     * Runs the model. Returns float32 logits {@code [batch, L, vocab]} ({@code [batch, 1, vocab]} with
     * {@link ForwardInput#lastLogitOnly()}); with a cache, the new positions are appended to it.
     *
     * @throws IllegalArgumentException for token ids outside the vocabulary or inconsistent inputs
     */
    public final Tensor forward(ForwardInput input) {
        for (long[] row : input.inputIds()) {
            for (long id : row) {
                if (id < 0 || id >= config.vocabSize()) {
                    throw new IllegalArgumentException("Token id " + id + " is outside the vocabulary [0, "
                            + config.vocabSize() + ")");
                }
            }
        }
        if (input.cache() != null) {
            input.cache().checkRoom(input.batchSize(), input.length());
        }
        Tensor logits;
        try (PointerScope scope = new PointerScope()) {
            logits = forwardInScope(input);
            logits.retainReference();
        }
        // Hand the logits to the caller's scope when there is one (it then holds the only reference).
        PointerScope outer = PointerScope.getInnerScope();
        if (outer != null) {
            outer.attach(logits);
            logits.releaseReference();
        }
        return logits;
    }

    /** Checks that a caller-given tensor has the expected shape. */
    static void requireShape(String what, Tensor t, long... expected) {
        long[] actual = Tensors.shape(t);
        if (!Arrays.equals(actual, expected)) {
            throw new IllegalArgumentException(what + " must have shape " + Arrays.toString(expected) + ", got "
                    + Arrays.toString(actual));
        }
    }

    /** What the generation loop feeds the model at each step; owns the tensors it builds. */
    abstract static class Decoding implements AutoCloseable {

        /** The first call: the whole prompt. */
        abstract ForwardInput first(KvCache cache);

        /** One more token per row, after {@code tokens} were chosen. */
        abstract ForwardInput next(long[] tokens, KvCache cache);

        @Override
        public abstract void close();
    }
}
