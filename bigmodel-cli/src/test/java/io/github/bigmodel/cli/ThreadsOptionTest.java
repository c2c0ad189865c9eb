package io.github.bigmodel.cli;

import static org.assertj.core.api.Assertions.assertThat;

import io.github.bigmodel.core.NativeRuntime;
import io.github.bigmodel.core.testing.ReferenceTree;
import java.nio.file.Path;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;

/** {@code --threads N}: applied before the command runs; a non-positive count is a usage error. */
class ThreadsOptionTest {

    @Test
    void threadsFlagSetsLibtorchThreads() {
        Path folder = ReferenceTree.models().resolve("chatglm3-6b-tiny");
        int before = NativeRuntime.threads();
        int wanted = before == 1 ? 2 : 1;
        try {
            CliTest.Run r = CliTest.run("generate", "--model", folder.toString(), "--ids", "1,2,3",
                    "--max-new-tokens", "1", "--greedy", "--json", "--threads", Integer.toString(wanted));
            assertThat(r.code()).as(r.err()).isZero();
            assertThat(torch.get_num_threads()).isEqualTo(wanted);
        } finally {
            NativeRuntime.setThreads(before);
        }
    }

    @Test
    void nonPositiveThreadsAreAUsageError() {
        Path folder = ReferenceTree.models().resolve("chatglm3-6b-tiny");
        CliTest.Run r = CliTest.run("generate", "--model", folder.toString(), "--ids", "1,2,3", "--threads", "0");
        assertThat(r.code()).isEqualTo(2);
        assertThat(r.err()).contains("--threads must be a positive integer, got 0");
    }
}
