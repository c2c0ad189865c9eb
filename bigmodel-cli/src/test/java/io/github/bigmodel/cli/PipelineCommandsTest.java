package io.github.bigmodel.cli;

import static org.assertj.core.api.Assertions.assertThat;

import io.github.bigmodel.chatglm.ChatGLMConfig;
import io.github.bigmodel.chatglm.chat.ChatGLM;
import io.github.bigmodel.chatglm.chat.ChatOptions;
import io.github.bigmodel.chatglm.generation.GenerationConfig;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.chatglm.model.StageSpan;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.NativeRuntime;
import io.github.bigmodel.dispatch.DispatchOptions;
import java.io.BufferedReader;
import java.io.PrintWriter;
import java.io.StringReader;
import java.io.StringWriter;
import java.net.ServerSocket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

/**
 * {@code bigmodel worker} in a JVM of its own and {@code chat --pipeline} here: the chat loop runs over the two
 * processes, and a greedy reply is the single-process one; a map without hosts is a one-line error.
 */
class PipelineCommandsTest {

    @Test
    void chatRunsOverAWorkerProcess(@TempDir Path dir) throws Exception {
        Path model = dir.resolve("demo");
        assertThat(CliTest.run("demo", "--dir", model.toString(), "--keep").code()).isZero();
        Path map = hostMap(model, dir);
        int port;
        try (ServerSocket s = new ServerSocket(0)) {
            port = s.getLocalPort();
        }
        List<String> cmd = new ArrayList<>(List.of(ChildJvm.java()));
        cmd.addAll(ChildJvm.flags());
        cmd.addAll(List.of("-cp", ChildJvm.classpath(), BigModelCli.class.getName(), "worker", "--rank", "1",
                "--world", "2", "--store", "127.0.0.1:" + port, "--model", model.toString(), "--device-map",
                map.toString(), "--bind", "127.0.0.1", "--join-timeout", "120", "--step-timeout", "60",
                "--threads", Integer.toString(NativeRuntime.threads())));
        Path log = dir.resolve("worker.log");
        Process worker = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile()).start();
        try {
            ChatCommand chat = new ChatCommand();
            chat.maxNewTokens = 8;
            PipelineOptions p = new PipelineOptions();
            p.pipeline = "127.0.0.1:" + port;
            p.bind = "127.0.0.1";
            p.joinSeconds = 120;
            p.stepSeconds = 60;
            ChatOptions greedy = ChatOptions.builder().generation(GenerationConfig.greedy().toBuilder()
                    .maxNewTokens(8).build()).build();
            String single;
            try (ChatGLM whole = ChatGLM.load(model)) {
                single = whole.chat("你好", List.of(), greedy).text();
            }
            try (PipelineOptions.Coordinated c = p.start(new CommandLine(new BigModelCli()), model, map.toString(),
                    DispatchOptions.builder().build(), 0, 0)) {
                assertThat(c.chat().chat("你好", List.of(), greedy).text()).as("greedy reply over the pipeline")
                        .isEqualTo(single);
                StringWriter sink = new StringWriter();
                int code = chat.converse(c.chat(), new BufferedReader(new StringReader("你好\n再见\nstop\n")),
                        new PrintWriter(sink, true));
                assertThat(code).isZero();
                assertThat(sink.toString().lines().filter(l -> l.startsWith("Assistant: ")).count()).isEqualTo(2);
                assertThat(sink.toString()).doesNotContain("error:");
                c.coordinator().shutdownWorkers();
            }
            assertThat(worker.waitFor(30, TimeUnit.SECONDS)).isTrue();
            assertThat(worker.exitValue()).as(Files.readString(log)).isZero();
            assertThat(Files.readString(log)).contains("Rank 1 of 2 holds").contains("Shut down by the coordinator");
        } finally {
            worker.destroyForcibly();
            worker.waitFor(10, TimeUnit.SECONDS);
        }
    }

    @Test
    void aPipelineNeedsAMapThatNamesHosts(@TempDir Path dir) throws Exception {
        Path map = Files.writeString(dir.resolve("plain.json"), "{\"\": \"cpu\"}");
        CliTest.Run run = CliTest.run("worker", "--rank", "1", "--world", "2", "--store", "127.0.0.1:1",
                "--model", dir.toString(), "--device-map", map.toString());
        assertThat(run.code()).isNotZero();
        assertThat(run.err()).contains("names no hosts");
        CliTest.Run bad = CliTest.run("worker", "--rank", "1", "--world", "2", "--store", "nowhere",
                "--model", dir.toString(), "--device-map", map.toString());
        assertThat(bad.code()).isNotZero();
        assertThat(bad.err()).contains("HOST:PORT");
    }

    /** Half of the blocks and the embedding on h0, the rest and the head on h1. */
    private static Path hostMap(Path model, Path dir) throws Exception {
        ChatGLMLanguageModel meta = ChatGLMLanguageModel.create(ChatGLMConfig.fromJson(model.resolve("config.json")),
                DType.FLOAT32);
        int n = meta.config().numLayers();
        StageSpan worker = new StageSpan(false, n / 2, n, true);
        Map<String, String> entries = new LinkedHashMap<>();
        for (String name : meta.stateDict().keySet()) {
            String unit = name.substring(0, name.lastIndexOf('.'));
            int at = unit.indexOf(".layers.");
            if (at >= 0) {
                int end = unit.indexOf('.', at + ".layers.".length());
                unit = end < 0 ? unit : unit.substring(0, end);
            }
            entries.putIfAbsent(unit, meta.holds(name, worker) && !meta.holds(name, new StageSpan(true, 0, 0, false))
                    ? "h1/cpu" : "h0/cpu");
        }
        StringBuilder json = new StringBuilder("{");
        entries.forEach((k, v) -> json.append(json.length() > 1 ? "," : "").append('"').append(k).append("\":\"")
                .append(v).append('"'));
        return Files.writeString(dir.resolve("pipeline.json"), json.append('}').toString());
    }
}
