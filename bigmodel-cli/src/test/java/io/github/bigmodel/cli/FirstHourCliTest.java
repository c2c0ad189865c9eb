package io.github.bigmodel.cli;

import static org.assertj.core.api.Assertions.assertThat;

import io.github.bigmodel.chatglm.ChatGLMConfig;
import io.github.bigmodel.chatglm.chat.ChatGLM;
import io.github.bigmodel.chatglm.tokenizer.ChatGLM3Tokenizer;
import io.github.bigmodel.core.testing.ReferenceTree;
import io.github.bigmodel.dispatch.plan.DeviceInventory;
import java.io.BufferedReader;
import java.io.PrintWriter;
import java.io.StringReader;
import java.io.StringWriter;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.stream.Stream;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestFactory;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

/**
 * What a new user meets in the first hour on the command line (issue 17): every subcommand's help, errors in the
 * command line's words (flags, not builder methods), one line each, and an interactive chat that survives a bad
 * turn and stops a reply on Ctrl-C. The same cases are rows of docs/reliability.md's validation matrix.
 */
class FirstHourCliTest {

    @TempDir
    static Path tmp;
    static Path tiny;

    @BeforeAll
    static void makeTiny() {
        tiny = tmp.resolve("chatglm3-tiny");
        CliTest.Run r = CliTest.run("make-tiny", tiny.toString());
        assertThat(r.code()).as(r.err()).isZero();
        assertThat(r.out()).contains("wrote a tiny ChatGLM3 to " + tiny).contains("--max-new-tokens 32");
    }

    @TestFactory
    Stream<DynamicTest> everySubcommandAnswersHelpAndH() {
        List<DynamicTest> tests = new ArrayList<>();
        for (String name : new CommandLine(new BigModelCli()).getSubcommands().keySet()) {
            if (name.equals("help")) {
                continue;
            }
            for (String flag : new String[] {"--help", "-h"}) {
                tests.add(DynamicTest.dynamicTest(name + " " + flag, () -> {
                    CliTest.Run r = CliTest.run(name, flag);
                    assertThat(r.code()).as(r.err()).isZero();
                    assertThat(r.err()).isEmpty();
                    assertThat(r.out()).startsWith("Usage: bigmodel " + name).contains("-h, --help");
                }));
            }
        }
        assertThat(tests).hasSizeGreaterThanOrEqualTo(16);
        return tests.stream();
    }

    /** In a JVM of its own, as logging is set up once per process, before the first logger. */
    @Test
    void libraryWarningsReachTheUserAsOneWarningLine() throws Exception {
        assertThat(probe()).isEqualTo("warning: Offload folder /tmp/offload cannot be reused\n");
        assertThat(probe("--verbose")).isEqualTo("warning: Offload folder /tmp/offload cannot be reused\n"
                + "info: Loaded chatglm3-tiny\n");
    }

    private static String probe(String... args) throws Exception {
        List<String> command = new ArrayList<>(List.of(ChildJvm.java(), "-cp", ChildJvm.classpath(),
                LoggingProbe.class.getName()));
        command.addAll(List.of(args));
        Process p = new ProcessBuilder(command).redirectOutput(ProcessBuilder.Redirect.DISCARD).start();
        String err = new String(p.getErrorStream().readAllBytes(), StandardCharsets.UTF_8);
        assertThat(p.waitFor()).as(err).isZero();
        return err;
    }

    @Test
    void makeTinyWritesAModelWhoseVocabularyIsItsTokenizers() {
        ChatGLMConfig config = ChatGLMConfig.fromJson(tiny.resolve("config.json"));
        assertThat(config.vocabSize()).isEqualTo(ChatGLM3Tokenizer.load(tiny.resolve("tokenizer.model")).vocabSize());
        assertThat(tiny.resolve("model.safetensors.index.json")).exists();
        // The one thing its weights know: a reply opens with a newline (greedy, so always), so replies stream.
        ChatGLM3Tokenizer tok = ChatGLM3Tokenizer.load(tiny.resolve("tokenizer.model"));
        try (ChatGLM glm = ChatGLM.load(tiny)) {
            for (String query : new String[] {"hello", "你好", "tell me a story"}) {
                io.github.bigmodel.chatglm.chat.ChatResponse r = glm.chat(query, List.of(),
                        io.github.bigmodel.chatglm.chat.ChatOptions.builder().generation(
                                io.github.bigmodel.chatglm.generation.GenerationConfig.builder().maxNewTokens(3)
                                        .build()).build());
                assertThat(r.generatedIds()[0]).as(query).isEqualTo(tok.convertTokenToId("<0x0A>"));
            }
        }
        CliTest.Run again = CliTest.run("make-tiny", tiny.toString());
        assertThat(again.code()).isEqualTo(1);
        assertThat(again.err()).isEqualTo("error: " + tiny + " already holds a config.json: choose an empty folder"
                + System.lineSeparator());
    }

    @Test
    void decodingIdsOutsideTheVocabularyIsAOneLineError() {
        CliTest.Run r = CliTest.run("tokenize", "--model", tiny.toString(), "--decode", "999999,-1");
        assertThat(r.code()).isEqualTo(2);
        assertThat(r.out()).isEmpty();
        assertThat(r.err().lines().count()).isEqualTo(1);
        int vocab = ChatGLM3Tokenizer.load(tiny.resolve("tokenizer.model")).vocabSize();
        assertThat(r.err()).startsWith("error: --decode: ids 999999, -1 are outside the tokenizer's vocabulary [0, "
                + vocab + ")");
        CliTest.Run ok = CliTest.run("tokenize", "--model", tiny.toString(), "--decode", "30,31");
        assertThat(ok.code()).as(ok.err()).isZero();
    }

    @Test
    void readmePlanNamesChatGLM3AndNotesAMissingGpuInOneLine() {
        CliTest.Run r = CliTest.run("plan", "--preset", "chatglm3-6b", "--dtype", "float16", "--max-memory",
                "0=10GiB,cpu=30GiB");
        assertThat(r.code()).as(r.err()).isZero();
        assertThat(r.out()).startsWith("model: ChatGLM3-6B, 28 layers, float16");
        if (DeviceInventory.system().gpuCount() == 0) {
            assertThat(r.err()).isEqualTo("note: GPU 0 is not available here (no GPU); planning it as asked"
                    + System.lineSeparator());
        } else {
            assertThat(r.err()).isEmpty();
        }
        CliTest.Run folder = CliTest.run("plan", "--model", tiny.toString(), "--max-memory", "cpu=1GiB");
        assertThat(folder.out()).startsWith("model: ChatGLM3-6B, 8 layers");
    }

    @Test
    void aDeviceGivenTwoBudgetsIsRefused() {
        CliTest.Run r = CliTest.run("plan", "--preset", "chatglm3-6b", "--max-memory", "cpu=10GiB,cpu=1GiB");
        assertThat(r.code()).isEqualTo(1);
        assertThat(r.err()).isEqualTo("error: max_memory gives cpu more than one budget (cpu=10GiB, cpu=1GiB): "
                + "give each device once" + System.lineSeparator());
    }

    @Test
    void configWithoutHiddenSizeOrWithAHugeOneIsNamed(@TempDir Path dir) throws Exception {
        String full = Files.readString(ReferenceTree.models().resolve("chatglm3-6b-tiny/config.json"));
        Path missing = dir.resolve("missing.json");
        Files.writeString(missing, full.replaceAll("\"hidden_size\":\\s*\\d+,", ""), StandardCharsets.UTF_8);
        CliTest.Run r = CliTest.run("plan", "--config", missing.toString(), "--max-memory", "cpu=1GiB");
        assertThat(r.code()).isEqualTo(1);
        assertThat(r.err()).startsWith("error: " + missing + ": hidden_size is missing;").hasLineCount(1);
        Path huge = dir.resolve("huge.json");
        Files.writeString(huge, full.replaceAll("\"hidden_size\":\\s*\\d+", "\"hidden_size\": 1e12"),
                StandardCharsets.UTF_8);
        CliTest.Run h = CliTest.run("plan", "--config", huge.toString());
        assertThat(h.err()).startsWith("error: " + huge + ": hidden_size is too large: 1.0E12 (at most 2147483647)");
    }

    @Test
    void offloadFolderAndMaxLengthAreSpokenOfAsFlags(@TempDir Path dir) throws Exception {
        Path model = ReferenceTree.models().resolve("chatglm3-6b-tiny");
        Path map = dir.resolve("map.json");
        Files.writeString(map, "{\"transformer.embedding\": \"cpu\", \"transformer.rotary_pos_emb\": \"cpu\","
                + " \"transformer.encoder.layers.0\": \"cpu\", \"transformer.encoder.layers.1\": \"disk\","
                + " \"transformer.encoder.final_layernorm\": \"cpu\", \"transformer.output_layer\": \"cpu\"}");
        // bfloat16 from float32 safetensors: the disk layer must be rewritten, so a folder is needed.
        CliTest.Run r = CliTest.run("generate", "--model", model.toString(), "--ids", "1,2,3", "--device-map",
                map.toString(), "--dtype", "bfloat16");
        assertThat(r.code()).isEqualTo(1);
        assertThat(r.err()).contains("set --offload-folder. First: transformer.encoder.layers.1.")
                .doesNotContain("DispatchOptions").hasLineCount(1);
    }

    @Test
    void aMapThatMissesModulesListsModules(@TempDir Path dir) throws Exception {
        Path model = ReferenceTree.models().resolve("chatglm3-6b-tiny");
        Path map = dir.resolve("map.json");
        Files.writeString(map, "{\"transformer.embedding\": \"cpu\", \"transformer.rotary_pos_emb\": \"cpu\","
                + " \"transformer.encoder.layers.0\": \"cpu\"}");
        CliTest.Run r = CliTest.run("generate", "--model", model.toString(), "--ids", "1,2,3", "--device-map",
                map.toString());
        assertThat(r.code()).isEqualTo(1);
        assertThat(r.err()).contains("in the module(s): transformer.encoder.layers.1, "
                + "transformer.encoder.final_layernorm, transformer.output_layer").doesNotContain(".weight");
    }

    @Test
    void aFifoOrALinkToDevZeroIsNotARegularFile(@TempDir Path dir) throws Exception {
        Path zero = Files.createSymbolicLink(dir.resolve("zero.safetensors"), Path.of("/dev/zero"));
        CliTest.Run r = CliTest.run("inspect", zero.toString());
        assertThat(r.code()).isEqualTo(1);
        assertThat(r.err()).contains("not a regular file").hasLineCount(1);
        Path fifo = dir.resolve("pipe.safetensors");
        if (new ProcessBuilder("mkfifo", fifo.toString()).start().waitFor() == 0) {
            CliTest.Run f = CliTest.run("inspect", fifo.toString());
            assertThat(f.err()).contains("not a regular file").hasLineCount(1);
        }
    }

    @Test
    void anOverLongMessageIsOneErrorAndTheConversationGoesOn() throws Exception {
        ChatCommand chat = new ChatCommand();
        chat.maxNewTokens = 4;
        chat.maxLength = 64;
        StringWriter sink = new StringWriter();
        String script = "hello\n" + "long message ".repeat(40) + "\nagain\n";   // then end of input (Ctrl-D)
        try (ChatGLM glm = ChatGLM.load(tiny)) {
            int code = chat.converse(glm, new BufferedReader(new StringReader(script)), new PrintWriter(sink, true));
            assertThat(code).isZero();
        }
        String out = sink.toString();
        assertThat(out.lines().filter(l -> l.startsWith("Assistant: ")).count()).as(out).isEqualTo(2);
        // Without a terminal's echo the error follows the prompt on its line.
        List<String> errors = out.lines().filter(l -> l.startsWith("User: error: ")).toList();
        assertThat(errors).as(out).hasSize(1);
        assertThat(errors.get(0)).contains("limit of 64 tokens").contains("raise --max-length")
                .doesNotContain("max_length").endsWith("(the conversation goes on; 'clear' starts over)");
    }

    @Test
    void ctrlCStopsTheReplyAndCtrlCWhenIdleQuits() throws Exception {
        ChatCommand chat = new ChatCommand();
        chat.maxNewTokens = 1900;
        assertThat(chat.interrupt()).as("no reply yet: Ctrl-C quits").isFalse();
        // Ctrl-C pressed (on another thread, as the signal handler's) the moment the first delta is printed, so
        // the reply is surely still being written whatever the sampled tokens.
        StringWriter sink = new StringWriter();
        boolean[] stopped = new boolean[1];
        PrintWriter out = new PrintWriter(new java.io.Writer() {
            private boolean fired;

            @Override
            public void write(char[] buf, int off, int len) {
                sink.write(buf, off, len);
                String s = sink.toString();
                int at = s.indexOf("Assistant: ");
                if (!fired && at >= 0 && s.length() > at + "Assistant: ".length()) {
                    fired = true;
                    stopped[0] = CompletableFuture.supplyAsync(chat::interrupt).join();
                }
            }

            @Override
            public void flush() {
            }

            @Override
            public void close() {
            }
        }, true);
        String script = "hello\nagain\n";
        try (ChatGLM glm = ChatGLM.load(tiny)) {
            chat.maxNewTokens = 1900;
            int code = chat.converse(glm, new BufferedReader(new StringReader(script)) {
                @Override
                public String readLine() throws java.io.IOException {
                    chat.maxNewTokens = stopped[0] ? 3 : 1900;   // the second reply short
                    return super.readLine();
                }
            }, out);
            assertThat(code).isZero();
        }
        assertThat(stopped[0]).as("a reply was being written when Ctrl-C came").isTrue();
        String text = sink.toString();
        assertThat(text).contains("(reply stopped; this exchange is not kept. Ctrl-C again, 'stop' or Ctrl-D quits)");
        assertThat(text.lines().filter(l -> l.startsWith("Assistant: ")).count()).as(text).isEqualTo(2);
        assertThat(text).doesNotContain("error:");
        assertThat(chat.interrupt()).as("idle again: Ctrl-C quits").isFalse();
    }

}
