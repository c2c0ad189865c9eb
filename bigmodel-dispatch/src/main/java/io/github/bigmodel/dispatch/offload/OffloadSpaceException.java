package io.github.bigmodel.dispatch.offload;

import io.github.bigmodel.core.SettingMessage;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Path;
import io.github.bigmodel.dispatch.BigModel;

/**
 * The offload folder's disk has no room for the weights to be written there: found before writing (the free space
 * is checked up front and before each tensor) or when the disk filled up mid-write (the temporary file is removed
 * then, so the folder never holds a partial tensor). Names the folder, the bytes needed and the bytes available.
 *
 * <pre>{@code
 * try {
 *     BigModel.loadCheckpointAndDispatch(model, checkpoint, options);
 * } catch (OffloadSpaceException e) {
 *     log.error("Free {} bytes in {} or pick another folder", e.neededBytes() - e.availableBytes(), e.folder());
 * }
 * }</pre>
 */
public final class OffloadSpaceException extends UncheckedIOException implements SettingMessage.Carrier {

    private static final long serialVersionUID = 1L;

    private final transient Path folder;
    private final long neededBytes;
    private final long availableBytes;
    private final transient SettingMessage settingMessage;

    /**
     * @param availableBytes usable bytes on the folder's file store, or -1 when they could not be read
     */
    public OffloadSpaceException(Path folder, long neededBytes, long availableBytes, IOException cause) {
        this(folder, neededBytes, availableBytes, cause, new SettingMessage("offload_folder", "offloadFolder",
                "Offload folder " + folder + " has no room: " + neededBytes + " bytes needed, "
                        + (availableBytes < 0 ? "free space unknown" : availableBytes + " bytes available")
                        + ". Free disk space there, choose another ",
                ", or give the CPU a larger budget so that fewer weights go to disk"));
    }

    private OffloadSpaceException(Path folder, long neededBytes, long availableBytes, IOException cause,
            SettingMessage message) {
        super(message.toString(), cause != null ? cause : new IOException("No space left on device"));
        this.folder = folder;
        this.neededBytes = neededBytes;
        this.availableBytes = availableBytes;
        this.settingMessage = message;
    }

    @Override
    public SettingMessage settingMessage() {
        return settingMessage;
    }

    /** The offload folder. */
    public Path folder() {
        return folder;
    }

    /** Bytes the write needed (with a small margin for the index and file-system overhead, when checked ahead). */
    public long neededBytes() {
        return neededBytes;
    }

    /** Usable bytes on the folder's disk when the problem was found, or -1 when unknown. */
    public long availableBytes() {
        return availableBytes;
    }
}
