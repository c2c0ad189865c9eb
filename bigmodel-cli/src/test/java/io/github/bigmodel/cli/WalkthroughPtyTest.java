package io.github.bigmodel.cli;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.github.bigmodel.dispatch.plan.DeviceInventory;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A new user's first steps, typed into a real terminal (a tmux pseudo-terminal): make the tiny model, plan the real
 * one as the README does, chat with a streamed reply, stop a reply with Ctrl-C, quit with Ctrl-C, send a message
 * longer than --max-length (one error line, the chat goes on), chat again and quit with Ctrl-D. Nothing on the way is
 * a raw logger line or a stack trace. Skipped where tmux is not installed ({@code apt-get install tmux}).
 */
class WalkthroughPtyTest {

    private static final long TIMEOUT_S = 120;
    /** The chat's prompt, waiting at the end of the screen (tmux drops the trailing blank). */
    private static final Pattern PROMPT = Pattern.compile("\\nUser:\\z");

    @Test
    void fromNothingToAStreamedReplyWithoutAnError(@TempDir Path dir) throws Exception {
        assumeTrue(onPath("tmux"), "tmux is not installed");
        Path launcher = dir.resolve("bigmodel");
        Files.writeString(launcher, "#!/bin/sh\nexec '" + ChildJvm.java() + "' " + String.join(" ", ChildJvm.flags())
                + " -cp '" + ChildJvm.classpath() + "' io.github.bigmodel.cli.BigModelCli \"$@\"\n",
                StandardCharsets.UTF_8);
        Files.setPosixFilePermissions(launcher, PosixFilePermissions.fromString("rwxr-xr-x"));
        String session = "bigmodel-walkthrough-" + ProcessHandle.current().pid();
        tmux("new-session", "-d", "-s", session, "-x", "230", "-y", "50", "-c", dir.toString(),
                "env -i PATH=/usr/bin:/bin HOME=" + dir + " LANG=C.UTF-8 TERM=xterm PS1='$ ' bash --norc --noprofile");
        try {
            type(session, "./bigmodel make-tiny tiny; echo MADE=$?");
            await(session, "MADE=0");
            type(session, "./bigmodel plan --preset chatglm3-6b --dtype float16 --max-memory \"0=10GiB,cpu=30GiB\";"
                    + " echo PLAN=$?");
            await(session, "PLAN=0");

            // A long reply, stopped by Ctrl-C; a Ctrl-C with no reply quits (130, as an interrupted program).
            type(session, "./bigmodel chat --model tiny --max-new-tokens 1900; echo CHAT1=$?");
            await(session, PROMPT);
            type(session, "hello");
            await(session, Pattern.compile("Assistant: \\s*\\S"));
            tmux("send-keys", "-t", session, "C-c");
            await(session, "(reply stopped; this exchange is not kept.");
            await(session, Pattern.compile("\\(reply stopped[^\\n]*\\n\\s*\\nUser:\\z"));
            tmux("send-keys", "-t", session, "C-c");
            await(session, "CHAT1=130");

            // An over-long message is one error line; the next message gets a streamed reply; Ctrl-D quits.
            type(session, "./bigmodel chat --model tiny --max-length 48 --max-new-tokens 8; echo CHAT2=$?");
            await(session, Pattern.compile("CHAT1=130[\\s\\S]*\\nUser:\\z"));
            type(session, "tell me a long story ".repeat(12).strip());
            await(session, "raise --max-length (the conversation goes on; 'clear' starts over)");
            type(session, "hello");
            await(session, Pattern.compile("starts over\\)\\s*\\nUser: hello\\s*\\n\\s*\\nAssistant: \\s*\\S[\\s\\S]*\\nUser:\\z"));
            tmux("send-keys", "-t", session, "C-d");
            await(session, "CHAT2=0");

            String screen = capture(session);
            assertThat(screen).contains("model: ChatGLM3-6B, 28 layers, float16")
                    .doesNotContain("[main]").doesNotContain("WARN").doesNotContain("Exception")
                    .doesNotContain("\tat ");
            if (DeviceInventory.system().gpuCount() == 0) {
                assertThat(screen).contains("note: GPU 0 is not available here (no GPU); planning it as asked");
            }
            assertThat(screen.lines().filter(l -> l.startsWith("error: ")).count()).isEqualTo(1);
        } finally {
            tmux("kill-session", "-t", session);
        }
    }

    private static boolean onPath(String tool) {
        try {
            return new ProcessBuilder("sh", "-c", "command -v " + tool).start().waitFor() == 0;
        } catch (IOException | InterruptedException e) {
            return false;
        }
    }

    private static void type(String session, String line) throws Exception {
        tmux("send-keys", "-t", session, "-l", line);
        tmux("send-keys", "-t", session, "Enter");
    }

    private static void await(String session, String text) throws Exception {
        await(session, Pattern.compile(Pattern.quote(text)));
    }

    private static void await(String session, Pattern pattern) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(TIMEOUT_S);
        String screen = "";
        while (System.nanoTime() < deadline) {
            screen = capture(session);
            if (pattern.matcher(screen).find()) {
                return;
            }
            Thread.sleep(100);
        }
        throw new AssertionError("waited " + TIMEOUT_S + " s for " + pattern + " on:\n" + screen);
    }

    /** The whole pane, wrapped lines joined, trailing blanks dropped. */
    private static String capture(String session) throws Exception {
        return tmux("capture-pane", "-p", "-J", "-S", "-", "-t", session).stripTrailing();
    }

    private static String tmux(String... args) throws Exception {
        List<String> command = new ArrayList<>(List.of("tmux"));
        command.addAll(List.of(args));
        Process p = new ProcessBuilder(command).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        if (!p.waitFor(30, TimeUnit.SECONDS)) {
            p.destroyForcibly();
            throw new AssertionError("tmux " + String.join(" ", args) + " hung");
        }
        return out;
    }
}
