package io.github.bigmodel.cli;

import io.github.bigmodel.core.Device;
import io.github.bigmodel.dispatch.DispatchOptions;
import io.github.bigmodel.safetensors.Checkpoint;
import io.github.bigmodel.safetensors.CheckpointException;
import io.github.bigmodel.safetensors.TensorInfo;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * A loading progress bar fed by dispatch's per-tensor callback: bytes of the checkpoint placed so far, with the
 * shard being read and the device the tensor went to. The sizes come from the checkpoint's headers (read once,
 * no tensor data); when progress is off nothing is read and nothing drawn.
 *
 * <pre>{@code
 * try (LoadProgress progress = LoadProgress.of(err, enabled, modelDir)) {
 *     ChatGLM glm = ChatGLM.load(modelDir, modelOptions.toDispatchOptions(progress));
 * }
 * }</pre>
 */
final class LoadProgress implements DispatchOptions.Progress, AutoCloseable {

    private final PrintWriter err;
    private final boolean enabled;
    private final Map<String, TensorInfo> infos = new HashMap<>();
    private final Map<Path, Integer> shardIndex = new HashMap<>();
    private final long totalBytes;
    private ProgressBars.Bar bar;

    private LoadProgress(PrintWriter err, boolean enabled, Path checkpoint) {
        this.err = err;
        long total = 0;
        boolean usable = enabled;
        if (enabled) {
            try (Checkpoint c = Checkpoint.open(checkpoint)) {
                List<Path> shards = c.shards();
                for (int i = 0; i < shards.size(); i++) {
                    shardIndex.put(shards.get(i), i);
                }
                for (TensorInfo t : c.tensors()) {
                    infos.put(t.name(), t);
                    total += t.byteLength();
                }
            } catch (CheckpointException e) {
                usable = false; // loading reports the problem itself, as one error line
            }
        }
        this.enabled = usable;
        this.totalBytes = total;
    }

    /** A progress listener for loading {@code checkpoint}; draws only when {@code enabled}. */
    static LoadProgress of(PrintWriter err, boolean enabled, Path checkpoint) {
        return new LoadProgress(err, enabled, checkpoint);
    }

    @Override
    public synchronized void placed(String name, Device where, int done, int total) {
        if (!enabled) {
            return;
        }
        if (bar == null) {
            bar = ProgressBars.bytes(err, true, "Loading", totalBytes);
        }
        TensorInfo info = infos.get(name);
        String shard = info == null ? "" : "shard " + (shardIndex.getOrDefault(info.file(), 0) + 1) + "/"
                + shardIndex.size() + " ";
        bar.step(info == null ? 0 : info.byteLength(), shard + "-> " + where);
        if (done == total) {
            close();
        }
    }

    @Override
    public synchronized void close() {
        if (bar != null) {
            bar.close();
            bar = null;
        }
    }
}
