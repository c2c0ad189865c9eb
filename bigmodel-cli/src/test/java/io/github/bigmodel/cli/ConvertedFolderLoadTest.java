package io.github.bigmodel.cli;

import static org.assertj.core.api.Assertions.assertThat;

import io.github.bigmodel.core.testing.ReferenceTree;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A folder written by {@code bigmodel convert --precision int8|int4} loads as stored through the device-map path
 * ({@code generate --precision ...}), and greedy generation from it equals quantizing the original at load time,
 * also with blocks offloaded to disk.
 */
class ConvertedFolderLoadTest {

    @Test
    void convertedQuantizedFoldersGenerateLikeLoadTimeQuantization(@TempDir Path dir) throws Exception {
        Path source = ReferenceTree.models().resolve("chatglm3-6b-tiny");
        String ids = CliTest.firstForwardIds(source);
        // A CPU budget of a fifth of the checkpoint, so the sequential map puts blocks on disk.
        String budget = "cpu=" + java.nio.file.Files.size(source.resolve("model.safetensors")) / 5 / 1000 + "KB";
        for (String p : new String[] {"int8", "int4"}) {
            Path out = dir.resolve(p);
            CliTest.Run convert = CliTest.run("convert", source.toString(), out.toString(), "--precision", p);
            assertThat(convert.code()).as(convert.err()).isZero();
            CliTest.Run fromOriginal = CliTest.run("generate", "--model", source.toString(), "--ids", ids,
                    "--greedy", "--ignore-eos", "--max-new-tokens", "8", "--precision", p, "--json");
            assertThat(fromOriginal.code()).as(fromOriginal.err()).isZero();
            CliTest.Run fromConverted = CliTest.run("generate", "--model", out.toString(), "--ids", ids,
                    "--greedy", "--ignore-eos", "--max-new-tokens", "8", "--precision", p, "--json");
            assertThat(fromConverted.code()).as(fromConverted.err()).isZero();
            assertThat(fromConverted.json().get("output_ids")).as(p)
                    .isEqualTo(fromOriginal.json().get("output_ids"));
            CliTest.Run offloaded = CliTest.run("generate", "--model", out.toString(), "--ids", ids,
                    "--greedy", "--ignore-eos", "--max-new-tokens", "8", "--precision", p, "--json",
                    "--device-map", "sequential", "--max-memory", budget,
                    "--offload-folder", dir.resolve(p + "-offload").toString());
            assertThat(offloaded.code()).as(offloaded.err()).isZero();
            assertThat(offloaded.json().get("output_ids")).as(p + " offloaded")
                    .isEqualTo(fromOriginal.json().get("output_ids"));
        }
    }
}
