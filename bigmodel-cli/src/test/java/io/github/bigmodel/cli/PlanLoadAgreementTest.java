package io.github.bigmodel.cli;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import io.github.bigmodel.chatglm.ChatGLMConfig;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.quant.Precision;
import io.github.bigmodel.core.testing.ReferenceTree;
import io.github.bigmodel.dispatch.BigModel;
import io.github.bigmodel.dispatch.DispatchOptions;
import io.github.bigmodel.dispatch.DispatchedModel;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestFactory;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code bigmodel plan} sizes exactly what loading then holds: for each reference model, each precision (fp32,
 * fp16, bf16, and int8/int4 as {@code --dtype} aliases and as {@code --precision} flags) and a budget that keeps
 * everything in CPU memory as well as one that sends blocks to disk, the plan's {@code device_map} is the loaded
 * model's map and its {@code device_bytes} are, device for device, the bytes the loaded model's weights take.
 * Regression: {@code plan --dtype int4} sized the embedding and output layer at half a byte per weight (2.91 GiB
 * for chatglm3-6b) while loading keeps them in float16 (THUDM's recipe, 3.65 GiB).
 */
class PlanLoadAgreementTest {

    /** A way to ask for a precision: the plan flags and the load options that mean the same. */
    private record Ask(String name, List<String> planFlags, DType dtype, Precision cpu) {
    }

    private static final List<Ask> ASKS = List.of(
            new Ask("fp32", List.of("--dtype", "float32"), DType.FLOAT32, null),
            new Ask("fp16", List.of("--dtype", "float16"), DType.FLOAT16, null),
            new Ask("bf16", List.of("--dtype", "bfloat16"), DType.BFLOAT16, null),
            new Ask("int8 (--dtype alias)", List.of("--dtype", "int8"), DType.FLOAT16, Precision.INT8),
            new Ask("int4 (--dtype alias)", List.of("--dtype", "int4"), DType.FLOAT16, Precision.INT4),
            new Ask("int8 (--precision, fp32)", List.of("--dtype", "float32", "--precision", "int8"), DType.FLOAT32,
                    Precision.INT8),
            new Ask("int4 (--cpu-precision, bf16)", List.of("--dtype", "bfloat16", "--cpu-precision", "int4"),
                    DType.BFLOAT16, Precision.INT4));

    @TestFactory
    Stream<DynamicTest> planBytesAreTheLoadedBytes(@TempDir Path tmp) {
        List<DynamicTest> tests = new ArrayList<>();
        for (String model : new String[] {"chatglm3-6b-tiny", "chatglm-6b-tiny"}) {
            Path dir = ReferenceTree.models().resolve(model);
            for (Ask ask : ASKS) {
                for (boolean tight : new boolean[] {false, true}) {
                    String name = model + " " + ask.name() + (tight ? " with blocks on disk" : " in memory");
                    tests.add(DynamicTest.dynamicTest(name, () -> check(dir, ask, tight,
                            tmp.resolve(name.replaceAll("[^A-Za-z0-9]+", "-")))));
                }
            }
        }
        return tests.stream();
    }

    private static void check(Path dir, Ask ask, boolean tight, Path offload) throws Exception {
        ChatGLMConfig config = ChatGLMConfig.fromJson(dir.resolve("config.json"));
        JsonNode planned = plan(dir, ask, 1L << 30);
        long budget = 1L << 30;
        if (tight) {
            // Most of what the model takes at this precision: the front stays in memory, the last blocks go to disk.
            budget = planned.get("device_bytes").get("cpu").asLong() * 4 / 5;
            planned = plan(dir, ask, budget);
        }

        DispatchOptions options = DispatchOptions.builder().strategy("sequential").maxMemory("cpu=" + budget)
                .dtype(ask.dtype()).cpuPrecision(ask.cpu()).noSplitModuleClasses("GLMBlock").offloadFolder(offload)
                .build();
        ChatGLMLanguageModel model = ChatGLMLanguageModel.create(config, ask.dtype());
        try (DispatchedModel<ChatGLMLanguageModel> loaded = BigModel.loadCheckpointAndDispatch(model, dir, options)) {
            Map<String, String> loadedMap = new LinkedHashMap<>();
            loaded.hfDeviceMap().inModuleOrder(model).asMap().forEach((k, d) -> loadedMap.put(k,
                    String.valueOf(d.toJsonValue())));
            Map<String, String> plannedMap = new LinkedHashMap<>();
            planned.get("device_map").fields().forEachRemaining(e -> plannedMap.put(e.getKey(),
                    e.getValue().asText()));
            assertThat(loadedMap).as("device map").isEqualTo(plannedMap);
            if (tight) {
                assertThat(loadedMap.values()).as("blocks in memory and on disk").contains("disk", "cpu");
            }
            Map<String, Long> loadedBytes = new LinkedHashMap<>();
            loaded.memoryReport().weightBytes().forEach((d, b) -> {
                if (b > 0) {
                    loadedBytes.put(String.valueOf(d.toJsonValue()), b);
                }
            });
            Map<String, Long> plannedBytes = new LinkedHashMap<>();
            for (Iterator<Map.Entry<String, JsonNode>> it = planned.get("device_bytes").fields(); it.hasNext(); ) {
                Map.Entry<String, JsonNode> e = it.next();
                assertThat(e.getValue().isIntegralNumber()).as("%s bytes are whole", e.getKey()).isTrue();
                plannedBytes.put(e.getKey(), e.getValue().asLong());
            }
            assertThat(loadedBytes).as("weight bytes per device").isEqualTo(plannedBytes);
        }
    }

    private static JsonNode plan(Path dir, Ask ask, long budget) throws Exception {
        List<String> args = new ArrayList<>(List.of("plan", "--model", dir.toString(), "--strategy", "sequential",
                "--max-memory", "cpu=" + budget, "--json"));
        args.addAll(ask.planFlags());
        CliTest.Run r = CliTest.run(args.toArray(String[]::new));
        assertThat(r.code()).as(r.err()).isZero();
        return r.json();
    }

    @Test
    void dtypeInt4WithAPrecisionFlagIsRefusedNamingPrecision() {
        CliTest.Run r = CliTest.run("plan", "--preset", "chatglm3-6b", "--dtype", "int4", "--gpu-precision", "int8");
        assertThat(r.code()).isNotZero();
        assertThat(r.err()).contains("--precision").contains("--dtype float16");
    }

    /** The figures docs/quantization.md quotes, from the preset's meta model (nothing loaded). */
    @Test
    void chatglm3Int4AndInt8FiguresOfTheDocs() throws Exception {
        Map<String, Long> figures = new LinkedHashMap<>();
        for (String dtype : new String[] {"int4", "int8", "float16"}) {
            CliTest.Run r = CliTest.run("plan", "--preset", "chatglm3-6b", "--dtype", dtype, "--max-memory",
                    "cpu=64GiB", "--json");
            assertThat(r.code()).as(r.err()).isZero();
            JsonNode bytes = r.json().get("device_bytes");
            assertThat(bytes.size()).as("all on the CPU").isEqualTo(1);
            figures.put(dtype, bytes.get("cpu").asLong());
        }
        // THUDM's recipe: every block linear quantized (codes plus one float16 scale per row), everything else
        // (embedding, output layer, norms, biases) in float16 as in the float16 plan.
        ChatGLMLanguageModel meta = ChatGLMLanguageModel.create(ChatGLMConfig.preset("chatglm3-6b"), DType.FLOAT16);
        long linearsFp16 = 0;
        long linearsInt8 = 0;
        long linearsInt4 = 0;
        for (io.github.bigmodel.core.Module m : meta.namedModules().values()) {
            if (m instanceof io.github.bigmodel.core.quant.QuantizedLinear) {
                io.github.bigmodel.core.quant.QuantizedLinear q = (io.github.bigmodel.core.quant.QuantizedLinear) m;
                linearsFp16 += q.outFeatures() * q.inFeatures() * 2;
                linearsInt8 += q.outFeatures() * (q.inFeatures() + 2);
                linearsInt4 += q.outFeatures() * (q.inFeatures() / 2 + 2);
            }
        }
        assertThat(figures.get("int8")).isEqualTo(figures.get("float16") - linearsFp16 + linearsInt8);
        assertThat(figures.get("int4")).isEqualTo(figures.get("float16") - linearsFp16 + linearsInt4);
        System.out.printf("chatglm3-6b weights: float16 %d, int8 %d, int4 %d bytes%n", figures.get("float16"),
                figures.get("int8"), figures.get("int4"));
    }
}
