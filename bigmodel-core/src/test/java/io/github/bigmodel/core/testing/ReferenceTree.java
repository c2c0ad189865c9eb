package io.github.bigmodel.core.testing;

import java.nio.file.Files;
import java.nio.file.Path;

/**
 * Where the reference fixtures are: the system property {@code bigmodel.reference.dir} (set by the build to the
 * project's copy in {@code test-resources/reference}), so {@code mvn test -Dbigmodel.reference.dir=DIR} runs the
 * same tests against another tree of the same layout.
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
}
