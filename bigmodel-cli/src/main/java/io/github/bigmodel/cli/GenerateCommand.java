package io.github.bigmodel.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.github.bigmodel.chatglm.ChatGLMConfig;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.chatglm.model.ForwardInput;
import io.github.bigmodel.chatglm.generation.GenerationRequest;
import io.github.bigmodel.chatglm.generation.GenerationResult;
import io.github.bigmodel.chatglm.generation.Generator;
import io.github.bigmodel.chatglm.generation.GenerationConfig;
import io.github.bigmodel.chatglm.ChatGLMFamily;
import io.github.bigmodel.chatglm.tokenizer.ChatGLM3Tokenizer;
import io.github.bigmodel.chatglm.tokenizer.ChatTokenizer;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.dispatch.BigModel;
import io.github.bigmodel.dispatch.plan.MemoryReservation;
import io.github.bigmodel.dispatch.DispatchedModel;
import io.github.bigmodel.safetensors.SafetensorsWriter;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import picocli.CommandLine.ArgGroup;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.ParameterException;
import picocli.CommandLine.Spec;

/**
 * {@code bigmodel generate}: a forward pass and generation from raw ids or a prompt, to check any checkpoint from
 * outside (logits can be dumped and compared with another implementation's).
 *
 * <pre>
 * bigmodel generate --model chatglm3-6b --ids 64790,64792,36474,54591 --max-new-tokens 0 --dump-logits logits.safetensors
 * bigmodel generate --model chatglm3-6b --prompt "你好" --greedy --max-new-tokens 32 --json
 * </pre>
 */
@Command(name = "generate", description = "Run a forward pass and generate from ids or a prompt.")
final class GenerateCommand implements Callable<Integer> {

    static final class Input {
        @Option(names = "--prompt", paramLabel = "TEXT",
                description = "Text, encoded with the model's tokenizer and its prefix tokens (no chat template).")
        String prompt;

        @Option(names = "--ids", paramLabel = "IDS", split = ",",
                description = "The complete input ids (nothing is added).")
        List<Long> ids;
    }

    @Option(names = "--model", paramLabel = "DIR", required = true, description = "A model folder.")
    Path model;

    @ArgGroup(exclusive = true, multiplicity = "1")
    Input input;

    @Option(names = "--max-new-tokens", paramLabel = "N", defaultValue = "32",
            description = "Tokens to generate (0: the forward pass only; default: ${DEFAULT-VALUE}).")
    int maxNewTokens;

    @Option(names = "--greedy", description = "Greedy decoding (the default unless a sampling option is given).")
    boolean greedy;

    @Option(names = "--temperature", paramLabel = "T", description = "Sample with this temperature.")
    Double temperature;

    @Option(names = "--top-p", paramLabel = "P", description = "Sample from the smallest set of tokens with mass P.")
    Double topP;

    @Option(names = "--top-k", paramLabel = "K", description = "Sample from the K most likely tokens.")
    Integer topK;

    @Option(names = "--repetition-penalty", paramLabel = "R", description = "Penalise tokens already present.")
    Double repetitionPenalty;

    @Option(names = "--seed", paramLabel = "S", description = "Seed for reproducible sampling.")
    Long seed;

    @Option(names = "--ignore-eos", description = "Generate exactly --max-new-tokens tokens, stopping on nothing.")
    boolean ignoreEos;

    @Option(names = "--dump-logits", paramLabel = "FILE",
            description = "Write the forward pass's logits over the input ids: a safetensors file with one float32 "
                    + "tensor 'logits' of shape [input_length, vocab].")
    Path dumpLogits;

    @Option(names = "--json", description = "Print {\"input_ids\", \"output_ids\", \"text\"}.")
    boolean json;

    @Mixin
    ModelOptions modelOptions;

    @Mixin
    ContextOptions contextOptions;

    @Spec
    CommandSpec spec;

    @Override
    public Integer call() throws Exception {
        boolean sampling = temperature != null || topP != null || topK != null || seed != null;
        if (greedy && sampling) {
            throw new ParameterException(spec.commandLine(), "--greedy cannot be combined with sampling options");
        }
        if (maxNewTokens < 0) {
            throw new ParameterException(spec.commandLine(), "--max-new-tokens must be >= 0");
        }
        ChatGLMFamily family = ChatGLMFamily.ofFolder(model);
        ChatGLMConfig config = family.config();
        // Ids need no tokenizer: a folder without one still generates from --ids.
        ChatTokenizer tokenizer = Files.exists(model.resolve(family.tokenizerFileName())) ? family.tokenizer(model)
                : null;
        long[] ids = input.ids != null ? input.ids.stream().mapToLong(Long::longValue).toArray() : encode(tokenizer);
        if (ids.length == 0) {
            throw new ParameterException(spec.commandLine(), "the input has no ids");
        }
        for (long id : ids) {
            if (id < 0 || id >= config.vocabSize()) {
                throw new ParameterException(spec.commandLine(), "id " + id + " is outside the vocabulary [0, "
                        + config.vocabSize() + ")");
            }
        }
        DType dtype = modelOptions.weightsDtype();
        ChatGLMLanguageModel lm = family.createModel(dtype);
        MemoryReservation reservation = contextOptions.reservation(spec.commandLine(), config, dtype);
        long[] newIds;
        DispatchedModel<ChatGLMLanguageModel> loaded;
        try (LoadProgress progress = LoadProgress.of(spec.commandLine().getErr(),
                ProgressBars.enabled(modelOptions.progress, json), model)) {
            loaded = BigModel.loadCheckpointAndDispatch(lm, model,
                    modelOptions.toDispatchOptions(progress).toBuilder().reservation(reservation).build());
        }
        try (DispatchedModel<ChatGLMLanguageModel> dispatched = loaded) {
            if (dumpLogits != null) {
                dump(lm, ids, config.vocabSize());
            }
            newIds = maxNewTokens == 0 ? new long[0] : generate(lm, tokenizer, ids, sampling);
        }
        String text = tokenizer == null ? null : tokenizer.decode(toInts(newIds));
        PrintWriter out = spec.commandLine().getOut();
        if (json) {
            ObjectMapper mapper = new ObjectMapper();
            ObjectNode root = mapper.createObjectNode();
            ArrayNode in = root.putArray("input_ids");
            for (long id : ids) {
                in.add(id);
            }
            ArrayNode outIds = root.putArray("output_ids");
            for (long id : newIds) {
                outIds.add(id);
            }
            if (text == null) {
                root.putNull("text");
            } else {
                root.put("text", text);
            }
            out.println(mapper.writeValueAsString(root));
        } else if (text != null) {
            out.println(text);
        } else {
            StringBuilder sb = new StringBuilder();
            for (long id : newIds) {
                sb.append(sb.length() == 0 ? "" : ",").append(id);
            }
            out.println(sb);
        }
        return 0;
    }

    private long[] generate(ChatGLMLanguageModel lm, ChatTokenizer tokenizer, long[] ids, boolean sampling) {
        GenerationConfig.Builder g = GenerationConfig.builder().doSample(sampling).ignoreEos(ignoreEos);
        if (temperature != null) {
            g.temperature(temperature);
        }
        if (topP != null) {
            g.topP(topP);
        }
        if (topK != null) {
            g.topK(topK);
        }
        if (repetitionPenalty != null) {
            g.repetitionPenalty(repetitionPenalty);
        }
        if (seed != null) {
            g.seed(seed);
        }
        GenerationRequest.Builder request = g.build().applyTo(GenerationRequest.builder(new long[][] {ids}))
                .maxNewTokens(maxNewTokens);
        if (tokenizer != null && !ignoreEos) {
            List<Long> stops = new ArrayList<>();
            int[] stopIds = tokenizer instanceof ChatGLM3Tokenizer
                    ? ((ChatGLM3Tokenizer) tokenizer).stopTokenIds() : new int[] {tokenizer.eosTokenId()};
            for (int id : stopIds) {
                stops.add((long) id);
            }
            request.eosTokenIds(stops);
        }
        try (PointerScope scope = new PointerScope()) {
            GenerationResult r = new Generator(lm).generate(request.build());
            return r.newIds()[0];
        }
    }

    private void dump(ChatGLMLanguageModel lm, long[] ids, int vocab) {
        try (PointerScope scope = new PointerScope()) {
            Tensor logits = lm.forward(ForwardInput.builder(new long[][] {ids}).build()).squeeze(0).contiguous();
            try (SafetensorsWriter w = SafetensorsWriter.create(dumpLogits,
                    List.of(SafetensorsWriter.Entry.of("logits", DType.FLOAT32, ids.length, logits.size(1))),
                    Map.of("format", "pt"))) {
                w.write("logits", logits);
            }
        }
    }

    private long[] encode(ChatTokenizer tokenizer) {
        if (tokenizer == null) {
            throw new ParameterException(spec.commandLine(), model + " has no tokenizer: give --ids instead of --prompt");
        }
        int[] enc = tokenizer.encode(input.prompt, true);
        long[] out = new long[enc.length];
        for (int i = 0; i < enc.length; i++) {
            out[i] = enc[i];
        }
        return out;
    }

    private static int[] toInts(long[] ids) {
        int[] out = new int[ids.length];
        for (int i = 0; i < ids.length; i++) {
            out[i] = (int) ids[i];
        }
        return out;
    }
}
