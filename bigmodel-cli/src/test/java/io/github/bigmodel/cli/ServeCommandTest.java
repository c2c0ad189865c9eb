package io.github.bigmodel.cli;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.github.bigmodel.chatglm.model.ScriptedCheckpoint;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Path;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

class ServeCommandTest {

    @Test
    void serveLoadsTheModelWithTheChatLoadOptionsAndAnswers(@TempDir Path dir) throws Exception {
        ScriptedCheckpoint.builder().reply("\nServed by the CLI.").write(dir.resolve("tiny"));
        CommandLine cl = new CommandLine(new BigModelCli());
        StringWriter out = new StringWriter();
        cl.setOut(new PrintWriter(out, true));
        cl.setErr(new PrintWriter(new StringWriter(), true));
        ServeCommand serve = cl.getSubcommands().get("serve").getCommand();
        CompletableFuture<Integer> code = CompletableFuture.supplyAsync(() -> cl.execute("serve", "--model",
                dir.resolve("tiny").toString(), "--port", "0", "--max-sessions", "2", "--api-key", "k",
                "--max-memory", "cpu=1GiB", "--dtype", "float32"));
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        while (serve.running == null) {
            assertThat(code).as("serve ended early: " + out).isNotDone();
            assertThat(System.nanoTime()).as("server start").isLessThan(deadline);
            Thread.sleep(20);
        }
        try {
            HttpResponse<String> r = HttpClient.newHttpClient().send(HttpRequest.newBuilder(
                            URI.create(serve.running.baseUrl() + "/v1/chat/completions"))
                    .header("Authorization", "Bearer k")
                    .POST(HttpRequest.BodyPublishers.ofString("{\"model\": \"tiny\", \"temperature\": 0, "
                            + "\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}")).build(),
                    HttpResponse.BodyHandlers.ofString());
            assertThat(r.statusCode()).as(r.body()).isEqualTo(200);
            JsonNode j = new ObjectMapper().readTree(r.body());
            assertThat(j.at("/choices/0/message/content").asText()).isEqualTo("Served by the CLI.");
            assertThat(out.toString()).contains("Serving tiny (CHATGLM3) at http://127.0.0.1:");
        } finally {
            serve.running.close();
        }
        assertThat(code.get(30, TimeUnit.SECONDS)).isZero();
    }
}
