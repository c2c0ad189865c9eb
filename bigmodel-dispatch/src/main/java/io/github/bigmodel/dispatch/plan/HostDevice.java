package io.github.bigmodel.dispatch.plan;

import io.github.bigmodel.core.Device;
import java.util.regex.Pattern;

/**
 * A device map value with its host: {@code "box-a/cuda:0"}, {@code "box-b/cpu"}, {@code "box-b/disk"}, or a device
 * alone ({@code "cuda:0"}, {@code "cpu"}, {@code "remote"}), which means the local host. Host names are letters,
 * digits, {@code .}, {@code _} and {@code -}; a host-qualified value names a GPU, {@code cpu} or {@code disk} (not
 * {@code remote}, which means "another host", nor {@code meta}).
 *
 * <pre>{@code
 * HostDevice p = HostDevice.parse("box-a/cuda:0");
 * p.host();       // "box-a"
 * p.device();     // cuda:0
 * p.toString();   // "box-a/cuda:0"
 * HostDevice.parse("cpu").host();   // null: the local host
 * }</pre>
 *
 * @param host   the host name, or null for the local host
 * @param device where on that host
 */
public record HostDevice(String host, Device device) {

    private static final Pattern HOST = Pattern.compile("[A-Za-z0-9._-]+");

    /**
     * @throws IllegalArgumentException for a null device, meta, a host name with other characters, or a host given
     *     with {@code remote}
     */
    public HostDevice {
        if (device == null) {
            throw new IllegalArgumentException("A placement needs a device");
        }
        if (device.isMeta()) {
            throw new IllegalArgumentException("meta holds no values: place a module on a GPU, cpu or disk");
        }
        if (host != null) {
            checkHost(host);
            if (device.isRemote()) {
                throw new IllegalArgumentException("'" + host + "/remote' is contradictory: remote means another"
                        + " host holds the module; name that host instead (e.g. " + host + "/cpu)");
            }
        }
    }

    /** A placement on the local host. */
    public static HostDevice local(Device device) {
        return new HostDevice(null, device);
    }

    /**
     * Parses {@code "<host>/<device>"} or a device alone (the local host); the device part is {@link Device#parse}'s.
     *
     * @throws IllegalArgumentException naming the text when the host or the device is not understood
     */
    public static HostDevice parse(String text) {
        if (text == null) {
            throw new IllegalArgumentException("placement must not be null");
        }
        int slash = text.indexOf('/');
        if (slash < 0) {
            return local(Device.parse(text));
        }
        String host = text.substring(0, slash).trim();
        String device = text.substring(slash + 1).trim();
        if (device.indexOf('/') >= 0) {
            throw new IllegalArgumentException("Placement '" + text + "' has more than one '/': expected"
                    + " <host>/<device>, e.g. box-a/cuda:0");
        }
        try {
            return new HostDevice(host, Device.parse(device));
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("Placement '" + text + "': " + e.getMessage(), e);
        }
    }

    /**
     * Checks a host name: letters, digits, {@code .}, {@code _}, {@code -}.
     *
     * @throws IllegalArgumentException naming it otherwise
     */
    public static String checkHost(String host) {
        if (host == null || !HOST.matcher(host).matches()) {
            throw new IllegalArgumentException("Invalid host name '" + host + "': use letters, digits, '.', '_'"
                    + " and '-' only (e.g. box-a, gpu1.lan)");
        }
        return host;
    }

    /** Whether no host is named (the local host). */
    public boolean isLocal() {
        return host == null;
    }

    /** {@code host/device}, or the device alone on the local host ({@code cuda:N} for a GPU). */
    @Override
    public String toString() {
        return host == null ? device.toString() : host + "/" + device;
    }
}
