package io.github.bigmodel.safetensors;

import java.nio.file.Path;

/**
 * A checkpoint file or index that cannot be read as what it claims to be. It names the file, the tensor when one is
 * concerned, and the {@link Reason}, so callers can react to the kind of damage and users see where it is.
 *
 * <pre>{@code
 * try (TensorFile f = SafetensorsFile.open(path)) { ... }
 * catch (CheckpointException e) {
 *     if (e.reason() == CheckpointException.Reason.TRUNCATED) { ... download again ... }
 * }
 * }</pre>
 */
public class CheckpointException extends RuntimeException {

    private static final long serialVersionUID = 1L;

    /** The kinds of damage a checkpoint can have. */
    public enum Reason {
        /** The file is shorter than its header says. */
        TRUNCATED,
        /** The header length points past the end of the file. */
        HEADER_LENGTH_OUT_OF_RANGE,
        /** The header is larger than the format allows (100 MB for safetensors). */
        HEADER_TOO_LARGE,
        /** The header or an index is not valid JSON, or not of the expected structure. */
        INVALID_JSON,
        /** A tensor shape that no tensor can have: a negative dimension. */
        INVALID_SHAPE,
        /** A dtype the format or bigmodel does not know. */
        UNKNOWN_DTYPE,
        /** Data offsets outside the data section or reversed. */
        OFFSET_OUT_OF_RANGE,
        /** Two tensors' bytes overlap. */
        OVERLAP,
        /** Bytes of the data section belong to no tensor. */
        HOLE,
        /** {@code end - begin} differs from {@code numel * element size}. */
        SIZE_MISMATCH,
        /** The same tensor name twice. */
        DUPLICATE_NAME,
        /** A file that an index names does not exist. */
        MISSING_SHARD,
        /** A tensor that was asked for, or that an index places in a shard, is not there. */
        MISSING_TENSOR,
        /** A pickled object other than tensors and plain containers, or a pickle feature not supported. */
        UNSUPPORTED_CONTENT,
        /** The file is not of a format bigmodel reads. */
        UNKNOWN_FORMAT,
        /** Reading the file failed (permissions, I/O error). */
        IO_ERROR
    }

    private final Reason reason;
    private final Path file;
    private final String tensor;

    public CheckpointException(Reason reason, Path file, String tensor, String message) {
        this(reason, file, tensor, message, null);
    }

    public CheckpointException(Reason reason, Path file, String tensor, String message, Throwable cause) {
        super(compose(reason, file, tensor, message), cause);
        this.reason = reason;
        this.file = file;
        this.tensor = tensor;
    }

    private static String compose(Reason reason, Path file, String tensor, String message) {
        StringBuilder sb = new StringBuilder();
        sb.append(file == null ? "<checkpoint>" : file.toString());
        if (tensor != null) {
            sb.append(", tensor '").append(tensor).append('\'');
        }
        sb.append(": ").append(message).append(" [").append(reason).append(']');
        return sb.toString();
    }

    public Reason reason() {
        return reason;
    }

    /** The file concerned, or null. */
    public Path file() {
        return file;
    }

    /** The tensor concerned, or null when the damage is not about one tensor. */
    public String tensor() {
        return tensor;
    }
}
