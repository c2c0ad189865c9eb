package io.github.bigmodel.pipeline;

import io.github.bigmodel.chatglm.ChatGLMConfig;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.chatglm.model.StageSpan;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.dispatch.plan.DeviceMap;
import io.github.bigmodel.safetensors.Checkpoint;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/** Models and host-qualified device maps for the pipeline tests. */
final class PipelineTestSupport {

    private PipelineTestSupport() {
    }

    static ChatGLMLanguageModel wholeModel(Path folder) throws IOException {
        ChatGLMLanguageModel m = ChatGLMLanguageModel.create(ChatGLMConfig.fromJson(folder.resolve("config.json")),
                DType.FLOAT32);
        try (Checkpoint st = Checkpoint.open(folder)) {
            m.loadWeights(st::load, Device.CPU, DType.FLOAT32);
        }
        return m;
    }

    /**
     * A device map placing each block (and the embedding, the head, every other module) on the host {@code h<r>}
     * whose span holds it, written to {@code dir}; entries are modules, in module order.
     */
    static Path hostMap(Path folder, List<StageSpan> spans, Path dir) throws IOException {
        ChatGLMLanguageModel meta = ChatGLMLanguageModel.create(
                ChatGLMConfig.fromJson(folder.resolve("config.json")), DType.FLOAT32);
        Map<String, String> entries = new LinkedHashMap<>();
        for (String name : meta.stateDict().keySet()) {
            String unit = unitOf(name);
            if (entries.containsKey(unit)) {
                continue;
            }
            int host = 0;
            for (int r = 0; r < spans.size(); r++) {
                if (meta.holds(name, spans.get(r))) {
                    host = r;
                    break;
                }
            }
            entries.put(unit, "h" + host + "/cpu");
        }
        StringBuilder json = new StringBuilder("{");
        entries.forEach((k, v) -> json.append(json.length() > 1 ? "," : "").append('"').append(k).append("\":\"")
                .append(v).append('"'));
        json.append('}');
        DeviceMap map = DeviceMap.fromJson(json.toString()).inModuleOrder(meta);
        Path file = Files.createTempFile(dir, "map", ".json");
        Files.writeString(file, map.toJson());
        return file;
    }

    /** A block ({@code ...layers.N}) or the module owning a tensor. */
    private static String unitOf(String name) {
        String[] parts = name.split("\\.");
        for (int i = 0; i + 1 < parts.length; i++) {
            if (parts[i].equals("layers") && parts[i + 1].chars().allMatch(Character::isDigit)) {
                return String.join(".", java.util.Arrays.copyOf(parts, i + 2));
            }
        }
        return name.substring(0, name.lastIndexOf('.'));
    }
}
