package io.github.bigmodel.core;

import java.util.Objects;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Where a tensor lives or a module runs: {@code cpu}, {@code cuda:N}, {@code meta} (shape only, no bytes),
 * {@code disk} (an offload folder, read back on demand) or {@code remote} (held by another process: a module of
 * another pipeline stage, which this process neither loads nor runs).
 *
 * <p>Text and JSON follow accelerate's {@code hf_device_map}: a GPU is written as its integer index in JSON maps
 * and as {@code "cuda:N"} in text; {@code "cuda:1"}, {@code "1"} and the JSON integer {@code 1} are all accepted
 * on input.
 *
 * <pre>{@code
 * Device gpu = Device.parse("cuda:1");       // cuda:1
 * Object json = gpu.toJsonValue();            // Integer 1, as in hf_device_map
 * Device cpu = Device.fromJsonValue("cpu");   // cpu
 * }</pre>
 */
public final class Device implements Comparable<Device> {

    /**
     * The kind of place. The declaration order is accelerate's device order: GPUs, then cpu, then disk; remote
     * (not accelerate's) comes last.
     */
    public enum Type { CUDA, META, CPU, DISK, REMOTE }

    public static final Device CPU = new Device(Type.CPU, -1);
    public static final Device META = new Device(Type.META, -1);
    public static final Device DISK = new Device(Type.DISK, -1);
    /** A part of the model another pipeline stage holds: its tensors stay on meta here. */
    public static final Device REMOTE = new Device(Type.REMOTE, -1);

    private static final Pattern CUDA = Pattern.compile("cuda(?::(\\d{1,6}))?");
    private static final Pattern INDEX = Pattern.compile("\\d{1,6}");

    private final Type type;
    private final int index;

    private Device(Type type, int index) {
        this.type = type;
        this.index = index;
    }

    /**
     * GPU number {@code index}. Any integer is accepted so that a budget can name a GPU this machine lacks
     * (accelerate only warns about those); moving a tensor there fails in libtorch with its own message.
     */
    public static Device cuda(int index) {
        return new Device(Type.CUDA, index);
    }

    /**
     * Parses {@code cpu}, {@code meta}, {@code disk}, {@code remote}, {@code cuda} (= {@code cuda:0}),
     * {@code cuda:N} or a bare GPU index {@code N}.
     *
     * @throws IllegalArgumentException naming the text when it is none of these
     */
    public static Device parse(String text) {
        if (text == null) {
            throw new IllegalArgumentException("device must not be null");
        }
        String s = text.trim();
        switch (s) {
            case "cpu":
                return CPU;
            case "meta":
                return META;
            case "disk":
                return DISK;
            case "remote":
                return REMOTE;
            default:
                break;
        }
        Matcher m = CUDA.matcher(s);
        if (m.matches()) {
            return cuda(m.group(1) == null ? 0 : Integer.parseInt(m.group(1)));
        }
        if (INDEX.matcher(s).matches()) {
            return cuda(Integer.parseInt(s));
        }
        throw new IllegalArgumentException("Unknown device '" + text
                + "': expected cpu, disk, remote, meta, cuda, cuda:N or a GPU index N");
    }

    /** Reads a device from a JSON value of an {@code hf_device_map}: an integer GPU index or a device string. */
    public static Device fromJsonValue(Object value) {
        if (value instanceof Integer || value instanceof Long || value instanceof Short) {
            return cuda(Math.toIntExact(((Number) value).longValue()));
        }
        if (value instanceof String) {
            return parse((String) value);
        }
        throw new IllegalArgumentException("Unknown device " + value
                + ": expected a GPU index or one of \"cpu\", \"disk\", \"remote\", \"meta\", \"cuda:N\"");
    }

    /** The JSON value accelerate writes in {@code hf_device_map}: the integer index for a GPU, else the name. */
    public Object toJsonValue() {
        return type == Type.CUDA ? Integer.valueOf(index) : toString();
    }

    public Type type() {
        return type;
    }

    /** The GPU index; -1 for devices that have none. */
    public int index() {
        return index;
    }

    public boolean isCuda() {
        return type == Type.CUDA;
    }

    public boolean isCpu() {
        return type == Type.CPU;
    }

    public boolean isMeta() {
        return type == Type.META;
    }

    public boolean isDisk() {
        return type == Type.DISK;
    }

    /** Whether this is {@code remote}: held by another pipeline stage, not by this process. */
    public boolean isRemote() {
        return type == Type.REMOTE;
    }

    /** Whether libtorch can hold a tensor here (everything but {@code disk} and {@code remote}). */
    public boolean isTensorDevice() {
        return type != Type.DISK && type != Type.REMOTE;
    }

    /** GPUs by index, then meta, cpu and disk: the order accelerate gives budget keys. */
    @Override
    public int compareTo(Device o) {
        int c = type.compareTo(o.type);
        return c != 0 ? c : Integer.compare(index, o.index);
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof Device && ((Device) o).type == type && ((Device) o).index == index;
    }

    @Override
    public int hashCode() {
        return Objects.hash(type, index);
    }

    @Override
    public String toString() {
        switch (type) {
            case CUDA:
                return "cuda:" + index;
            case META:
                return "meta";
            case CPU:
                return "cpu";
            case REMOTE:
                return "remote";
            default:
                return "disk";
        }
    }
}
