package io.github.bigmodel.core;

import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.BoolOptional;
import org.bytedeco.pytorch.LongOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * Run in a child JVM by {@link JavaCppLimitsTest}: maps a file larger than JavaCPP's default physical-memory limit,
 * reads every page (so the mapping is resident), then allocates many small native objects, each of which makes
 * JavaCPP compare the process's resident memory with its limit. Prints "OK" when it got through.
 *
 * <p>Arguments: the file to create and map, its size in MiB, {@code bigmodel} to apply bigmodel's settings first
 * (anything else leaves JavaCPP's defaults or the -D flags of the command line), and {@code mapped} to hold the
 * bytes as a mapped file or {@code anonymous} to hold them in tensor memory (as weights loaded onto the CPU are).
 */
public final class JavaCppLimitsChild {

    private JavaCppLimitsChild() {
    }

    public static void main(String[] args) throws Exception {
        if (args[2].equals("bigmodel")) {
            NativeRuntime.init();
        }
        Path file = Path.of(args[0]);
        long bytes = Long.parseLong(args[1]) << 20;
        byte[] chunk = new byte[1 << 20];
        java.util.Arrays.fill(chunk, (byte) 1);
        try (RandomAccessFile f = new RandomAccessFile(file.toFile(), "rw")) {
            for (long written = 0; written < bytes; written += chunk.length) {
                f.write(chunk);
            }
        }
        Tensor mapped = torch.from_file(file.toString(), new BoolOptional(false), new LongOptional(bytes),
                new TensorOptions(ScalarType.Byte));
        if (args[3].equals("anonymous")) {
            Tensor copy = mapped.clone();
            mapped.close();
            mapped = copy;
        }
        // One byte per page: the whole mapping becomes resident (file-backed RSS).
        long pages = bytes / 4096;
        long sum = mapped.as_strided(new long[] {pages}, new long[] {4096}).sum().item_long();
        for (int i = 0; i < 2000; i++) {
            try (PointerScope scope = new PointerScope()) {
                // A tensor op and a sized JavaCPP allocation: the latter is where JavaCPP checks its limits.
                torch.ones(16).add(torch.ones(16));
                new BytePointer(4096);
            }
        }
        System.out.println("OK resident=" + ProcessMemory.read().residentBytes() + " sum=" + sum
                + " javacpp physicalBytes=" + org.bytedeco.javacpp.Pointer.physicalBytes()
                + " maxPhysicalBytes=" + org.bytedeco.javacpp.Pointer.maxPhysicalBytes());
        mapped.close();
        Files.deleteIfExists(file);
    }
}
