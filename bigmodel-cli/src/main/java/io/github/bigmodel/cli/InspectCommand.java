package io.github.bigmodel.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.github.bigmodel.core.MemorySize;
import io.github.bigmodel.safetensors.Checkpoint;
import io.github.bigmodel.safetensors.TensorInfo;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;
import picocli.CommandLine.Model.CommandSpec;

/**
 * {@code bigmodel inspect DIR|FILE [--json]}: lists a checkpoint's tensors without reading their data.
 *
 * <pre>
 * bigmodel inspect test-resources/reference/models/chatglm3-6b-tiny
 * bigmodel inspect model.safetensors.index.json --json
 * </pre>
 */
@Command(name = "inspect", description = "List a checkpoint's tensors, dtypes, shapes, shards and total size "
        + "without reading tensor data.")
final class InspectCommand implements Callable<Integer> {

    @Parameters(index = "0", paramLabel = "PATH",
            description = "A model folder, a .safetensors or .bin file, or an index json.")
    Path path;

    @Option(names = "--json", description = "Print {\"tensors\": [...], \"total_bytes\": N}.")
    boolean json;

    @Spec
    CommandSpec spec;

    @Override
    public Integer call() throws Exception {
        PrintWriter out = spec.commandLine().getOut();
        try (Checkpoint checkpoint = Checkpoint.open(path)) {
            List<TensorInfo> tensors = checkpoint.tensors();
            long total = checkpoint.totalBytes();
            if (json) {
                ObjectMapper mapper = new ObjectMapper();
                ObjectNode root = mapper.createObjectNode();
                ArrayNode list = root.putArray("tensors");
                for (TensorInfo t : tensors) {
                    ObjectNode n = list.addObject();
                    n.put("name", t.name());
                    n.put("dtype", t.dtype().safetensorsName());
                    ArrayNode shape = n.putArray("shape");
                    for (long d : t.shape()) {
                        shape.add(d);
                    }
                    n.put("file", t.file().getFileName().toString());
                }
                root.put("total_bytes", total);
                out.println(mapper.writerWithDefaultPrettyPrinter().writeValueAsString(root));
            } else {
                printTable(out, checkpoint, tensors, total);
            }
        }
        return 0;
    }

    static void printTable(PrintWriter out, Checkpoint checkpoint, List<TensorInfo> tensors, long total) {
        int width = "tensor".length();
        for (TensorInfo t : tensors) {
            width = Math.max(width, t.name().length());
        }
        String format = "%-" + width + "s  %-5s  %-18s  %12s  %s%n";
        out.printf(Locale.ROOT, format, "tensor", "dtype", "shape", "bytes", "file");
        for (TensorInfo t : tensors) {
            out.printf(Locale.ROOT, format, t.name(), t.dtype().safetensorsName(), Arrays.toString(t.shape()),
                    t.byteLength(), t.file().getFileName());
        }
        out.printf(Locale.ROOT, "%d tensors in %d file(s), %s (%d bytes)%n", tensors.size(),
                checkpoint.shards().size(), MemorySize.format(total), total);
    }
}
