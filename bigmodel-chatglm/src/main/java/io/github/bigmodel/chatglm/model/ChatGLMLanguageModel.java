package io.github.bigmodel.chatglm.model;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.ModelClosedException;
import io.github.bigmodel.core.Module;
import io.github.bigmodel.core.UseGuard;
import io.github.bigmodel.core.Parameter;
import io.github.bigmodel.core.Tensors;
import io.github.bigmodel.core.kernel.Scopes;
import io.github.bigmodel.core.quant.Precision;
import io.github.bigmodel.core.quant.QuantizedLinear;
import io.github.bigmodel.core.quant.QuantizedWeight;
import io.github.bigmodel.core.quant.WeightConversion;
import io.github.bigmodel.dispatch.DispatchedModel;
import io.github.bigmodel.dispatch.report.MemoryReport;
import io.github.bigmodel.safetensors.SafetensorsWriter;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Arrays;
import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.Map;
import java.util.Set;
import java.util.WeakHashMap;
import java.util.function.Function;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import io.github.bigmodel.chatglm.ChatGLMConfig;
import io.github.bigmodel.chatglm.ChatGLMConfigException;
import io.github.bigmodel.chatglm.generation.GenerationRequest;
import io.github.bigmodel.chatglm.internal.Ops;

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
 *
 * <p>Threads and ownership: the model owns its weights (in its parameters) and the tables derived from them; each
 * {@link KvCache} belongs to the session that asked for it ({@link #newCache}), not to the model. Forward passes
 * may run on several threads; each one holds the model's {@link UseGuard} ({@link #useGuard()}) from start to end.
 * {@link #toMeta()} closes that guard first, so it waits for the forwards under way and makes those that start
 * meanwhile fail with {@link ModelClosedException}; afterwards the guard is open again unless it was closed before
 * (a closed {@code ChatGLM} or {@code DispatchedModel} closes it for good), and a forward finds no weights
 * ({@link IllegalStateException}). Never does a forward read a freed weight.
 */
// PointerScope blocks are used for what they release on close, not referenced by name.
@SuppressWarnings("try")
public abstract class ChatGLMLanguageModel extends Module {

    /**
     * The class name of a transformer block in every ChatGLM version (THUDM's {@code GLMBlock}): the one module a
     * device map must never split, since its residuals and its attention's KV cache live on one device.
     */
    public static final String BLOCK_CLASS = "GLMBlock";

    private static final Logger LOG = LoggerFactory.getLogger(ChatGLMLanguageModel.class);

    private final ChatGLMConfig config;
    private DType computeDtype;
    /** Caches handed out and not yet collected; weak, so a forgotten cache is not kept alive by the report. */
    private final Set<KvCache> liveCaches = Collections.newSetFromMap(new WeakHashMap<>());
    /** Weights per device, counted when loading ends (before any forward: hooks move offloaded weights). */
    private volatile Map<Device, Long> weightBytes = Map.of();
    /** What this process holds of the model (null: all of it) and where the rest of a step goes. */
    private volatile StageSpan stage;
    private volatile PipelineLink link;

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

    /** {@value #BLOCK_CLASS}: THUDM's {@code _no_split_modules}. */
    @Override
    public Set<String> noSplitModuleClasses() {
        return Set.of(BLOCK_CLASS);
    }

    /** The dtype activations and the cache use: the weights' dtype once loaded. */
    public DType dtype() {
        return computeDtype;
    }

    /** State-dict names this model computes itself and does not need from a checkpoint (rotary inv_freq). */
    @Override
    public abstract boolean isComputedBuffer(String name);

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
     * Frees what {@link #initComputedBuffers()} made (tables held outside the state dict, such as the rotary
     * cos/sin); called by {@link #toMeta()} once no forward pass runs, so a released model holds no native memory
     * and a reload builds them again on its own devices.
     */
    protected abstract void releaseComputedBuffers();

    /** Bytes held by the computed tables outside the state dict (0 after {@link #toMeta()}); for tests. */
    abstract long computedBufferBytes();

    /**
     * Derives the rotary tables once an external loader (bigmodel-dispatch's {@code BigModel}) has placed the
     * weights, on the devices the layers execute on.
     */
    @Override
    public void onWeightsLoaded() {
        initComputedBuffers();
        weightBytes = MemoryReport.weightBytesByDevice(this, null);
    }

    /**
     * Releases the weights; the memory report then counts none. Waits for forward passes under way on other threads
     * (see the class doc); forwards that start meanwhile fail with {@link ModelClosedException}.
     *
     * @throws IllegalStateException when called from inside one of this model's forward passes
     */
    @Override
    public void toMeta() {
        UseGuard guard = useGuard();
        boolean wasClosed = guard.isClosed();
        guard.close();
        try {
            super.toMeta();
            releaseComputedBuffers();
            weightBytes = Map.of();
        } finally {
            if (!wasClosed) {
                guard.reopen();
            }
        }
    }

    /**
     * Makes this model one stage of a pipeline: it holds (loads, runs, caches) only what {@code span} names, and a
     * forward pass hands the blocks and head it does not hold to {@code link}. Call before loading the weights;
     * {@code span} null (or the whole model) and {@code link} null is the single-process model.
     *
     * <pre>{@code
     * ChatGLMLanguageModel m = ChatGLMLanguageModel.create(config);
     * m.setStage(new StageSpan(true, 0, 14, false), link);
     * m.loadWeights(checkpoint::tensor, Device.CPU, DType.FLOAT32);   // embedding and blocks 0..13 only
     * }</pre>
     *
     * @throws IllegalArgumentException when the span names blocks the model does not have, or when a stage that
     *     takes token ids and hands on part of the step has no link
     */
    public void setStage(StageSpan span, PipelineLink link) {
        int n = config.numLayers();
        if (span != null && span.endLayer() > n) {
            throw new IllegalArgumentException("The model has " + n + " blocks, the stage names [" + span.firstLayer()
                    + ", " + span.endLayer() + ")");
        }
        if (span != null && span.embedding() && span.firstLayer() != 0) {
            throw new IllegalArgumentException("A stage that holds the embedding starts at block 0, got "
                    + span.firstLayer());
        }
        if (span != null && span.embedding() && !span.isWhole(n) && link == null) {
            throw new IllegalArgumentException("A first stage that does not hold the whole model needs a link");
        }
        this.stage = span == null || span.isWhole(n) && link == null ? null : span;
        this.link = link;
    }

    /** What this process holds of the model ({@link StageSpan#whole} when it is not a pipeline stage). */
    public StageSpan stage() {
        StageSpan s = stage;
        return s == null ? StageSpan.whole(config.numLayers()) : s;
    }

    /** The devices the held layers run on, in layer order, null for a layer another stage holds (for the cache). */
    protected final Device[] layerDevices() {
        StageSpan s = stage();
        Device[] out = new Device[config.numLayers()];
        for (int i = 0; i < out.length; i++) {
            // Where the layer runs (an offloaded layer's weights report disk between forwards).
            out[i] = s.holdsLayer(i) ? runsOn(block(i)) : null;
        }
        return out;
    }

    /** Whether this stage holds the weight {@code name} (a state-dict name). */
    final boolean holds(String name) {
        return holds(name, stage());
    }

    /**
     * Whether a stage with {@code span} holds the weight {@code name} (a state-dict name of this model); weights
     * outside the embedding, the blocks and the head (none in ChatGLM) are held by every stage.
     */
    public final boolean holds(String name, StageSpan span) {
        int part = partOf(name);
        return part >= 0 ? span.holdsLayer(part) : part == -1 ? span.embedding() : part == -2 ? span.head() : true;
    }

    /**
     * The span of the weights for which {@code held} is true (state-dict names; e.g. those a device map places on
     * one host): a whole embedding, a run of consecutive whole blocks, a whole head.
     *
     * <pre>{@code
     * StageSpan s = model.spanWhere(name -> "box-b".equals(hostMap.hostOf(name)));
     * }</pre>
     *
     * @throws IllegalArgumentException when a part is held only in part, or the held blocks are not consecutive
     */
    public StageSpan spanWhere(java.util.function.Predicate<String> held) {
        int n = config.numLayers();
        Map<Integer, Boolean> parts = new java.util.HashMap<>();
        for (String name : stateDict().keySet()) {
            int part = partOf(name);
            if (part == -3 || isComputedBuffer(name)) {
                continue;
            }
            boolean h = held.test(name);
            Boolean before = parts.put(part, h);
            if (before != null && before != h) {
                throw new IllegalArgumentException("A stage holds " + (part >= 0 ? "block " + part : part == -1
                        ? "the embedding" : "the head") + " only in part (" + name + ")");
            }
        }
        int first = -1;
        int end = -1;
        for (int i = 0; i < n; i++) {
            if (Boolean.TRUE.equals(parts.get(i))) {
                if (end >= 0 && end != i) {
                    throw new IllegalArgumentException("A stage's blocks must be consecutive: block " + i
                            + " follows a gap after block " + (end - 1));
                }
                first = first < 0 ? i : first;
                end = i + 1;
            }
        }
        boolean embedding = Boolean.TRUE.equals(parts.get(-1));
        boolean head = Boolean.TRUE.equals(parts.get(-2));
        if (first < 0) {
            // No blocks: an empty run where the stage sits (after the last block when it holds only the head).
            first = embedding ? 0 : n;
            end = first;
        }
        return new StageSpan(embedding, first, end, head);
    }

    /**
     * Resolves a step's per-position inputs as the official code does: {@code [positions, mask]}, the int64 position
     * ids (defaults filled in) and the boolean attention mask (true = masked), or null for the mask when the blocks
     * build the plain causal one. Validates them; runs inside the forward's pointer scope.
     */
    protected abstract Tensor[] stepInputs(ForwardInput input, long past);

    /** The word embedding of {@code ids}: {@code [L, B, hidden]} on the device the first block runs on. */
    protected abstract Tensor embed(long[][] ids);

    /** Runs blocks {@code [from, to)} of {@code step} on {@code hidden}, writing their positions into the cache. */
    protected abstract Tensor runBlocks(PipelineStep step, Tensor hidden, int from, int to, KvCache cache);

    /** The final norm and the output layer: float32 logits {@code [B, L or 1, vocab]}. */
    protected abstract Tensor head(Tensor hidden, boolean lastOnly);

    /**
     * The state-dict prefixes of a family's parts (each ending in a dot): the blocks (followed by the block index),
     * the word embedding, and the final norm and output layer that make the head.
     */
    protected record PartNames(String layers, String embedding, String finalNorm, String outputLayer) {
    }

    /** This family's part prefixes: the one fact {@link #partOf} needs. */
    protected abstract PartNames partNames();

    /** The word embedding module (where a stage holding it computes its tables). */
    protected abstract Module embeddingModule();

    /** The output layer module (where a head-only stage computes). */
    protected abstract Module outputModule();

    /** Which part of the model a state-dict name belongs to: a block index, or -1 embedding, -2 head, -3 other. */
    protected final int partOf(String name) {
        PartNames p = partNames();
        if (name.startsWith(p.layers())) {
            return Integer.parseInt(name.substring(p.layers().length(), name.indexOf('.', p.layers().length())));
        }
        if (name.startsWith(p.embedding())) {
            return -1;
        }
        if (name.startsWith(p.finalNorm()) || name.startsWith(p.outputLayer())) {
            return -2;
        }
        return -3;
    }

    /** The module of block {@code layer}. */
    protected abstract Module block(int layer);

    /** Where the stage computes its tables (rotary): the embedding's device, else its first block's, else the head's. */
    protected final Device stageDevice() {
        StageSpan s = stage();
        if (s.embedding()) {
            return runsOn(embeddingModule());
        }
        return s.endLayer() > s.firstLayer() ? runsOn(block(s.firstLayer())) : runsOn(outputModule());
    }

    /** Builds what the generation loop feeds the model, per the official generation hooks. */
    public abstract Decoding startDecoding(GenerationRequest request);

    /** Loads every weight onto one device, converted to {@code dtype}. */
    public void loadWeights(Function<String, Tensor> source, Device device, DType dtype) {
        loadWeights(source, name -> device, dtype);
    }

    /**
     * Loads every weight of the state dict from {@code source} (state-dict name to a tensor on any device, or null
     * when absent), converted to {@code dtype} and placed where {@code placement} says. The source's tensors stay
     * the caller's: the model keeps its own handles (sharing storage when no conversion was needed). A tied
     * weight is read once under its first name. A pre-quantized checkpoint ({@code weight} int8 plus
     * {@code weight_scale}) is dequantized to {@code dtype}.
     *
     * @throws WeightLoadException naming the tensor when one is missing, not floating point or of the wrong shape
     */
    public void loadWeights(Function<String, Tensor> source, Function<String, Device> placement, DType dtype) {
        requireFloat(dtype);
        Precision same = Precision.of(dtype);
        loadWeights(source, placement, dtype, device -> same);
    }

    /**
     * Loads every weight with the linear layers of the blocks held at the precision of the device they are placed
     * on: for {@link Precision#INT8}/{@link Precision#INT4} each weight is quantized as it arrives (symmetric, one
     * scale per output row, THUDM's layout), so the model is never whole in floating point; a checkpoint that is
     * already quantized (THUDM's int4/int8 checkpoints, or {@link #saveQuantized}) is taken as is when its bits
     * match, else dequantized (and re-quantized when another integer precision is asked). Embeddings, norms and
     * the output layer stay floating point in {@code dtype}, and so do the linears of a device whose precision is
     * {@code dtype}'s own.
     *
     * <pre>{@code
     * model.loadWeights(checkpoint::load, name -> Device.CPU, DType.FLOAT32,
     *         device -> device.isCuda() ? Precision.INT4 : Precision.INT8);
     * }</pre>
     *
     * @throws IllegalArgumentException when a device's precision is a float type other than {@code dtype}'s (one
     *     floating-point dtype per model)
     * @throws WeightLoadException naming the tensor when one is missing or does not fit
     */
    public void loadWeights(Function<String, Tensor> source, Function<String, Device> placement, DType dtype,
            Function<Device, Precision> precisionByDevice) {
        requireFloat(dtype);
        Map<String, QuantizedLinear> quantizable = planPrecisions(placement, dtype, precisionByDevice);
        Set<Parameter> loaded = Collections.newSetFromMap(new IdentityHashMap<>());
        // A pipeline stage loads what it holds; a tied weight is held when any of its names is.
        Set<Parameter> stageHolds = Collections.newSetFromMap(new IdentityHashMap<>());
        for (Map.Entry<String, Parameter> e : stateDict().entrySet()) {
            if (holds(e.getKey())) {
                stageHolds.add(e.getValue());
            }
        }
        int count = 0;
        int quantized = 0;
        // One scope for the source's tensors (a checkpoint may keep its file mappings in it); each linear weight's
        // quantization temporaries get a scope of their own so no float copy outlives its tensor.
        try (PointerScope scope = new PointerScope()) {
            for (Map.Entry<String, Parameter> e : stateDict().entrySet()) {
                String name = e.getKey();
                Parameter p = e.getValue();
                if (loaded.contains(p) || isComputedBuffer(name) || !stageHolds.contains(p)) {
                    continue;
                }
                int dot = name.lastIndexOf('.');
                QuantizedLinear linear = dot < 0 ? null : quantizable.get(name.substring(0, dot));
                if (linear != null && name.endsWith("." + QuantizedLinear.SCALE_NAME)) {
                    continue; // read together with its weight
                }
                Tensor src = source.apply(name);
                if (src == null) {
                    throw new WeightLoadException(name, "The checkpoint has no tensor '" + name + "'");
                }
                Device device = placement.apply(name);
                if (device == null || !device.isTensorDevice() || device.isMeta()) {
                    throw new WeightLoadException(name, "No usable device for '" + name + "': " + device);
                }
                Tensor scaleSrc = null;
                WeightConversion.Target target;
                if (linear != null && p == linear.weight()) {
                    // Only an integer weight has scales beside it: float checkpoints are never asked for them.
                    if (!DType.of(src.scalar_type()).isFloatingPoint()) {
                        String scaleName = name.substring(0, dot + 1) + QuantizedLinear.SCALE_NAME;
                        scaleSrc = source.apply(scaleName);
                        if (scaleSrc == null) {
                            throw new WeightLoadException(name, "Integer weight '" + name + "' has no '" + scaleName
                                    + "' beside it");
                        }
                    }
                    target = WeightConversion.Target.linearWeight(linear.precision(), dtype, linear.outFeatures(),
                            linear.inFeatures(), device);
                } else {
                    floatTensor(name, src, p.shape());
                    target = WeightConversion.Target.tensor(dtype, device);
                }
                // The one road: the same conversion dispatch, offload and convert use; views of the source are
                // kept where nothing changes, as a mapped checkpoint's tensors are.
                try (PointerScope inner = new PointerScope()) {
                    WeightConversion.Held held = WeightConversion.convert(src, scaleSrc, target.sharingStorage());
                    if (held.quantized() != null) {
                        linear.setQuantized(held.quantized());
                        quantized += held.quantizedHere() ? 1 : 0;
                    } else {
                        held.tensor().retainReference();
                        p.set(held.tensor());
                    }
                } catch (IllegalArgumentException bad) {
                    throw new WeightLoadException(name, "Tensor '" + name + "': " + bad.getMessage());
                }
                loaded.add(p);
                count++;
            }
        }
        this.computeDtype = dtype;
        initComputedBuffers();
        weightBytes = MemoryReport.weightBytesByDevice(this, null);
        LOG.debug("Loaded {} tensors ({} linear weights quantized) into {} as {}", count, quantized, config,
                dtype.torchName());
    }

    /**
     * Sets the precision of every block linear layer on meta from the device its weight will be placed on, so
     * that the state dict (and memory planning, e.g. {@code ModuleSizes}) sees int8/int4 weights with their
     * {@code weight_scale}. Returns the quantizable layers by module path.
     */
    public Map<String, QuantizedLinear> planPrecisions(Function<String, Device> placement, DType dtype,
            Function<Device, Precision> precisionByDevice) {
        Map<String, QuantizedLinear> out = new LinkedHashMap<>();
        for (Map.Entry<String, Module> m : namedModules().entrySet()) {
            if (!(m.getValue() instanceof QuantizedLinear)) {
                continue;
            }
            QuantizedLinear linear = (QuantizedLinear) m.getValue();
            String weightName = m.getKey() + ".weight";
            Device device = placement.apply(weightName);
            Precision precision = device == null ? null : precisionByDevice.apply(device);
            if (precision == null) {
                throw new IllegalArgumentException("No precision for '" + weightName + "' on " + device);
            }
            if (!precision.isQuantized() && precision.dtype() != dtype) {
                throw new IllegalArgumentException("Device " + device + " asks for " + precision
                        + " but the model's floating-point dtype is " + dtype.torchName()
                        + ": one floating-point dtype per model (int8/int4 may differ by device)");
            }
            if (linear.weight().isMaterialized() && linear.precision() != precision) {
                linear.toMeta();
            }
            linear.planPrecision(precision, dtype);
            out.put(m.getKey(), linear);
        }
        return out;
    }

    /** A floating-point tensor of the expected shape from the source. */
    private static Tensor floatTensor(String name, Tensor src, long[] expected) {
        DType srcType = DType.of(src.scalar_type());
        if (!srcType.isFloatingPoint()) {
            throw new WeightLoadException(name, "Tensor '" + name + "' is " + srcType.torchName()
                    + ", a weight must be floating point");
        }
        long[] shape = Tensors.shape(src);
        if (!Arrays.equals(shape, expected)) {
            throw new WeightLoadException(name, "Tensor '" + name + "' has shape " + Arrays.toString(shape)
                    + ", the model expects " + Arrays.toString(expected));
        }
        return src;
    }

    private static void requireFloat(DType dtype) {
        if (dtype == null || !dtype.isFloatingPoint() || !dtype.hasScalarType()) {
            throw new IllegalArgumentException("Weights dtype must be a floating-point type, got " + dtype);
        }
    }

    /**
     * Writes the loaded model as one safetensors file that loads back without re-quantizing: quantized linear
     * weights in THUDM's layout ({@code weight} int8, {@code weight_scale}), every other tensor as held, and
     * metadata {@code quantization} naming the scheme ({@value #QUANTIZATION_SCHEME}) with
     * {@code quantization_bit} (4, 8, or {@code mixed}).
     *
     * <pre>{@code
     * model.loadWeights(checkpoint::load, name -> Device.CPU, DType.FLOAT16, d -> Precision.INT4);
     * model.saveQuantized(Path.of("chatglm3-6b-int4/model.safetensors"));
     * }</pre>
     */
    public void saveQuantized(Path file) {
        UseGuard guard = useGuard();
        guard.enter(); // reads every weight: not while another thread releases them
        try {
            writeQuantized(file);
        } finally {
            guard.exit();
        }
    }

    private void writeQuantized(Path file) {
        Map<String, Tensor> tensors = new LinkedHashMap<>();
        Set<String> bits = new java.util.TreeSet<>();
        try (PointerScope scope = new PointerScope()) {
            Set<Parameter> seen = Collections.newSetFromMap(new IdentityHashMap<>());
            for (Map.Entry<String, Parameter> e : stateDict().entrySet()) {
                Parameter p = e.getValue();
                if (!seen.add(p)) {
                    continue;
                }
                String name = e.getKey();
                int dot = name.lastIndexOf('.');
                Module owner = dot < 0 ? this : module(name.substring(0, dot));
                if (owner instanceof QuantizedLinear && ((QuantizedLinear) owner).isQuantized()) {
                    QuantizedLinear linear = (QuantizedLinear) owner;
                    if (p == linear.weight()) {
                        QuantizedWeight q = linear.quantizedWeight();
                        tensors.put(name, cpu(q.packed()));
                        tensors.put(name.substring(0, dot + 1) + QuantizedLinear.SCALE_NAME, cpu(q.scale()));
                        bits.add(Integer.toString(linear.precision().bits()));
                        continue;
                    }
                    if (p == linear.weightScale()) {
                        continue; // written beside its weight
                    }
                }
                tensors.put(name, cpu(p.data()));
            }
            List<SafetensorsWriter.Entry> entries = new ArrayList<>();
            for (Map.Entry<String, Tensor> t : tensors.entrySet()) {
                entries.add(SafetensorsWriter.Entry.of(t.getKey(), DType.of(t.getValue().scalar_type()),
                        Tensors.shape(t.getValue())));
            }
            Map<String, String> metadata = new LinkedHashMap<>();
            metadata.put("format", "pt");
            metadata.put("quantization", QUANTIZATION_SCHEME);
            metadata.put("quantization_bit", bits.isEmpty() ? "0" : bits.size() == 1 ? bits.iterator().next()
                    : "mixed");
            try (SafetensorsWriter writer = SafetensorsWriter.create(file, entries, metadata)) {
                for (Map.Entry<String, Tensor> t : tensors.entrySet()) {
                    writer.write(t.getKey(), t.getValue());
                }
            }
        }
        LOG.debug("Wrote {} tensors of {} to {}", tensors.size(), config, file);
    }

    /** The scheme named in the metadata of {@link #saveQuantized} files. */
    public static final String QUANTIZATION_SCHEME = "rowwise-symmetric";

    private static Tensor cpu(Tensor t) {
        return t.to(Tensors.toTorch(Device.CPU), t.scalar_type()).contiguous();
    }

    /**
     * The {@code quantization_bit} of an official {@code config.json} (THUDM's int4/int8 checkpoints), 0 when
     * absent.
     *
     * @throws ChatGLMConfigException when the file cannot be read or the value is not 0, 4 or 8
     */
    public static int quantizationBit(Path configJson) {
        JsonNode bit = readJson(configJson).get("quantization_bit");
        int value = bit == null || bit.isNull() ? 0 : bit.asInt(-1);
        if (value != 0 && value != 4 && value != 8) {
            throw new ChatGLMConfigException(configJson + ": quantization_bit must be 0, 4 or 8, got " + bit);
        }
        return value;
    }

    /**
     * The architecture of a quantized checkpoint's {@code config.json}: its {@code quantization_bit} is what the
     * weights are stored in, not part of the architecture, so it is set aside here (see {@link #quantizationBit}).
     */
    public static ChatGLMConfig configOfQuantizedCheckpoint(Path configJson) {
        JsonNode node = readJson(configJson);
        if (node instanceof ObjectNode) {
            ((ObjectNode) node).remove("quantization_bit");
        }
        return ChatGLMConfig.fromJsonString(node.toString());
    }

    private static JsonNode readJson(Path file) {
        try {
            return new ObjectMapper().readTree(file.toFile());
        } catch (IOException e) {
            throw new ChatGLMConfigException(file + ": cannot read the config: " + e.getMessage());
        }
    }

    /** A cache for {@code batch} sequences of up to {@code capacity} positions, on the layers' devices. */
    public KvCache newCache(int batch, long capacity) {
        KvCache cache = new KvCache(layerDevices(), batch, capacity, config.kvHeads(), config.headDim(), computeDtype);
        PipelineLink l = link;
        if (l != null) {
            // The other stages keep this session's caches of their blocks: closing this one frees them.
            long session = cache.id();
            cache.onClose(() -> l.free(session));
        }
        synchronized (liveCaches) {
            liveCaches.add(cache);
        }
        return cache;
    }

    /**
     * This model's memory per device: weights as counted when loading ended (offloaded weights on {@code disk}:
     * use {@link #memoryReport(DispatchedModel)} for a dispatched model, which knows the ones kept in CPU memory),
     * the KV cache of every live session ({@link #newCache} caches not yet closed or collected; a closed cache
     * leaves the report), the estimated workspace of one decode step per live session, and the process's (and
     * with a CUDA device the CUDA allocator's) figures read now. Safe to call from any thread while others
     * generate: it reads only bookkeeping kept on the Java side, never a tensor.
     *
     * <pre>{@code
     * System.out.println(model.memoryReport());
     * }</pre>
     */
    public ChatGLMMemoryReport memoryReport() {
        return memoryReport(MemoryReport.of(weightBytes));
    }

    /**
     * {@link #memoryReport()} with the weights as {@code dispatched} placed them (this model under its device map):
     * weights offloaded to CPU memory on the {@code cpu} row, the offload folder's on {@code disk}.
     *
     * @throws IllegalArgumentException when {@code dispatched} holds another model
     */
    public ChatGLMMemoryReport memoryReport(DispatchedModel<?> dispatched) {
        if (dispatched.model() != this) {
            throw new IllegalArgumentException("The dispatched model holds another model than this one");
        }
        return memoryReport(dispatched.memoryReport());
    }

    private ChatGLMMemoryReport memoryReport(MemoryReport weights) {
        List<KvCache> caches;
        synchronized (liveCaches) {
            caches = new ArrayList<>(liveCaches);
        }
        caches.sort(java.util.Comparator.comparingLong(KvCache::id));
        List<ChatGLMMemoryReport.Session> sessions = new ArrayList<>();
        Map<Device, Long> workspace = new LinkedHashMap<>();
        for (KvCache c : caches) {
            Map<Device, Long> kv = c.allocatedBytesByDevice();
            if (c.isClosed() || kv.isEmpty()) {
                continue;
            }
            sessions.add(new ChatGLMMemoryReport.Session(c.id(), c.batchSize(), c.length(), c.capacity(), kv));
            Device[] devices = c.layerDevices();
            Map<Device, Integer> layersOn = new LinkedHashMap<>();
            Device last = null;
            for (Device d : devices) {
                if (d != null) { // held by another stage
                    layersOn.merge(d, 1, Integer::sum);
                    last = d;
                }
            }
            // The logits are made once per step, after the last layer.
            long logits = StepWorkspace.bytes(config, computeDtype, c.batchSize(), 1, c.capacity(), 0);
            layersOn.forEach((d, n) -> workspace.merge(d,
                    StepWorkspace.bytes(config, computeDtype, c.batchSize(), 1, c.capacity(), n) - logits,
                    Long::sum));
            if (last != null && stage().head()) {
                workspace.merge(last, logits, Long::sum);
            }
        }
        return ChatGLMMemoryReport.of(weights, sessions, workspace);
    }

    /** Rows per chunk forced by a test (0: sized by {@link StepWorkspace#CHUNK_BYTES}). */
    private volatile int forcedChunkRows;

    /** Makes every step run in chunks of at most {@code rows} rows (0: by the budget); for tests of chunking. */
    void forceChunkRows(int rows) {
        if (rows < 0) {
            throw new IllegalArgumentException("rows must be >= 0, got " + rows);
        }
        this.forcedChunkRows = rows;
    }

    /**
     * Query rows per attention chunk and positions per output chunk for a step of {@code len} new positions over
     * {@code keyLen} keys: as many as keep a chunk's temporaries within {@link StepWorkspace#CHUNK_BYTES}.
     */
    final long[] chunkRows(long batch, long len, long keyLen) {
        int forced = forcedChunkRows;
        if (forced > 0) {
            return new long[] {Math.min(forced, len), Math.min(forced, len)};
        }
        return new long[] {
            PromptChunks.rows(StepWorkspace.CHUNK_BYTES,
                    StepWorkspace.attentionRowBytes(config, computeDtype, batch, keyLen), len),
            PromptChunks.rows(StepWorkspace.CHUNK_BYTES, StepWorkspace.positionRowBytes(config, computeDtype, batch),
                    len)};
    }

    /**
     * Runs the model. Returns float32 logits {@code [batch, L, vocab]} ({@code [batch, 1, vocab]} with
     * {@link ForwardInput#lastLogitOnly()}); with a cache, the new positions are appended to it.
     *
     * @throws IllegalArgumentException for token ids outside the vocabulary or inconsistent inputs
     * @throws ModelClosedException when the model is closed or its weights are being released
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
        UseGuard guard = useGuard();
        guard.enter(); // the weights stay alive until this forward ends, whoever closes the model meanwhile
        try {
            if (input.cache() != null) {
                input.cache().checkRoom(input.batchSize(), input.length());
            }
            return inOwnScope(() -> firstStage(input));
        } finally {
            guard.exit();
        }
    }

    /**
     * The one forward road: resolves the step's positions and mask, embeds, runs the blocks this stage holds, hands
     * the rest to the link when other stages hold it, and runs the head when held here.
     */
    private Tensor firstStage(ForwardInput in) {
        StageSpan s = stage();
        if (!s.embedding()) {
            throw new IllegalStateException("This stage does not hold the embedding: it runs steps handed to it "
                    + "(forwardStage), not token ids");
        }
        KvCache cache = in.cache();
        long past = cache == null ? 0 : cache.length();
        Tensor[] inputs = stepInputs(in, past);
        PipelineStep step = new PipelineStep(cache == null ? 0 : cache.id(), in.batchSize(), in.length(), past,
                cache == null ? 0 : cache.capacity(), in.lastLogitOnly(), 0, inputs[0], inputs[1]);
        Tensor hidden = embed(in.inputIds());
        int n = config.numLayers();
        hidden = runBlocks(step, hidden, 0, s.endLayer(), cache);
        Tensor out;
        if (s.endLayer() == n && s.head()) {
            out = head(hidden, in.lastLogitOnly());
        } else {
            PipelineLink l = link;
            if (l == null) {
                throw new IllegalStateException("Blocks [" + s.endLayer() + ", " + n + ") are held by other stages "
                        + "and this model has no pipeline link");
            }
            Tensor back = l.forward(step.from(s.endLayer()), hidden);
            out = s.head() ? head(back, in.lastLogitOnly()) : back;
        }
        if (cache != null) {
            cache.advance(in.length());
        }
        return out;
    }

    /**
     * Runs the part of a step this stage holds on the hidden state another stage handed over: its blocks, then the
     * head when it holds it. Returns the hidden state after its last block ({@code [L, B, hidden]}), or float32
     * logits ({@code [B, L or 1, vocab]}) when it holds the head. With a cache (this stage's cache of the step's
     * session), the new positions are appended to it. The pipeline worker's road; the result is the caller's.
     *
     * <pre>{@code
     * worker.setStage(new StageSpan(false, 14, 28, true), null);
     * try (Tensor logits = worker.forwardStage(step, hidden, cache)) { ... }
     * }</pre>
     *
     * @throws IllegalArgumentException when the step does not start at this stage's first block, or does not fit
     *     its cache
     * @throws ModelClosedException when the model is closed or its weights are being released
     */
    public final Tensor forwardStage(PipelineStep step, Tensor hidden, KvCache cache) {
        StageSpan s = stage();
        if (step.fromLayer() != s.firstLayer()) {
            throw new IllegalArgumentException("The step starts at block " + step.fromLayer() + ", this stage holds ["
                    + s.firstLayer() + ", " + s.endLayer() + ")");
        }
        if (s.head() && s.endLayer() != config.numLayers()) {
            throw new IllegalStateException("A stage that holds the head and not the last block cannot run a step");
        }
        requireShape("The handed-over hidden state", hidden, step.length(), step.batch(), config.hiddenSize());
        UseGuard guard = useGuard();
        guard.enter();
        try {
            if (cache != null) {
                cache.checkRoom(step.batch(), step.length());
                if (cache.length() != step.past()) {
                    throw new IllegalArgumentException("The step starts at position " + step.past()
                            + ", this stage's cache of session " + step.session() + " holds " + cache.length());
                }
            }
            return inOwnScope(() -> {
                // A handed-over hidden state arrives in host memory: onto this stage's device first (a no-op on the
                // CPU: x.to() of the same device and dtype is x itself).
                Tensor onStage = hidden.to(Tensors.toTorch(stageDevice()), hidden.scalar_type());
                Tensor out = runBlocks(step, onStage, s.firstLayer(), s.endLayer(), cache);
                if (s.head()) {
                    out = head(out, step.lastLogitOnly());
                }
                if (cache != null) {
                    cache.advance(step.length());
                }
                return out;
            });
        } finally {
            guard.exit();
        }
    }

    /**
     * Runs {@code step} in a pointer scope of its own, so that every native temporary it makes is freed when it
     * returns, and hands its result to the caller's scope when there is one (which then holds the only
     * reference). The blocks run this way one by one: a decode step then holds one block's temporaries at a time
     * instead of all of them until the forward returns (at 8192 positions of ChatGLM3-6B, about 13 MiB instead of
     * 355 MiB).
     */
    static Tensor inOwnScope(java.util.function.Supplier<Tensor> step) {
        Tensor result;
        try (PointerScope scope = new PointerScope()) {
            result = step.get();
            result.retainReference();
        }
        PointerScope outer = PointerScope.getInnerScope();
        if (outer != null) {
            outer.attach(result);
            result.releaseReference();
        }
        return result;
    }

    /** Checks that a caller-given tensor has the expected shape. */
    static void requireShape(String what, Tensor t, long... expected) {
        long[] actual = Tensors.shape(t);
        if (!Arrays.equals(actual, expected)) {
            throw new IllegalArgumentException(what + " must have shape " + Arrays.toString(expected) + ", got "
                    + Arrays.toString(actual));
        }
    }

    /**
     * What the generation loop feeds the model at each step (positions, masks: each version builds them its own
     * way, as THUDM's {@code prepare_inputs_for_generation} does); owns the tensors it builds. Made by
     * {@link #startDecoding} for {@link io.github.bigmodel.chatglm.generation.Generator}.
     */
    public abstract static class Decoding implements AutoCloseable {

        /** The first call: the whole prompt. */
        public abstract ForwardInput first(KvCache cache);

        /** One more token per row, after {@code tokens} were chosen. */
        public abstract ForwardInput next(long[] tokens, KvCache cache);

        @Override
        public abstract void close();

        /**
         * A tensor this decoding owns until it closes it: kept out of the caller's pointer scope, because
         * {@link #close()} may run on another thread (a session closed from outside) while the stepping thread closes
         * its own scope, and two threads releasing one tensor at once free it twice (a heap corruption seen as
         * {@code malloc_consolidate(): invalid chunk size}).
         */
        protected static Tensor owned(long[] values, long... shape) {
            try (PointerScope scope = new PointerScope()) {
                return Scopes.keep(Ops.longTensor(values, shape));
            }
        }
    }
}
