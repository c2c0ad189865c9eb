package io.github.bigmodel.safetensors.torch;

import static org.assertj.core.api.Assertions.assertThat;

import io.github.bigmodel.core.testing.ReferenceTree;
import io.github.bigmodel.safetensors.CheckpointException;
import io.github.bigmodel.safetensors.TensorInfo;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Enumeration;
import java.util.List;
import java.util.Random;
import java.util.zip.ZipEntry;
import java.util.zip.ZipFile;
import org.bytedeco.pytorch.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import io.github.bigmodel.safetensors.testing.TestZip;

/**
 * Seeded random mutations of a real shard's pickle: every one must either read or fail with a CheckpointException,
 * and whatever reads must load without touching memory outside its storages.
 */
class TorchBinFuzzTest {

    private static final int MUTATIONS = 4000;
    /** Every n-th mutation goes through a whole re-zipped file and loads its tensors natively. */
    private static final int REZIP_EVERY = 8;

    @TempDir
    Path dir;

    @Test
    void mutatedPicklesGiveResultOrCheckpointException() throws IOException {
        Path shard = ReferenceTree.models().resolve("chatglm-6b-tiny/pytorch_model-00001-of-00002.bin");
        String archive;
        byte[] pickle;
        List<String> storageNames = new ArrayList<>();
        List<byte[]> storages = new ArrayList<>();
        try (ZipFile z = new ZipFile(shard.toFile())) {
            ZipEntry first = z.entries().nextElement();
            archive = first.getName().substring(0, first.getName().indexOf('/'));
            pickle = z.getInputStream(z.getEntry(archive + "/data.pkl")).readAllBytes();
            for (Enumeration<? extends ZipEntry> it = z.entries(); it.hasMoreElements();) {
                ZipEntry e = it.nextElement();
                if (e.getName().startsWith(archive + "/data/")) {
                    storageNames.add(e.getName());
                    storages.add(z.getInputStream(e).readAllBytes());
                }
            }
        }
        Random random = new Random(20240611L);
        int read = 0;
        int refused = 0;
        int loadedTensors = 0;
        long start = System.nanoTime();
        for (int i = 0; i < MUTATIONS; i++) {
            byte[] mutated = mutate(pickle, random);
            if (i % REZIP_EVERY == 0) {
                TestZip zip = new TestZip().stored(archive + "/data.pkl", mutated);
                for (int s = 0; s < storageNames.size(); s++) {
                    zip.stored(storageNames.get(s), storages.get(s));
                }
                Path file = dir.resolve("fuzz.bin");
                Files.write(file, zip.bytes());
                try (TorchBinFile f = TorchBinFile.open(file)) {
                    for (TensorInfo t : f.tensors()) {
                        try (Tensor x = f.load(t.name())) {
                            assertThat(x.nbytes()).isEqualTo(t.byteLength());
                            // Touch every element so an out-of-bounds view would fault here.
                            TorchBinReferenceTest.tensorBytes(x);
                            loadedTensors++;
                        }
                    }
                    read++;
                } catch (CheckpointException e) {
                    assertThat(e.file()).isEqualTo(file);
                    refused++;
                }
            } else {
                try {
                    new PickleReader(mutated, Path.of("fuzz.bin")).read();
                    read++;
                } catch (CheckpointException e) {
                    refused++;
                }
            }
        }
        double seconds = (System.nanoTime() - start) / 1e9;
        TorchBinFile.LOG.info("fuzz: {} mutations, {} read, {} refused, {} tensors loaded, {} s",
                MUTATIONS, read, refused, loadedTensors, String.format("%.2f", seconds));
        assertThat(read + refused).isEqualTo(MUTATIONS);
        // The mutations must exercise both outcomes, or the test says nothing.
        assertThat(read).isPositive();
        assertThat(refused).isPositive();
        assertThat(loadedTensors).isPositive();
        assertThat(seconds).isLessThan(20);
    }

    private static byte[] mutate(byte[] original, Random random) {
        byte[] b = original;
        int edits = 1 + random.nextInt(4);
        for (int e = 0; e < edits; e++) {
            int kind = random.nextInt(6);
            int at = random.nextInt(b.length);
            switch (kind) {
                case 0: // flip a byte
                    b = b.clone();
                    b[at] = (byte) random.nextInt(256);
                    break;
                case 1: // flip one bit
                    b = b.clone();
                    b[at] ^= (byte) (1 << random.nextInt(8));
                    break;
                case 2: { // delete a run
                    int len = Math.min(1 + random.nextInt(8), b.length - at);
                    byte[] c = new byte[b.length - len];
                    System.arraycopy(b, 0, c, 0, at);
                    System.arraycopy(b, at + len, c, at, b.length - at - len);
                    b = c;
                    break;
                }
                case 3: { // insert random bytes
                    int len = 1 + random.nextInt(8);
                    byte[] c = new byte[b.length + len];
                    System.arraycopy(b, 0, c, 0, at);
                    for (int i = 0; i < len; i++) {
                        c[at + i] = (byte) random.nextInt(256);
                    }
                    System.arraycopy(b, at, c, at + len, b.length - at);
                    b = c;
                    break;
                }
                case 4: // truncate
                    b = Arrays.copyOf(b, at);
                    break;
                default: { // duplicate a run elsewhere (repeats opcodes with their arguments)
                    int len = Math.min(1 + random.nextInt(16), b.length - at);
                    int to = random.nextInt(b.length);
                    byte[] c = new byte[b.length + len];
                    System.arraycopy(b, 0, c, 0, to);
                    System.arraycopy(b, at, c, to, len);
                    System.arraycopy(b, to, c, to + len, b.length - to);
                    b = c;
                    break;
                }
            }
            if (b.length == 0) {
                break;
            }
        }
        return b;
    }
}
