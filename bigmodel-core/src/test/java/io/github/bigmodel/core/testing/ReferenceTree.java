package io.github.bigmodel.core.testing;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.regex.Pattern;
import java.util.stream.Collectors;
import java.util.stream.Stream;

/**
 * Where the reference fixtures are: the system property {@code bigmodel.reference.dir} (set by the build to the
 * project's copy in {@code test-resources/reference}), so {@code mvn test -Dbigmodel.reference.dir=DIR} runs the
 * same tests against another tree of the same layout.
 *
 * <p>Tests take every fact of a tree (sizes, layer counts, special ids, shard names, token counts) from its files,
 * never from what the project's copy holds: {@code tools/reference-tree/} makes other trees to check that.
 */
public final class ReferenceTree {

    public static final String PROPERTY = "bigmodel.reference.dir";

    private ReferenceTree() {
    }

    /** The root of the reference tree; fails with a clear message when it is missing. */
    public static Path root() {
        String dir = System.getProperty(PROPERTY);
        Path root;
        if (dir != null && !dir.isBlank()) {
            root = Path.of(dir);
        } else {
            // Running from an IDE without the build's property: walk up to the project's copy.
            Path p = Path.of("").toAbsolutePath();
            while (p != null && !Files.isDirectory(p.resolve("test-resources/reference"))) {
                p = p.getParent();
            }
            if (p == null) {
                throw new IllegalStateException("Set -D" + PROPERTY + " to the reference tree");
            }
            root = p.resolve("test-resources/reference");
        }
        if (!Files.isDirectory(root)) {
            throw new IllegalStateException("Reference tree not found at " + root + " (-D" + PROPERTY + ")");
        }
        return root;
    }

    public static Path models() {
        return root().resolve("models");
    }

    public static Path deviceMaps() {
        return root().resolve("device-maps");
    }

    public static Path tokenizer() {
        return root().resolve("tokenizer");
    }

    /** A model folder of the tree, e.g. {@code model("chatglm3-6b-tiny")}. */
    public static Path model(String name) {
        return models().resolve(name);
    }

    /**
     * The shard files of a model folder, in name order: {@code shards(folder, "model", ".safetensors")} lists
     * {@code model-0000k-of-0000n.safetensors}, {@code shards(folder, "pytorch_model", ".bin")} the torch shards.
     * A tree may split a model into any number of shards.
     */
    public static List<Path> shards(Path folder, String prefix, String suffix) {
        Pattern name = Pattern.compile(Pattern.quote(prefix) + "-\\d{5}-of-\\d{5}" + Pattern.quote(suffix));
        try (Stream<Path> files = Files.list(folder)) {
            List<Path> out = files.filter(f -> name.matcher(f.getFileName().toString()).matches()).sorted()
                    .collect(Collectors.toList());
            if (out.isEmpty()) {
                throw new IllegalStateException("No " + prefix + "-*-of-*" + suffix + " shards in " + folder);
            }
            return out;
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}
