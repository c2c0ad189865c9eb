package io.github.bigmodel.pipeline.internal;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.chatglm.model.StageSpan;
import io.github.bigmodel.safetensors.Checkpoint;
import io.github.bigmodel.safetensors.TensorInfo;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.TreeMap;

/**
 * What a rank checks at join that it loads the same model as the coordinator: SHA-256 over the config (its JSON with
 * keys sorted), the stage's span, and for every checkpoint tensor the stage holds (sorted by name): name, dtype,
 * shape, shard file name, offset and length in it. Cheap (headers only, no tensor data); a rank with another
 * checkpoint, another layout of it or another split differs.
 */
public final class Fingerprint {

    private Fingerprint() {
    }

    public static String of(Path modelDir, ChatGLMLanguageModel model, StageSpan span) {
        try (Checkpoint checkpoint = Checkpoint.open(modelDir)) {
            MessageDigest sha = MessageDigest.getInstance("SHA-256");
            ObjectMapper json = new ObjectMapper().configure(SerializationFeature.ORDER_MAP_ENTRIES_BY_KEYS, true);
            Object config = json.readValue(modelDir.resolve("config.json").toFile(), TreeMap.class);
            sha.update(json.writeValueAsBytes(config));
            sha.update(span.toString().getBytes(StandardCharsets.UTF_8));
            TreeMap<String, TensorInfo> held = new TreeMap<>();
            for (TensorInfo t : checkpoint.tensors()) {
                if (model.holds(t.name(), span)) {
                    held.put(t.name(), t);
                }
            }
            for (TensorInfo t : held.values()) {
                String line = t.name() + "|" + t.dtype() + "|" + Arrays.toString(t.shape()) + "|"
                        + t.file().getFileName() + "|" + t.fileOffset() + "|" + t.byteLength() + "\n";
                sha.update(line.getBytes(StandardCharsets.UTF_8));
            }
            return HexFormat.of().formatHex(sha.digest());
        } catch (IOException e) {
            throw new UncheckedIOException("Cannot read " + modelDir + " for its fingerprint: " + e.getMessage(), e);
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }
}
