package io.github.bigmodel.core.testing;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/** What /proc/self/smaps says about the mapping that holds an address: for tests of how weights are held. */
public final class ProcMaps {

    private ProcMaps() {
    }

    /** The VmFlags line of the mapping holding {@code address} ("" when none): {@code hg} marks MADV_HUGEPAGE. */
    public static String flagsOfMappingAt(long address) throws IOException {
        return fieldOfMappingAt(address, "VmFlags:");
    }

    /** The Rss (KiB) of the mapping holding {@code address}, -1 when none. */
    public static long residentKibOfMappingAt(long address) throws IOException {
        String rss = fieldOfMappingAt(address, "Rss:");
        return rss.isEmpty() ? -1 : Long.parseLong(rss.substring(4).trim().split("\\s+")[0]);
    }

    /** The header line (range, flags, ..., path) of the mapping holding {@code address}, "" when none. */
    public static String mappingAt(long address) throws IOException {
        return fieldOfMappingAt(address, null);
    }

    /** The {@code field} line of the mapping holding {@code address}, or its header line when {@code field} is null. */
    private static String fieldOfMappingAt(long address, String field) throws IOException {
        boolean inside = false;
        for (String line : Files.readAllLines(Path.of("/proc/self/smaps"))) {
            if (line.matches("^[0-9a-f]+-[0-9a-f]+ .*")) {
                String[] range = line.substring(0, line.indexOf(' ')).split("-");
                inside = Long.compareUnsigned(address, Long.parseUnsignedLong(range[0], 16)) >= 0
                        && Long.compareUnsigned(address, Long.parseUnsignedLong(range[1], 16)) < 0;
                if (inside && field == null) {
                    return line;
                }
            } else if (inside && line.startsWith(field)) {
                return line;
            }
        }
        return "";
    }
}
