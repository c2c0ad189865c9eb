package io.github.bigmodel.cli;

import static org.assertj.core.api.Assertions.assertThat;

import io.github.bigmodel.core.testing.ReferenceTree;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;

class LoadProgressTest {

    /** --progress draws the loading bar on stderr up to the checkpoint's bytes; stdout keeps only the answer. */
    @Test
    void progressFlagDrawsTheLoadingBarOnStderr() {
        Path folder = ReferenceTree.models().resolve("chatglm3-6b-tiny");
        CliTest.Run r = CliTest.run("generate", "--model", folder.toString(), "--ids", CliTest.firstForwardIds(folder),
                "--max-new-tokens", "1", "--progress");
        assertThat(r.code()).as(r.err()).isZero();
        assertThat(r.err()).contains("Loading").contains("100%").contains(CliTest.lastShard(folder));
        assertThat(r.out()).doesNotContain("Loading");
    }

    /** Without a terminal or --progress, and always with --json, stderr stays empty. */
    @Test
    void quietWithoutTheFlagAndWithJson() {
        Path folder = ReferenceTree.models().resolve("chatglm3-6b-tiny");
        String ids = CliTest.firstForwardIds(folder);
        CliTest.Run plain = CliTest.run("generate", "--model", folder.toString(), "--ids", ids, "--max-new-tokens",
                "1");
        assertThat(plain.code()).as(plain.err()).isZero();
        assertThat(plain.err()).isEmpty();
        CliTest.Run json = CliTest.run("generate", "--model", folder.toString(), "--ids", ids, "--max-new-tokens",
                "1", "--json", "--progress");
        assertThat(json.code()).as(json.err()).isZero();
        assertThat(json.err()).isEmpty();
    }
}
