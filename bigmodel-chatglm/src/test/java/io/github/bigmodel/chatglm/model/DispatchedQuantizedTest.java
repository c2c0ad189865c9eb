package io.github.bigmodel.chatglm.model;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.quant.Precision;
import io.github.bigmodel.core.quant.QuantizedLinear;
import io.github.bigmodel.core.testing.ReferenceTree;
import io.github.bigmodel.dispatch.BigModel;
import io.github.bigmodel.dispatch.DispatchOptions;
import io.github.bigmodel.dispatch.DispatchedModel;
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
import org.junit.jupiter.api.io.TempDir;
import io.github.bigmodel.chatglm.ChatGLMConfig;
import io.github.bigmodel.chatglm.ReferenceModels;

/**
 * int8/int4 through BigModel: the reference models loaded with {@code cpuPrecision} and a device map that puts one
 * block on disk (quantized codes and scales written to the offload folder in THUDM's portable layout, converted on
 * the CPU by the hook, with and without prefetch) give the same logits, bit for bit, as
 * {@link ChatGLMLanguageModel#loadWeights} with that precision on the CPU. A folder written for one precision is not
 * reused for another, and is reused for the same one. The folder holds the codes (out x in bytes for int8, half that
 * for int4) and the scales, so a token reads 2x / 4x fewer weight bytes from disk than in half precision.
 */
// PointerScope blocks are used for what they release on close, not referenced by name.
@SuppressWarnings("try")
class DispatchedQuantizedTest {

    @TempDir
    static Path offloadRoot;

    /** Every block on the CPU except block 1, on disk; the rest on the CPU. */
    private static String map(Path folder) {
        return ReferenceModels.deviceMap(folder, i -> i == 1 ? "disk" : "cpu", "cpu", "cpu");
    }

    @TestFactory
    Stream<DynamicTest> blockOnDiskMatchesLoadWeightsBitForBit() {
        List<DynamicTest> tests = new ArrayList<>();
        for (String model : new String[] {"chatglm3-6b-tiny", "chatglm-6b-tiny"}) {
            Path folder = ReferenceTree.models().resolve(model);
            // With the folder sequence below, every precision runs with and without prefetch.
            tests.add(DynamicTest.dynamicTest(model + "/INT8/prefetch-1",
                    () -> compare(folder, Precision.INT8, 1, Files.createTempDirectory(offloadRoot, "q"))));
            tests.add(DynamicTest.dynamicTest(model + "/folder-int8-then-int4-then-int4", () -> {
                Path shared = Files.createTempDirectory(offloadRoot, "shared");
                compare(folder, Precision.INT8, 0, shared);
                compare(folder, Precision.INT4, 0, shared);
                long written = Files.getLastModifiedTime(shared.resolve("bigmodel-offload.json")).toMillis();
                Path dat = Files.list(shared).filter(f -> f.getFileName().toString().endsWith("weight_scale.dat"))
                        .findFirst().orElseThrow();
                long datTime = Files.getLastModifiedTime(dat).toMillis();
                compare(folder, Precision.INT4, 1, shared);
                assertThat(Files.getLastModifiedTime(dat).toMillis()).as("reused, not rewritten").isEqualTo(datTime);
                assertThat(Files.getLastModifiedTime(shared.resolve("bigmodel-offload.json")).toMillis())
                        .isEqualTo(written);
            }));
        }
        return tests.stream();
    }

    private static void compare(Path folder, Precision precision, int prefetch, Path offload) throws Exception {
        boolean v1 = folder.getFileName().toString().startsWith("chatglm-6b");
        JsonNode cases = new ObjectMapper().readTree(folder.resolve("expected.json").toFile()).get("cases");
        ChatGLMLanguageModel reference = QuantizedModelTest.load(folder, precision);
        ChatGLMLanguageModel model = ChatGLMLanguageModel.create(ChatGLMConfig.fromJson(folder.resolve("config.json")),
                reference.dtype());
        DispatchOptions options = DispatchOptions.builder().deviceMap(map(folder)).offloadFolder(offload)
                .prefetch(prefetch).cpuPrecision(precision).noSplitModuleClasses("GLMBlock").build();
        try (DispatchedModel<ChatGLMLanguageModel> d = BigModel.loadCheckpointAndDispatch(model,
                folder.resolve("model.safetensors"), options)) {
            assertThat(d.hfDeviceMap().devices()).contains(Device.DISK);
            String diskLinear = (v1 ? "transformer.layers.1.attention" : "transformer.encoder.layers.1.self_attention")
                    + ".dense";
            QuantizedLinear offloaded = (QuantizedLinear) model.module(diskLinear);
            assertThat(offloaded.precision()).isEqualTo(precision);
            // The folder holds codes, not half precision: what each token reads from disk for this layer is
            // out x in bytes (int8) or half that (int4), plus one scale per row.
            long codes = offloaded.outFeatures() * offloaded.inFeatures() / (precision == Precision.INT4 ? 2 : 1);
            long floatBytes = offloaded.outFeatures() * offloaded.inFeatures() * 2;
            assertThat(Files.size(offload.resolve(diskLinear + ".weight.dat"))).as(precision + " codes on disk")
                    .isEqualTo(codes).isLessThanOrEqualTo(floatBytes / (precision == Precision.INT4 ? 4 : 2));
            assertThat(Files.size(offload.resolve(diskLinear + ".weight_scale.dat")))
                    .isEqualTo(offloaded.outFeatures() * offloaded.weightScale().dtype().bits() / 8);
            assertThat(offloaded.weight().device()).as("between forwards").isEqualTo(Device.DISK);
            int checked = 0;
            for (JsonNode c : cases) {
                if (!c.get("kind").asText().equals("forward")) {
                    continue;
                }
                long[] ids = longs(c.get("input_ids"));
                try (PointerScope scope = new PointerScope()) {
                    Tensor want = reference.forward(ForwardInput.builder(new long[][] {ids}).build());
                    Tensor got = model.forward(ForwardInput.builder(new long[][] {ids}).build());
                    assertThat(torch.equal(got, want)).as(c.get("name").asText() + ": bit-identical logits").isTrue();
                }
                checked++;
            }
            assertThat(checked).isPositive();
            assertThat(offloaded.weight().device()).isEqualTo(Device.DISK);
        } finally {
            reference.toMeta();
        }
    }

    private static long[] longs(JsonNode array) {
        long[] out = new long[array.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = array.get(i).asLong();
        }
        return out;
    }
}
