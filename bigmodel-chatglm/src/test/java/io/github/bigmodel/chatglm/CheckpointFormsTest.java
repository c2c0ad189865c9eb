package io.github.bigmodel.chatglm;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.testing.ReferenceTree;
import io.github.bigmodel.safetensors.Checkpoint;
import io.github.bigmodel.safetensors.SafetensorsFile;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.chatglm.model.ForwardInput;

/**
 * Each checkpoint form of a reference model (single safetensors file, safetensors shards, torch .bin shards) gives
 * the official logits, and bit-identical logits to each other.
 */
class CheckpointFormsTest {

    private static final List<String> FORMS = List.of("model.safetensors", "model.safetensors.index.json",
            "pytorch_model.bin.index.json");

    @TestFactory
    Stream<DynamicTest> everyFormGivesTheSameLogits() throws IOException {
        List<DynamicTest> tests = new ArrayList<>();
        try (Stream<Path> folders = Files.list(ReferenceTree.models())) {
            for (Path folder : folders.filter(Files::isDirectory).sorted().toList()) {
                for (String form : FORMS) {
                    if (Files.exists(folder.resolve(form))) {
                        tests.add(DynamicTest.dynamicTest(folder.getFileName() + "/" + form,
                                () -> check(folder, form)));
                    }
                }
            }
        }
        return tests.stream();
    }

    private static void check(Path folder, String form) throws IOException {
        JsonNode expectedJson = new ObjectMapper().readTree(folder.resolve("expected.json").toFile());
        JsonNode forward = null;
        for (JsonNode c : expectedJson.get("cases")) {
            if (c.get("kind").asText().equals("forward")) {
                forward = c;
                break;
            }
        }
        assertThat(forward).as("a forward case in " + folder).isNotNull();
        long[] ids = new long[forward.get("input_ids").size()];
        for (int i = 0; i < ids.length; i++) {
            ids[i] = forward.get("input_ids").get(i).asLong();
        }
        double tol = folder.getFileName().toString().startsWith("chatglm-6b") ? 2e-4 : 1e-4;
        ChatGLMConfig config = ChatGLMConfig.fromJson(folder.resolve("config.json"));
        try (PointerScope scope = new PointerScope();
             SafetensorsFile expected = SafetensorsFile.open(folder.resolve("expected.safetensors"))) {
            Tensor single = logits(config, folder.resolve("model.safetensors"), ids);
            Tensor fromForm = logits(config, folder.resolve(form), ids);
            assertThat(torch.equal(single, fromForm)).as("bit-identical to the single file").isTrue();
            Tensor want = expected.load(forward.get("tensors").get("logits").asText());
            double maxDiff = fromForm.sub(want).abs().max().item_double();
            assertThat(maxDiff).as("max |logit - official|").isLessThanOrEqualTo(tol);
        }
    }

    private static Tensor logits(ChatGLMConfig config, Path checkpoint, long[] ids) {
        ChatGLMLanguageModel model = ChatGLMLanguageModel.create(config, DType.FLOAT32);
        try (Checkpoint ckpt = Checkpoint.open(checkpoint)) {
            model.loadWeights(ckpt::load, Device.CPU, DType.FLOAT32);
        }
        return model.forward(ForwardInput.builder(new long[][] {ids}).build());
    }
}
