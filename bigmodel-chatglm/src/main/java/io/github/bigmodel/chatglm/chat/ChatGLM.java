package io.github.bigmodel.chatglm.chat;

import java.util.Map;
import io.github.bigmodel.dispatch.DispatchedModel;
import io.github.bigmodel.dispatch.DispatchOptions;
import io.github.bigmodel.dispatch.plan.DeviceMap;
import io.github.bigmodel.dispatch.BigModel;
import com.fasterxml.jackson.databind.JsonNode;
import io.github.bigmodel.chatglm.ChatGLMConfig;
import io.github.bigmodel.chatglm.ChatGLMFamily;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.chatglm.model.PipelineLink;
import io.github.bigmodel.chatglm.model.StageSpan;
import io.github.bigmodel.chatglm.model.ChatGLMMemoryReport;
import io.github.bigmodel.chatglm.model.ContextReservation;
import io.github.bigmodel.chatglm.generation.GenerationRequest;
import io.github.bigmodel.chatglm.generation.Generator;
import io.github.bigmodel.chatglm.generation.GenerationConfig;
import io.github.bigmodel.chatglm.tokenizer.ChatGLM3Tokenizer;
import io.github.bigmodel.chatglm.tokenizer.ChatTokenizer;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.ModelClosedException;
import io.github.bigmodel.safetensors.Checkpoint;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A ChatGLM model and its tokenizer, with THUDM's {@code chat()} and {@code stream_chat()}.
 *
 * <pre>{@code
 * // Python:
 * //   tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
 * //   model = AutoModel.from_pretrained(path, trust_remote_code=True).float()
 * //   response, history = model.chat(tokenizer, "你好", history=[])
 * //   response, history = model.chat(tokenizer, "晚上睡不着应该怎么办", history=history)
 * try (ChatGLM model = ChatGLM.load(Path.of("chatglm3-6b"))) {
 *     ChatResponse r = model.chat("你好", List.of());
 *     r = model.chat("晚上睡不着应该怎么办", r.history());
 *     System.out.println(r.text());
 * }
 * }</pre>
 *
 * <p>Every call builds the whole prompt from the history (as THUDM's {@code chat()} does) and generates with a KV
 * cache of its own, freed when the call (or its stream) ends; the weights are shared read-only, so one
 * {@code ChatGLM} can serve several conversations, also from several threads. Histories are lists of
 * {@link ChatMessage}: ChatGLM3 messages with roles, or for ChatGLM-6B / ChatGLM2 user/assistant pairs (one pair
 * per Python {@code (query, response)} tuple, see {@link #roundsOf}/{@link #historyOf}). The given history is never
 * modified; the response carries the new one.
 *
 * <p>Tools (ChatGLM3): start the history with {@link #toolSystemMessage(JsonNode)}; a reply that calls a tool comes
 * back as {@link ChatResponse#toolCall()} (parsed keyword arguments, never evaluated); run the tool and send its
 * result with {@code ChatOptions.builder().role("observation")}.
 *
 * <p>A prompt that leaves no room for a reply within the model's positions (or the requested {@code max_length})
 * fails with {@link PromptTooLongException} before anything runs; nothing is truncated silently.
 *
 * <p>Closing: {@link #close()} may be called from any thread, also while other threads chat. It waits for the
 * decoding steps under way (and, for a dispatched model, for its background reads) before it frees any weight.
 * Every turn started afterwards ({@link #chat}, {@link #streamChat}) fails with {@link ModelClosedException}, and
 * so does the next step of a {@link ChatStream} still open: its {@code hasNext()} throws it (unless the stream
 * itself was closed, which ends it quietly). Open streams must still be closed to free their KV caches.
 */
public final class ChatGLM implements AutoCloseable {

    private static final Logger LOG = LoggerFactory.getLogger(ChatGLM.class);
    /** The system prompt THUDM's demos put in front of the tool definitions. */
    public static final String TOOL_SYSTEM_PROMPT =
            "Answer the following questions as best as you can. You have access to the following tools:";

    private final ChatGLMLanguageModel model;
    private final ChatTokenizer tokenizer;
    private final PromptFormat format;
    private final Generator generator;
    private final boolean ownsWeights;
    private final DispatchedModel<ChatGLMLanguageModel> dispatched;
    private volatile boolean closed;

    private ChatGLM(ChatGLMLanguageModel model, ChatTokenizer tokenizer, boolean ownsWeights) {
        this(model, tokenizer, ownsWeights, null);
    }

    private ChatGLM(ChatGLMLanguageModel model, ChatTokenizer tokenizer, boolean ownsWeights,
            DispatchedModel<ChatGLMLanguageModel> dispatched) {
        this.dispatched = dispatched;
        if (model == null || tokenizer == null) {
            throw new IllegalArgumentException("model and tokenizer must not be null");
        }
        this.format = PromptFormat.of(tokenizer);
        boolean v1Model = model.config().version() == ChatGLMConfig.Version.CHATGLM_6B;
        if (v1Model != (format.format() == ChatFormat.CHATGLM_6B)) {
            throw new IllegalArgumentException("A " + format.format() + " tokenizer does not fit a "
                    + model.config().version() + " model");
        }
        if (tokenizer.vocabSize() > model.config().vocabSize()) {
            throw new IllegalArgumentException("The tokenizer has " + tokenizer.vocabSize()
                    + " ids but the model's vocabulary has only " + model.config().vocabSize());
        }
        this.model = model;
        this.tokenizer = tokenizer;
        this.generator = new Generator(model);
        this.ownsWeights = ownsWeights;
    }

    /**
     * A chat over a model whose weights are already in place (loaded by the caller, for example dispatched over
     * several devices). {@link #close()} leaves such weights alone.
     *
     * <pre>{@code
     * ChatGLM glm = ChatGLM.of(dispatchedModel, ChatGLM3Tokenizer.load(dir.resolve("tokenizer.model")));
     * }</pre>
     */
    public static ChatGLM of(ChatGLMLanguageModel model, ChatTokenizer tokenizer) {
        return new ChatGLM(model, tokenizer, false);
    }

    /** {@link #load(Path, DType, ChatFormat)} in float32 (the CPU recipe {@code .float()}), format detected. */
    public static ChatGLM load(Path modelDir) {
        return load(modelDir, DType.FLOAT32, null);
    }

    /** {@link #load(Path, DType, ChatFormat)} with the format detected. */
    public static ChatGLM load(Path modelDir, DType dtype) {
        return load(modelDir, dtype, null);
    }

    /**
     * Loads {@code config.json}, the tokenizer (as {@link ChatGLMFamily#tokenizer(Path)} finds it) and every weight
     * through {@link Checkpoint} onto the CPU in {@code dtype}. Weights go through dispatch with the one-entry map
     * {@code {"": "cpu"}}: tensors that need no conversion stay zero-copy views of the mapped checkpoint, and a
     * pre-quantized folder ({@code bigmodel convert --precision int8}) loads as stored.
     *
     * <pre>{@code
     * try (ChatGLM glm = ChatGLM.load(Path.of("chatglm3-6b"), DType.BFLOAT16, null)) { ... }
     * }</pre>
     *
     * @param format null to detect ({@link ChatGLMFamily#of(ChatGLMConfig)}); ChatGLM2 vs ChatGLM3 is the one
     *               choice the files cannot make (they share config and tokenizer files)
     */
    public static ChatGLM load(Path modelDir, DType dtype, ChatFormat format) {
        DType weightsDtype = dtype != null ? dtype : DType.FLOAT32;
        DispatchOptions options = DispatchOptions.builder().deviceMap(DeviceMap.of(Map.of("", Device.CPU)))
                .dtype(weightsDtype).offloadStateDict(true).prefetch(0).build();
        return load(modelDir, options, 0, 0, format);
    }

    /**
     * Loads a model folder under a device map, as accelerate's big-model inference does: the model is built on
     * meta, the map is planned (or given), each tensor goes from the mapped checkpoint straight to its device, and
     * what does not fit is offloaded to the CPU or to disk and brought in layer by layer during generation. GLMBlock
     * is never split unless the options name other classes.
     *
     * <pre>{@code
     * // Python (accelerate, the seed documents):
     * //   with init_empty_weights():
     * //       model = AutoModel.from_config(config, trust_remote_code=True)
     * //   device_map = infer_auto_device_map(model, max_memory={0: "10GiB", "cpu": "30GiB"},
     * //                                      no_split_module_classes=["GLMBlock"])
     * //   model = load_checkpoint_and_dispatch(model, path, device_map=device_map, offload_folder="offload")
     * //   response, history = model.chat(tokenizer, "你好", history=[])
     * try (ChatGLM glm = ChatGLM.load(Path.of("chatglm3-6b"), DispatchOptions.builder()
     *         .maxMemory("0=10GiB,cpu=30GiB")
     *         .offloadFolder(Path.of("offload"))
     *         .build())) {
     *     ChatResponse r = glm.chat("你好", List.of());
     *     System.out.println(glm.hfDeviceMap().toJson());
     * }
     * }</pre>
     *
     * <p>Precisions pass through: {@code .gpuPrecision(Precision.INT4)} or {@code .cpuPrecision(Precision.INT8)}
     * holds the block linears of the modules executing there as int8/int4 (quantized while loading, also when
     * offloaded); a float precision is the model's dtype.
     *
     * @param options device map or strategy, budgets, offload folder, dtype (default float32, or the float
     *                precision the options name), precisions, prefetch
     */
    public static ChatGLM load(Path modelDir, DispatchOptions options) {
        return load(modelDir, options, 0, 0);
    }

    /**
     * {@link #load(Path, DispatchOptions)} with a planned device map that leaves room, on each device, for the KV
     * cache of the blocks executing there at {@code context} positions for {@code batch} rows and for one decoding
     * step's workspace ({@link ContextReservation}); blocks that no longer fit are offloaded. A given device map is
     * used as is.
     *
     * <pre>{@code
     * try (ChatGLM glm = ChatGLM.load(Path.of("chatglm3-6b"), DispatchOptions.builder()
     *         .maxMemory("0=10GiB,cpu=30GiB").dtype(DType.FLOAT16).build(), 8192, 1)) {
     *     ...
     * }
     * }</pre>
     *
     * @param context positions to leave room for (prompt and reply); 0 together with batch 0 reserves nothing
     * @throws IllegalArgumentException when context or batch is not positive or the context exceeds the model's
     *     maximum positions
     */
    public static ChatGLM load(Path modelDir, DispatchOptions options, long context, long batch) {
        return load(modelDir, options, context, batch, null, null, null);
    }

    /**
     * {@link #load(Path, DispatchOptions, long, long)} for the first stage of a pipeline: the model holds only
     * {@code stage} (loaded as {@code options}' device map places it, the other stages' modules {@code remote}) and
     * hands the rest of every step to {@code link}. Chat, streaming and generation work as on a whole model.
     *
     * <pre>{@code
     * ChatGLM glm = ChatGLM.loadStage(dir, DispatchOptions.builder().deviceMap(hostMap.forHost("box-a")).build(),
     *         0, 0, new StageSpan(true, 0, 14, false), link);
     * }</pre>
     */
    public static ChatGLM loadStage(Path modelDir, DispatchOptions options, long context, long batch,
            StageSpan stage, PipelineLink link) {
        if (stage == null || !stage.embedding()) {
            throw new IllegalArgumentException("The chat's stage holds the embedding (it takes token ids), got "
                    + stage);
        }
        return load(modelDir, options, context, batch, null, stage, link);
    }

    private static ChatGLM load(Path modelDir, DispatchOptions options, long context, long batch,
            ChatFormat format) {
        return load(modelDir, options, context, batch, format, null, null);
    }

    private static ChatGLM load(Path modelDir, DispatchOptions options, long context, long batch,
            ChatFormat format, StageSpan stage, PipelineLink link) {
        ChatGLMFamily family = ChatGLMFamily.of(ChatGLMConfig.fromJson(modelDir.resolve("config.json")), format);
        ChatGLMConfig config = family.config();
        // The float precision a device asks for (gpuPrecision(FP16)) is the model's dtype when none is given.
        DType weightsDtype = options.plan().floatDtype() != null ? options.plan().floatDtype() : DType.FLOAT32;
        DispatchOptions.Builder builder = options.toBuilder().dtype(weightsDtype);
        if (context != 0 || batch != 0) {
            // The cache is held in the model's float dtype whatever the blocks' weight precision.
            builder.reservation(ContextReservation.of(config, context, batch, weightsDtype));
        }
        DispatchOptions effective = builder.build();
        ChatFormat chosen = family.member();
        ChatTokenizer tokenizer = family.tokenizer(modelDir);
        ChatGLMLanguageModel model = family.createModel(weightsDtype);
        if (stage != null) {
            model.setStage(stage, link);
        }
        DispatchedModel<ChatGLMLanguageModel> dispatched =
                BigModel.loadCheckpointAndDispatch(model, modelDir, effective);
        LOG.info("Loaded {} as {} ({}) with device map {}", modelDir, chosen, weightsDtype.torchName(),
                dispatched.hfDeviceMap().toJson());
        try {
            return new ChatGLM(model, tokenizer, true, dispatched);
        } catch (RuntimeException e) {
            dispatched.close();
            throw e;
        }
    }

    /**
     * Where each module of the model is, in accelerate's {@code hf_device_map} form; for a model loaded without a
     * device map, the whole model on the device of its weights.
     */
    public DeviceMap hfDeviceMap() {
        if (dispatched != null) {
            return dispatched.hfDeviceMap();
        }
        Device d = model.executionDevice();
        return DeviceMap.of(Map.of("", d == null ? Device.META : d));
    }

    /**
     * Memory per device: weights (as the device map placed them when loaded with one), the KV cache of each live
     * conversation (every running {@link #chat} call or open {@link ChatStream} holds one; it leaves the report when
     * the call ends or the stream is closed), the estimated workspace of their decode steps, and the process's and
     * (only when a CUDA device is present) the CUDA allocator's figures. Safe to call from any thread while others
     * generate.
     *
     * <pre>{@code
     * System.out.println(glm.memoryReport());
     * }</pre>
     */
    public ChatGLMMemoryReport memoryReport() {
        return dispatched != null ? model.memoryReport(dispatched) : model.memoryReport();
    }

    public ChatGLMLanguageModel model() {
        return model;
    }

    public ChatTokenizer tokenizer() {
        return tokenizer;
    }

    public ChatFormat format() {
        return format.format();
    }

    /** THUDM's system message for tools: {@link #TOOL_SYSTEM_PROMPT} with the tool definitions (ChatGLM3). */
    public static ChatMessage toolSystemMessage(JsonNode tools) {
        if (tools == null || !tools.isArray()) {
            throw new IllegalArgumentException("tools must be a JSON array of tool definitions");
        }
        return ChatMessage.system(TOOL_SYSTEM_PROMPT, tools);
    }

    /** ChatGLM-6B / ChatGLM2 history as Python's {@code [(query, response), ...]}. */
    public static List<ChatRound> roundsOf(List<ChatMessage> history) {
        return PromptFormat.rounds(history, ChatFormat.CHATGLM2);
    }

    /** Python's {@code [(query, response), ...]} as a message history. */
    public static List<ChatMessage> historyOf(List<ChatRound> rounds) {
        return PromptFormat.messages(rounds);
    }

    /** The ids generation starts from for this turn. */
    public int[] promptIds(String query, List<ChatMessage> history, String role) {
        return format.promptIds(requireQuery(query, role), requireHistory(history), role);
    }

    /** {@code model.chat(tokenizer, query, history)} with THUDM's defaults (sampling, top_p/temperature). */
    public ChatResponse chat(String query, List<ChatMessage> history) {
        return chat(query, history, ChatOptions.defaults());
    }

    /** One turn to completion. */
    public ChatResponse chat(String query, List<ChatMessage> history, ChatOptions options) {
        try (ChatStream stream = streamChat(query, history, options)) {
            return stream.drain(delta -> { });
        }
    }

    /** {@code model.stream_chat(tokenizer, query, history)} with THUDM's defaults. */
    public ChatStream streamChat(String query, List<ChatMessage> history) {
        return streamChat(query, history, ChatOptions.defaults());
    }

    /**
     * Starts one turn; the returned stream generates as its deltas are pulled and must be closed.
     *
     * @throws PromptTooLongException when the prompt leaves no room for a reply
     * @throws ModelClosedException when this chat (or its model) is closed
     */
    public ChatStream streamChat(String query, List<ChatMessage> history, ChatOptions options) {
        if (closed) {
            throw new ModelClosedException("This ChatGLM is closed: load the model again");
        }
        ChatOptions opts = options != null ? options : ChatOptions.defaults();
        List<ChatMessage> h = new ArrayList<>(requireHistory(history));
        int[] prompt = format.promptIds(requireQuery(query, opts.role()), h, opts.role());
        GenerationConfig g = opts.generation() != null ? opts.generation()
                : GenerationConfig.chatDefaults(model.config().version());
        int positions = model.config().maxPositions();
        int limit = positions;
        String what = "the model's " + positions + " positions";
        if (g.maxLength().isPresent() && g.maxLength().getAsInt() < limit) {
            limit = g.maxLength().getAsInt();
            what = "max_length";
        }
        if (prompt.length >= limit) {
            throw new PromptTooLongException(prompt.length, limit, what);
        }
        // max_new_tokens may ask for more than the positions left; the model cannot go past them.
        int budget = Math.min(g.newTokenBudget(prompt.length, limit - prompt.length), positions - prompt.length);
        long[] ids = new long[prompt.length];
        for (int i = 0; i < ids.length; i++) {
            ids[i] = prompt[i];
        }
        List<Long> stops = new ArrayList<>();
        for (int s : format.stopIds()) {
            stops.add((long) s);
        }
        GenerationRequest.Builder b = GenerationRequest.builder(new long[][] {ids}).maxNewTokens(budget)
                .eosTokenIds(stops);
        g.applyTo(b);
        opts.processors().forEach(b::processor);
        Generator.Session session = generator.start(b.build());
        return new ChatStream(session, format, query, opts.role(), h, prompt);
    }

    /** An empty query is refused except as a tool's observation (a tool may well return nothing). */
    private static String requireQuery(String query, String role) {
        if (query == null) {
            throw new IllegalArgumentException("query must not be null");
        }
        if (query.isEmpty() && !"observation".equals(role)) {
            throw new IllegalArgumentException("query must not be empty: give the " + (role == null ? "user" : role)
                    + " message's text");
        }
        return query;
    }

    private static List<ChatMessage> requireHistory(List<ChatMessage> history) {
        if (history == null) {
            throw new IllegalArgumentException("history must not be null: pass List.of() to start a conversation");
        }
        for (int i = 0; i < history.size(); i++) {
            if (history.get(i) == null) {
                throw new IllegalArgumentException("history[" + i + "] is null: every item must be a ChatMessage");
            }
        }
        return history;
    }

    /**
     * Ends this chat: no new turn starts. Releases the weights when {@link #load} loaded them, after the steps under
     * way on other threads have ended (see the class doc); a model given to {@link #of} stays the caller's.
     * Idempotent; safe from any thread except one inside this model's forward pass.
     */
    @Override
    public synchronized void close() {
        if (closed) {
            return;
        }
        closed = true;
        if (dispatched != null) {
            dispatched.close();
        } else if (ownsWeights) {
            model.useGuard().close(); // for good: this model's weights are not loaded again
            model.toMeta();
        }
    }

    /** Whether {@link #close()} was called. */
    public boolean isClosed() {
        return closed;
    }
}
