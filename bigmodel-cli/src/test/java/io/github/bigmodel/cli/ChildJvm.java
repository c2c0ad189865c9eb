package io.github.bigmodel.cli;

import java.io.File;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.URI;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.jar.JarFile;
import java.util.jar.Manifest;

/**
 * What a test needs to start another JVM on this module's classes: the class path (surefire's booter jar lists it in
 * its manifest) and the java launcher of the running JDK.
 */
final class ChildJvm {

    private ChildJvm() {
    }

    /** The full class path of this test JVM, booter jars expanded. */
    static String classpath() {
        List<String> entries = new ArrayList<>();
        for (String entry : System.getProperty("java.class.path").split(File.pathSeparator)) {
            entries.add(entry);
            if (entry.endsWith(".jar") && new File(entry).getName().startsWith("surefirebooter")) {
                try (JarFile jar = new JarFile(entry)) {
                    Manifest m = jar.getManifest();
                    String cp = m == null ? null : m.getMainAttributes().getValue("Class-Path");
                    if (cp != null) {
                        for (String url : cp.trim().split("\\s+")) {
                            // Absolute file: URIs, or URIs relative to the booter jar's folder.
                            URI uri = URI.create(url);
                            Path p = uri.isAbsolute() ? Path.of(uri)
                                    : Path.of(new File(entry).getAbsoluteFile().getParentFile().toURI().resolve(uri));
                            entries.add(p.toString());
                        }
                    }
                } catch (IOException e) {
                    throw new UncheckedIOException(e);
                }
            }
        }
        return String.join(File.pathSeparator, entries);
    }

    static String java() {
        return Path.of(System.getProperty("java.home"), "bin", "java").toString();
    }

    /** The JVM flags the ./bigmodel launcher passes, with a small heap. */
    static List<String> flags() {
        return List.of("-Xmx1g", "-Dorg.bytedeco.javacpp.maxBytes=0", "-Dorg.bytedeco.javacpp.maxPhysicalBytes=0");
    }
}
