package io.github.bigmodel.cli;

import static org.assertj.core.api.Assertions.assertThat;

import io.github.bigmodel.chatglm.ChatGLMConfig;
import io.github.bigmodel.chatglm.TinyChatGLM3;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.chatglm.chat.ChatGLM;
import io.github.bigmodel.chatglm.chat.ChatResponse;
import io.github.bigmodel.chatglm.tokenizer.ChatGLM3Tokenizer;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.Parameter;
import io.github.bigmodel.core.quant.Precision;
import io.github.bigmodel.core.quant.QuantizedLinear;
import io.github.bigmodel.dispatch.BigModel;
import io.github.bigmodel.dispatch.plan.DeviceMap;
import io.github.bigmodel.dispatch.plan.DeviceMapPlanner;
import io.github.bigmodel.dispatch.DispatchOptions;
import io.github.bigmodel.dispatch.DispatchedModel;
import io.github.bigmodel.dispatch.plan.MaxMemory;
import io.github.bigmodel.dispatch.plan.PlanOptions;
import io.github.bigmodel.safetensors.Checkpoint;
import io.github.bigmodel.safetensors.SafetensorsWriter;
import java.io.ByteArrayOutputStream;
import java.io.InputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestFactory;
import org.junit.jupiter.api.io.TempDir;

/**
 * The Java snippets of docs/getting-started.md, compiled here against the real API and run on a small ChatGLM3
 * model; {@link #everyJavaBlockOfTheGuideIsASnippetHere} checks the guide shows exactly these lines.
 *
 * <p>A snippet is the code between {@code // snippet:NAME} and {@code // end:NAME}; in the guide it is the
 * {@code java} block after {@code <!-- snippet:NAME -->}, which may add declarations of the values the methods here
 * take as parameters (a model folder, a budget) and comments.
 */
class GettingStartedSnippetsTest {

    @TempDir
    static Path tmp;
    static Path modelDir;

    /**
     * A ChatGLM3-architecture model with the demo tokenizer whose every reply is one stop token: zero blocks and
     * all-ones embeddings make the final hidden state all ones, and only the eos row of the output layer is
     * non-zero. Chats then end at once and deterministically, so every flow runs in milliseconds.
     */
    @BeforeAll
    static void writeModel() throws Exception {
        modelDir = Files.createDirectories(tmp.resolve("chatglm3-mini"));
        Path tokenizerFile = modelDir.resolve("tokenizer.model");
        try (InputStream in = TinyChatGLM3.class.getResourceAsStream("tiny/tokenizer.model")) {
            Files.copy(in, tokenizerFile);
        }
        ChatGLM3Tokenizer tokenizer = ChatGLM3Tokenizer.load(tokenizerFile);
        String config = String.format(Locale.ROOT, "{\"model_type\": \"chatglm\", \"num_layers\": 2, "
                + "\"hidden_size\": 64, \"ffn_hidden_size\": 128, \"kv_channels\": 16, \"num_attention_heads\": 4, "
                + "\"multi_query_attention\": true, \"multi_query_group_num\": 2, \"padded_vocab_size\": %d, "
                + "\"seq_length\": 256, \"layernorm_epsilon\": 1e-05, \"rmsnorm\": true, \"add_bias_linear\": false, "
                + "\"add_qkv_bias\": true, \"apply_residual_connection_post_layernorm\": false, "
                + "\"post_layer_norm\": true, \"original_rope\": true, \"torch_dtype\": \"float32\", "
                + "\"eos_token_id\": 2, \"pad_token_id\": 0}", tokenizer.vocabSize());
        Files.writeString(modelDir.resolve("config.json"), config, StandardCharsets.UTF_8);
        ChatGLMLanguageModel meta = ChatGLMLanguageModel.create(ChatGLMConfig.fromJson(modelDir.resolve("config.json")),
                DType.FLOAT32);
        Map<String, Tensor> tensors = new LinkedHashMap<>();
        Set<Parameter> seen = Collections.newSetFromMap(new IdentityHashMap<>());
        try (PointerScope scope = new PointerScope()) {
            for (Map.Entry<String, Parameter> e : meta.stateDict().entrySet()) {
                if (!seen.add(e.getValue())) {
                    continue;
                }
                String name = e.getKey();
                Tensor t = name.endsWith("word_embeddings.weight") || name.endsWith("final_layernorm.weight")
                        ? torch.ones(e.getValue().shape()) : torch.zeros(e.getValue().shape());
                if (name.equals("transformer.output_layer.weight")) {
                    t.select(0, 2).fill_(new Scalar(1.0)); // only eos scores
                }
                tensors.put(name, t);
            }
            List<SafetensorsWriter.Entry> entries = new ArrayList<>();
            tensors.forEach((n, t) -> entries.add(SafetensorsWriter.Entry.of(n, DType.FLOAT32, io.github.bigmodel.core.Tensors.shape(t))));
            try (SafetensorsWriter w = SafetensorsWriter.create(modelDir.resolve("model.safetensors"), entries,
                    Map.of("format", "pt"))) {
                tensors.forEach(w::write);
            }
        }
    }

    // ---- the snippets ----

    static void accelerateStepByStep(Path modelDir, String maxMemory, Path offloadFolder) {
        // snippet:accelerate-step-by-step
        ChatGLMConfig config = ChatGLMConfig.fromJson(modelDir.resolve("config.json"));
        // init_empty_weights(): the model is born on meta, no memory is used whatever its size
        ChatGLMLanguageModel model = ChatGLMLanguageModel.create(config, DType.FLOAT32);
        // infer_auto_device_map(model, max_memory=..., no_split_module_classes=["GLMBlock"])
        DeviceMap deviceMap = DeviceMapPlanner.inferAutoDeviceMap(model, MaxMemory.parse(maxMemory),
                PlanOptions.builder().build());
        // load_checkpoint_and_dispatch(model, path, device_map=device_map, offload_folder="offload")
        try (DispatchedModel<ChatGLMLanguageModel> dispatched = BigModel.loadCheckpointAndDispatch(model, modelDir,
                DispatchOptions.builder().deviceMap(deviceMap).offloadFolder(offloadFolder).build());
             ChatGLM glm = ChatGLM.of(model, ChatGLM3Tokenizer.load(modelDir.resolve("tokenizer.model")))) {
            // model.chat(tokenizer, "你好", history=[])
            ChatResponse r = glm.chat("你好", List.of());
            System.out.println(r.text());
            System.out.println(dispatched.hfDeviceMap().toJson());   // model.hf_device_map
        }
        // end:accelerate-step-by-step
    }

    static void accelerateInOneCall(Path modelDir, String maxMemory, Path offloadFolder) {
        // snippet:accelerate-one-call
        try (ChatGLM glm = ChatGLM.load(modelDir, DispatchOptions.builder()
                .maxMemory(maxMemory)                  // plans with strategy "auto", GLMBlock never split
                .offloadFolder(offloadFolder)          // what fits nowhere is read from disk, layer by layer
                .build())) {
            ChatResponse r = glm.chat("你好", List.of());
            System.out.println(r.text());
            System.out.println(glm.hfDeviceMap().toJson());
        }
        // end:accelerate-one-call
    }

    static void handWrittenMap(Path modelDir, Device first, Device second, int split, Path offloadFolder) {
        // snippet:hand-written-map
        ChatGLMConfig config = ChatGLMConfig.fromJson(modelDir.resolve("config.json"));
        ChatGLMLanguageModel shape = ChatGLMLanguageModel.create(config, DType.FLOAT32);   // on meta, for the names
        int layers = config.numLayers();
        DeviceMap map = DeviceMap.builder(shape)
                .put("transformer.embedding", first)
                .put("transformer.rotary_pos_emb", first)
                .layers("transformer.encoder.layers", 1, split, first)          // 1-based, inclusive
                .layers("transformer.encoder.layers", split + 1, layers, second)
                .put("transformer.encoder.final_layernorm", second)
                .put("transformer.output_layer", second)
                .build();                                  // refuses unknown names, overlaps, gaps
        try (ChatGLM glm = ChatGLM.load(modelDir, DispatchOptions.builder()
                .deviceMap(map).offloadFolder(offloadFolder).build())) {
            System.out.println(glm.chat("你好", List.of()).text());
            System.out.println(glm.hfDeviceMap().toJson());
        }
        // end:hand-written-map
    }

    static void offloadWholeModel(Path modelDir, Path offloadFolder, Device executionDevice) {
        // snippet:cpu-and-disk-offload
        ChatGLMConfig config = ChatGLMConfig.fromJson(modelDir.resolve("config.json"));
        ChatGLMLanguageModel model = ChatGLMLanguageModel.create(config, DType.FLOAT32);
        try (Checkpoint checkpoint = Checkpoint.open(modelDir)) {
            model.loadWeights(checkpoint::load, Device.CPU, DType.FLOAT32);    // the whole model in CPU memory
        }
        // cpu_offload(model, execution_device): BigModel.cpuOffload(model, executionDevice)
        // disk_offload(model, offload_dir, execution_device):
        try (DispatchedModel<ChatGLMLanguageModel> offloaded = BigModel.diskOffload(model, offloadFolder,
                executionDevice);
             ChatGLM glm = ChatGLM.of(model, ChatGLM3Tokenizer.load(modelDir.resolve("tokenizer.model")))) {
            System.out.println(glm.chat("你好", List.of()).text());
            System.out.println(offloaded.hfDeviceMap().toJson());
        }
        // end:cpu-and-disk-offload
    }

    static ChatGLMLanguageModel quantize(Path modelDir) {
        // snippet:quantize
        ChatGLMConfig config = ChatGLMConfig.fromJson(modelDir.resolve("config.json"));
        ChatGLMLanguageModel model = ChatGLMLanguageModel.create(config, DType.BFLOAT16);
        try (Checkpoint checkpoint = Checkpoint.open(modelDir)) {
            // THUDM's model.quantize(4): each block's linear weights become int4 as they are read
            model.loadWeights(checkpoint::load, name -> Device.CPU, DType.BFLOAT16, device -> Precision.INT4);
        }
        try (ChatGLM glm = ChatGLM.of(model, ChatGLM3Tokenizer.load(modelDir.resolve("tokenizer.model")))) {
            System.out.println(glm.chat("你好", List.of()).text());
        }
        // end:quantize
        return model;
    }

    // ---- running them ----

    /** Runs a snippet with System.out captured (tests stay quiet) and returns what it printed. */
    private static String printed(Runnable snippet) {
        PrintStream original = System.out;
        ByteArrayOutputStream buffer = new ByteArrayOutputStream();
        System.setOut(new PrintStream(buffer, true, StandardCharsets.UTF_8));
        try {
            snippet.run();
        } finally {
            System.setOut(original);
        }
        return buffer.toString(StandardCharsets.UTF_8);
    }

    // ---- the guide's files: pom.xml and FirstChat.java ----

    private static final Pattern FILE = Pattern.compile("<!-- file:([A-Za-z.]+) -->\\s*\\n```(\\w+)\\n(.*?)```",
            Pattern.DOTALL);

    private static Map<String, String> guideFiles() throws Exception {
        String guide = Files.readString(projectRoot().resolve("docs/getting-started.md"), StandardCharsets.UTF_8);
        Map<String, String> files = new LinkedHashMap<>();
        Matcher m = FILE.matcher(guide);
        while (m.find()) {
            files.put(m.group(1), m.group(3));
        }
        assertThat(files).containsOnlyKeys("pom.xml", "FirstChat.java");
        return files;
    }

    /**
     * The guide's pom, read as Maven would: the reactor's coordinates and version, the slf4j binding at the version
     * the project builds with, a compiler plugin that knows {@code maven.compiler.release} (Maven 3.8's default,
     * 3.1, does not, and targets Java 5) set to 17, and exec:java's main class the guide's program.
     */
    @Test
    void guidePomBuildsTheFirstProgramWithMavensDefaults() throws Exception {
        org.w3c.dom.Document pom = xml(guideFiles().get("pom.xml"));
        org.w3c.dom.Document reactor = xml(Files.readString(projectRoot().resolve("pom.xml")));
        String version = text(reactor.getDocumentElement(), "version");
        String slf4j = text((org.w3c.dom.Element) reactor.getElementsByTagName("properties").item(0), "slf4j.version");
        assertThat(text((org.w3c.dom.Element) pom.getElementsByTagName("properties").item(0), "maven.compiler.release"))
                .isEqualTo("17");
        Map<String, String> deps = new LinkedHashMap<>();
        org.w3c.dom.NodeList list = pom.getElementsByTagName("dependency");
        for (int i = 0; i < list.getLength(); i++) {
            org.w3c.dom.Element d = (org.w3c.dom.Element) list.item(i);
            deps.put(text(d, "groupId") + ":" + text(d, "artifactId"), text(d, "version"));
        }
        assertThat(deps).containsExactly(Map.entry("io.github.bigmodel:bigmodel-chatglm", version),
                Map.entry("org.slf4j:slf4j-simple", slf4j));
        Map<String, String> plugins = new LinkedHashMap<>();
        org.w3c.dom.NodeList pl = pom.getElementsByTagName("plugin");
        for (int i = 0; i < pl.getLength(); i++) {
            org.w3c.dom.Element p = (org.w3c.dom.Element) pl.item(i);
            plugins.put(text(p, "artifactId"), text(p, "version"));
        }
        String[] compiler = plugins.get("maven-compiler-plugin").split("\\.");
        assertThat(Integer.parseInt(compiler[0]) * 100 + Integer.parseInt(compiler[1])).as("release needs 3.6+")
                .isGreaterThanOrEqualTo(306);
        assertThat(plugins).containsKey("exec-maven-plugin");
        assertThat(text(pom.getDocumentElement(), "mainClass")).isEqualTo("FirstChat");
    }

    /**
     * FirstChat.java as the guide shows it, compiled with javac (release 17) against bigmodel's classes and run in
     * its own JVM from an empty folder: it makes the tiny model and prints the three lines the guide explains.
     */
    @Test
    void guideFirstProgramCompilesAndChats() throws Exception {
        Path project = Files.createDirectories(tmp.resolve("first-chat"));
        Path source = Files.createDirectories(project.resolve("src/main/java")).resolve("FirstChat.java");
        Files.writeString(source, guideFiles().get("FirstChat.java"), StandardCharsets.UTF_8);
        Path classes = Files.createDirectories(project.resolve("target/classes"));
        javax.tools.JavaCompiler javac = javax.tools.ToolProvider.getSystemJavaCompiler();
        ByteArrayOutputStream diagnostics = new ByteArrayOutputStream();
        int compiled = javac.run(null, diagnostics, diagnostics, "--release", "17", "-encoding", "UTF-8",
                "-cp", ChildJvm.classpath(), "-d", classes.toString(), source.toString());
        assertThat(compiled).as(diagnostics.toString(StandardCharsets.UTF_8)).isZero();
        List<String> command = new ArrayList<>(List.of(ChildJvm.java()));
        command.addAll(ChildJvm.flags());
        command.addAll(List.of("-cp",
                classes + java.io.File.pathSeparator + ChildJvm.classpath(), "FirstChat"));
        Process p = new ProcessBuilder(command).directory(project.toFile())
                .redirectError(project.resolve("stderr.txt").toFile()).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertThat(p.waitFor(300, java.util.concurrent.TimeUnit.SECONDS)).isTrue();
        String err = Files.readString(project.resolve("stderr.txt"));
        assertThat(p.exitValue()).as(err).isZero();
        // Sampled replies may hold line breaks of their own: the page's three lines are the two replies' first
        // lines and the summary, last.
        List<String> lines = out.lines().toList();
        String summary = lines.get(lines.size() - 1);
        assertThat(lines.get(0)).startsWith("assistant: ");
        assertThat(lines.stream().filter(l -> l.startsWith("assistant: ")).count()).as(out).isEqualTo(2);
        assertThat(summary).matches("\\d+ tokens generated, (STOP|LENGTH); the history holds 4 messages");
        int tokens = Integer.parseInt(summary.substring(0, summary.indexOf(' ')));
        assertThat(tokens).isBetween(1, 32);
        // slf4j-simple's default level shows bigmodel's info lines on stderr, as the guide says; no warning.
        assertThat(err.lines().toList()).as(err).isNotEmpty()
                .allMatch(l -> l.startsWith("[main] INFO io.github.bigmodel."))
                .anyMatch(l -> l.contains("ChatGLM - Loaded chatglm3-tiny as CHATGLM3 (float32)"));
        assertThat(project.resolve("chatglm3-tiny/tokenizer.model")).exists();
    }

    private static org.w3c.dom.Document xml(String text) throws Exception {
        return javax.xml.parsers.DocumentBuilderFactory.newInstance().newDocumentBuilder()
                .parse(new org.xml.sax.InputSource(new java.io.StringReader(text)));
    }

    /** The text of {@code parent}'s first descendant named {@code tag}. */
    private static String text(org.w3c.dom.Element parent, String tag) {
        org.w3c.dom.NodeList nodes = parent.getElementsByTagName(tag);
        assertThat(nodes.getLength()).as("<" + tag + ">").isPositive();
        return nodes.item(0).getTextContent().strip();
    }

    @Test
    void accelerateFlowPutsWhatDoesNotFitOnDisk() {
        String out = printed(() -> accelerateStepByStep(modelDir, "cpu=2200KiB", tmp.resolve("offload-1")));
        assertThat(out).contains("\"cpu\"").contains("\"disk\"");
        String oneCall = printed(() -> accelerateInOneCall(modelDir, "cpu=2200KiB", tmp.resolve("offload-2")));
        assertThat(oneCall.lines().toList().get(1)).isEqualTo(out.lines().toList().get(1));
    }

    @Test
    void handWrittenMapWithLayerRanges() {
        String out = printed(() -> handWrittenMap(modelDir, Device.CPU, Device.DISK, 1, tmp.resolve("offload-3")));
        assertThat(out).contains("\"transformer.encoder.layers.0\":\"cpu\"")
                .contains("\"transformer.encoder.layers.1\":\"disk\"");
    }

    @Test
    void diskOffloadOfALoadedModel() {
        String out = printed(() -> offloadWholeModel(modelDir, tmp.resolve("offload-4"), Device.CPU));
        assertThat(out).contains("disk");
    }

    @Test
    void quantizeHoldsInt4BlockWeights() {
        ChatGLMLanguageModel model = null;
        try {
            ChatGLMLanguageModel[] holder = new ChatGLMLanguageModel[1];
            printed(() -> holder[0] = quantize(modelDir));
            model = holder[0];
            long int4 = model.namedModules().values().stream()
                    .filter(m -> m instanceof QuantizedLinear && ((QuantizedLinear) m).precision() == Precision.INT4)
                    .count();
            assertThat(int4).isEqualTo(4L * model.config().numLayers());
        } finally {
            if (model != null) {
                model.toMeta();
            }
        }
    }

    // ---- the guide shows these snippets, line for line ----

    private static final Pattern MARKER = Pattern.compile("<!-- snippet:([a-z0-9-]+) -->\\s*\\n```java\\n(.*?)```",
            Pattern.DOTALL);
    /** Lines the guide may add around a snippet: declarations of the snippet's inputs, and comments. */
    private static final Pattern GIVEN = Pattern.compile("^(\\w+(<[^>]*>)? \\w+ = .*;.*|//.*)$");

    @TestFactory
    List<DynamicTest> everyJavaBlockOfTheGuideIsASnippetHere() throws Exception {
        String guide = Files.readString(projectRoot().resolve("docs/getting-started.md"), StandardCharsets.UTF_8);
        String source = Files.readString(Path.of("src/test/java/io/github/bigmodel/cli/GettingStartedSnippetsTest.java"),
                StandardCharsets.UTF_8);
        long javaBlocks = guide.lines().filter(l -> l.strip().equals("```java")).count()
                - guideFiles().keySet().stream().filter(f -> f.endsWith(".java")).count();
        List<DynamicTest> tests = new ArrayList<>();
        tests.add(DynamicTest.dynamicTest("every java block is marked", () -> {
            Matcher all = MARKER.matcher(guide);
            int marked = 0;
            while (all.find()) {
                marked++;
            }
            assertThat(marked).isEqualTo(javaBlocks).isGreaterThanOrEqualTo(5);
        }));
        Matcher m = MARKER.matcher(guide);
        while (m.find()) {
            String name = m.group(1);
            List<String> block = dedent(m.group(2).lines().toList());
            tests.add(DynamicTest.dynamicTest(name, () -> {
                int start = source.indexOf("// snippet:" + name + "\n");
                int end = source.indexOf("// end:" + name + "\n");
                assertThat(start).as("snippet " + name + " in the test").isPositive();
                List<String> snippet = dedent(source.substring(source.indexOf('\n', start) + 1,
                        source.lastIndexOf('\n', end) + 1).lines().toList());
                int at = Collections.indexOfSubList(block, snippet);
                assertThat(at).as("the guide's block " + name + " shows the compiled lines").isGreaterThanOrEqualTo(0);
                List<String> extra = new ArrayList<>(block.subList(0, at));
                extra.addAll(block.subList(at + snippet.size(), block.size()));
                for (String line : extra) {
                    assertThat(line.isBlank() || GIVEN.matcher(line.strip()).matches())
                            .as("'" + line + "' in the guide's block " + name + " is neither compiled here nor an input")
                            .isTrue();
                }
            }));
        }
        return tests;
    }

    private static List<String> dedent(List<String> lines) {
        int indent = Integer.MAX_VALUE;
        for (String l : lines) {
            if (!l.isBlank()) {
                indent = Math.min(indent, l.length() - l.stripLeading().length());
            }
        }
        List<String> out = new ArrayList<>();
        for (String l : lines) {
            out.add(l.isBlank() ? "" : l.substring(indent).stripTrailing());
        }
        return out;
    }

    private static Path projectRoot() {
        Path dir = Path.of("").toAbsolutePath();
        while (dir != null && !Files.isDirectory(dir.resolve("docs"))) {
            dir = dir.getParent();
        }
        if (dir == null) {
            throw new AssertionError("no docs/ folder above " + Path.of("").toAbsolutePath());
        }
        return dir;
    }
}
