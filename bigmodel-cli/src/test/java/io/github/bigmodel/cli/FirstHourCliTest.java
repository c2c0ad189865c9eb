package io.github.bigmodel.cli;

import static org.assertj.core.api.Assertions.assertThat;

import io.github.bigmodel.chatglm.ChatGLMConfig;
import io.github.bigmodel.chatglm.chat.ChatGLM;
import io.github.bigmodel.chatglm.tokenizer.ChatGLM3Tokenizer;
import io.github.bigmodel.core.testing.ReferenceTree;
import io.github.bigmodel.dispatch.DeviceInventory;
import java.io.BufferedReader;
import java.io.PipedReader;
import java.io.PipedWriter;
import java.io.PrintWriter;
import java.io.StringReader;
import java.io.StringWriter;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
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

    @Test
    void makeTinyWritesAModelWhoseVocabularyIsItsTokenizers() {
        ChatGLMConfig config = ChatGLMConfig.fromJson(tiny.resolve("config.json"));
        assertThat(config.vocabSize()).isEqualTo(ChatGLM3Tokenizer.load(tiny.resolve("tokenizer.model")).vocabSize());
        assertThat(tiny.resolve("model.safetensors.index.json")).exists();
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
        assertThat(r.out()).startsWith("model: ChatGLM3 (chatglm3-6b), 28 layers, float16");
        if (DeviceInventory.system().gpuCount() == 0) {
            assertThat(r.err()).isEqualTo("note: GPU 0 is not available here (no GPU); planning it as asked"
                    + System.lineSeparator());
        } else {
            assertThat(r.err()).isEmpty();
        }
        CliTest.Run folder = CliTest.run("plan", "--model", tiny.toString(), "--max-memory", "cpu=1GiB");
        assertThat(folder.out()).startsWith("model: ChatGLM3, 8 layers");
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
        chat.maxLength = 24;
        StringWriter sink = new StringWriter();
        String script = "hello\n" + "long message ".repeat(40) + "\nagain\n";   // then end of input (Ctrl-D)
        try (ChatGLM glm = ChatGLM.load(tiny)) {
            int code = chat.converse(glm, new BufferedReader(new StringReader(script)), new PrintWriter(sink, true));
            assertThat(code).isZero();
        }
        String out = sink.toString();
        assertThat(out.lines().filter(l -> l.startsWith("Assistant: ")).count()).isEqualTo(2);
        List<String> errors = out.lines().filter(l -> l.startsWith("error: ")).toList();
        assertThat(errors).hasSize(1);
        assertThat(errors.get(0)).contains("limit of 24 tokens").contains("raise --max-length")
                .doesNotContain("max_length").endsWith("(the conversation goes on; 'clear' starts over)");
    }

    @Test
    void ctrlCStopsTheReplyAndCtrlCWhenIdleQuits() throws Exception {
        ChatCommand chat = new ChatCommand();
        chat.maxNewTokens = 1900;   // random weights rarely say eos: a reply of seconds
        assertThat(chat.interrupt()).as("no reply yet: Ctrl-C quits").isFalse();
        PipedWriter keys = new PipedWriter();
        BufferedReader in = new BufferedReader(new PipedReader(keys));
        StringWriter sink = new StringWriter();
        PrintWriter out = new PrintWriter(sink, true);
        try (ChatGLM glm = ChatGLM.load(tiny)) {
            CompletableFuture<Integer> session = CompletableFuture.supplyAsync(() -> {
                try {
                    return chat.converse(glm, in, out);
                } catch (Exception e) {
                    throw new IllegalStateException(e);
                }
            });
            keys.write("hello\n");
            keys.flush();
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            while (!replyStarted(sink) && System.nanoTime() < deadline) {
                Thread.sleep(20);
            }
            assertThat(replyStarted(sink)).as(sink.toString()).isTrue();
            assertThat(chat.interrupt()).as("a reply was being written").isTrue();
            while (!sink.toString().contains("(reply stopped") && System.nanoTime() < deadline) {
                Thread.sleep(20);
            }
            assertThat(sink.toString()).contains("(reply stopped; this exchange is not kept.");
            // The session is alive: it answers the next message (a short one), then Ctrl-D ends it.
            chat.maxNewTokens = 3;
            keys.write("again\n");
            keys.flush();
            keys.close();
            assertThat(session.get(60, TimeUnit.SECONDS)).isZero();
            assertThat(chat.interrupt()).isFalse();
        }
        String text = sink.toString();
        assertThat(text.lines().filter(l -> l.startsWith("Assistant: ")).count()).isEqualTo(2);
        assertThat(text).doesNotContain("error:");
    }

    private static boolean replyStarted(StringWriter sink) {
        String s = sink.toString();
        int at = s.indexOf("Assistant: ");
        return at >= 0 && s.length() > at + "Assistant: ".length() + 3;
    }
}
