package io.github.bigmodel.safetensors;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Path;

/** The only two outcomes the header parser may have for any bytes, with the invariants of a success. */
final class HeaderOracle {

    static final Path FILE = Path.of("fuzzed.safetensors");

    private HeaderOracle() {
    }

    /** Parses {@code data} as a whole file; returns whether it was accepted. Anything but a CheckpointException fails. */
    static boolean check(byte[] data) {
        SafetensorsHeader h;
        try {
            h = SafetensorsHeader.parse(FILE, data, data.length);
        } catch (CheckpointException e) {
            assertThat(e.reason()).isNotNull();
            assertThat(e.file()).isEqualTo(FILE);
            return false;
        }
        // Accepted: the tensors tile the data section exactly, in order, with consistent sizes.
        long at = h.dataStart();
        for (TensorInfo t : h.tensors()) {
            assertThat(t.fileOffset()).isEqualTo(at);
            assertThat(t.byteLength()).isEqualTo(t.dtype().bytesFor(t.numel()));
            at += t.byteLength();
        }
        assertThat(at).isEqualTo(data.length);
        return true;
    }
}
