package io.github.bigmodel.chatglm;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Path;
import java.util.HashSet;
import java.util.Set;
import java.util.function.IntFunction;

/**
 * Facts of a reference model folder that the dispatch and generation tests need, read from the folder itself
 * (config.json, expected.json) so the tests run on any tree of the reference layout.
 */
public final class ReferenceModels {

    private ReferenceModels() {
    }

    public static ChatGLMConfig config(Path folder) {
        return ChatGLMConfig.fromJson(folder.resolve("config.json"));
    }

    public static JsonNode expected(Path folder) {
        try {
            return new ObjectMapper().readTree(folder.resolve("expected.json").toFile());
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** The ids of expected.json's {@code special_tokens}. */
    public static Set<Long> specialIds(Path folder) {
        Set<Long> out = new HashSet<>();
        expected(folder).get("special_tokens").forEach(id -> out.add(id.asLong()));
        return out;
    }

    /**
     * A device map over every block of the model: the embedding on the CPU, block {@code i} on {@code block(i)},
     * the final norm on {@code norm}, the output layer on {@code head}.
     */
    public static String deviceMap(Path folder, IntFunction<String> block, String norm, String head) {
        ChatGLMConfig config = config(folder);
        boolean v1 = config.version() == ChatGLMConfig.Version.CHATGLM_6B;
        String blocks = v1 ? "transformer.layers" : "transformer.encoder.layers";
        StringBuilder map = new StringBuilder("{").append(v1 ? "\"transformer.word_embeddings\": \"cpu\""
                : "\"transformer.embedding\": \"cpu\", \"transformer.rotary_pos_emb\": \"cpu\"");
        for (int i = 0; i < config.numLayers(); i++) {
            map.append(", \"").append(blocks).append('.').append(i).append("\": \"").append(block.apply(i))
                    .append('"');
        }
        map.append(", \"").append(v1 ? "transformer.final_layernorm" : "transformer.encoder.final_layernorm")
                .append("\": \"").append(norm).append('"');
        map.append(", \"").append(v1 ? "lm_head" : "transformer.output_layer").append("\": \"").append(head)
                .append('"');
        return map.append('}').toString();
    }
}
