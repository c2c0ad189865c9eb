package io.github.bigmodel.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.github.bigmodel.chatglm.ChatGLMConfig;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Locale;

/**
 * The model's name as a user knows it (ChatGLM-6B, ChatGLM2, ChatGLM3) for printed plans. ChatGLM2 and ChatGLM3
 * share one config format and one modeling ({@link ChatGLMConfig.Version#CHATGLM2}), so the name comes from the
 * preset or, as {@code ChatGLM.load} decides the chat format, from the folder's {@code _name_or_path}: ChatGLM2
 * when it names chatglm2, ChatGLM3 otherwise.
 */
final class ModelNames {

    private ModelNames() {
    }

    static String ofPreset(String preset) {
        String key = preset.trim().toLowerCase(Locale.ROOT);
        key = key.startsWith("thudm/") ? key.substring("thudm/".length()) : key;
        return key.startsWith("chatglm3") ? "ChatGLM3 (" + key + ")"
                : key.startsWith("chatglm2") ? "ChatGLM2 (" + key + ")" : "ChatGLM-6B (" + key + ")";
    }

    /** For a config read from {@code configFile}. */
    static String ofConfig(ChatGLMConfig config, Path configFile) {
        if (config.version() == ChatGLMConfig.Version.CHATGLM_6B) {
            return "ChatGLM-6B";
        }
        try {
            JsonNode name = new ObjectMapper().readTree(Files.readAllBytes(configFile)).path("_name_or_path");
            String n = name.asText("").toLowerCase(Locale.ROOT);
            if (n.contains("chatglm2")) {
                return "ChatGLM2";
            }
        } catch (Exception e) {
            // The config was read already; a name is only a label.
        }
        return "ChatGLM3";
    }
}
