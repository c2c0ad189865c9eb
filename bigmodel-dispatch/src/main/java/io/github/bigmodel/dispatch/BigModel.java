package io.github.bigmodel.dispatch;

import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.Module;
import io.github.bigmodel.core.NativeRuntime;
import io.github.bigmodel.core.quant.Precision;
import io.github.bigmodel.safetensors.Checkpoint;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import io.github.bigmodel.dispatch.plan.DeviceInventory;
import io.github.bigmodel.dispatch.plan.DeviceMap;
import io.github.bigmodel.dispatch.plan.DeviceMapException;
import io.github.bigmodel.dispatch.plan.DeviceMapPlanner;
import io.github.bigmodel.dispatch.plan.DevicePlan;
import io.github.bigmodel.dispatch.offload.OffloadSpaceException;
import io.github.bigmodel.dispatch.plan.Strategy;

/**
 * Running models bigger than one device, the entry points of accelerate's {@code big_modeling}: load a checkpoint
 * straight onto a device map, dispatch a model already in memory, or offload a whole model to the CPU or disk.
 *
 * <p>Placement follows accelerate. The <em>main device</em> is the first GPU of the map (or
 * {@link DispatchOptions.Builder#executionDevice the override}). With a GPU in the map, modules placed on
 * {@code cpu} or {@code disk} execute on the main device and their weights are offloaded: held in CPU memory or on
 * disk and brought in for each forward. Without GPUs, {@code cpu} modules run on the CPU in place and {@code disk}
 * modules execute on the CPU with their weights read from disk.
 *
 * <pre>{@code
 * MyModel model = new MyModel(config);                     // born on meta: no memory used
 * DispatchOptions options = DispatchOptions.builder()
 *         .strategy(Strategy.AUTO).maxMemory("0=10GiB,cpu=30GiB")
 *         .offloadFolder(Path.of("offload"))                   // the model names its no-split classes
 *         .dtype(DType.FLOAT16).build();
 * try (DispatchedModel<MyModel> d = BigModel.loadCheckpointAndDispatch(model, Path.of("chatglm3-6b"), options)) {
 *     Tensor logits = d.model().forward(ids);
 * }
 * }</pre>
 */
public final class BigModel {

    private static final Logger LOG = LoggerFactory.getLogger(BigModel.class);

    private BigModel() {
    }

    /**
     * Loads {@code checkpoint} (a directory, a single {@code .safetensors}/{@code .bin} file or an index json) into
     * {@code model} (on meta) and places it: plans a device map when {@link DispatchOptions#strategy()} is set,
     * checks the map, then reads one tensor at a time (a zero-copy view of the mapped file), converts it to the
     * target dtype and puts it on its device, so host memory beyond the weights kept on the CPU stays within about
     * one tensor. With precisions ({@link DispatchOptions.Builder#gpuPrecision}, {@code cpuPrecision},
     * {@code precision(device, p)}), every {@code QuantizedLinear} weight is held at the precision of the device
     * its module executes on: int8/int4 weights are quantized as they arrive (or taken as stored from a quantized
     * checkpoint), and offloaded ones are kept in THUDM's portable layout (packed weight + {@code weight_scale}) in
     * CPU memory or the offload folder and converted to the kernel's layout on the execution device by the hook.
     * For {@code disk}, a safetensors tensor that needs no conversion is read in place from the
     * checkpoint (nothing written); any other is written once to the offload folder (accelerate's format with a
     * fingerprint; a matching folder is reused, a different one rewritten) and read back memory-mapped.
     *
     * <pre>{@code
     * DispatchedModel<Stack> d = BigModel.loadCheckpointAndDispatch(new Stack(), Path.of("ckpt"),
     *         DispatchOptions.builder().deviceMap("{\"layers.0\": \"cpu\", \"layers.1\": \"disk\"}").build());
     * d.hfDeviceMap();                     // {"layers.0":"cpu","layers.1":"disk"}
     * }</pre>
     *
     * @throws DeviceMapException when the map names unknown modules or GPUs, or leaves parameters without a device
     * @throws IllegalArgumentException when the checkpoint lacks tensors or has other shapes, or an offload folder
     *     is needed and not given
     * @throws io.github.bigmodel.safetensors.CheckpointException when the checkpoint cannot be read
     * @throws java.io.UncheckedIOException when the offload folder cannot be written (read-only)
     * @throws OffloadSpaceException when its disk has no room for the offloaded weights
     */
    public static <M extends Module> DispatchedModel<M> loadCheckpointAndDispatch(M model, Path checkpoint,
            DispatchOptions options) {
        if (model == null) {
            throw new IllegalArgumentException("model must not be null: build it on meta first");
        }
        if (checkpoint == null) {
            throw new IllegalArgumentException("checkpoint must not be null: give a .safetensors/.bin file, an index"
                    + " or a model folder");
        }
        if (options == null) {
            throw new IllegalArgumentException("options must not be null: pass DispatchOptions.defaults()");
        }
        NativeRuntime.init();
        Checkpoint ckpt = Checkpoint.open(checkpoint);
        Dispatcher.Placed placed;
        DeviceMap map = options.deviceMap();
        DevicePlan plan = null;
        Device main;
        List<Dispatcher.Placement> placements;
        try {
            // A pre-quantized checkpoint loads as stored: its layers are planned at their stored precision before
            // a map is planned (so the planner sizes them as they will be held), unless their device asks for
            // another precision.
            Map<String, Precision> stored = StoredPrecisions.of(model, ckpt);
            StoredPrecisions.plan(model, stored, options.plan().floatDtype());
            if (map == null) {
                plan = DeviceMapPlanner.plan(model, options.strategy(), options.maxMemory(), options.plan());
                map = plan.deviceMap();
                LOG.info("Planned device map ({}): {}", options.strategy(), map);
            }
            main = Dispatcher.mainDevice(map, options.plan().executionDevice());
            Dispatcher.validate(model, map, main, options.plan().inventory());
            Dispatcher.planPrecisions(model, map, main, options, stored);
            placements = Dispatcher.placements(model, map, main);
            placed = Dispatcher.loadFromCheckpoint(model, ckpt, placements, options);
        } catch (RuntimeException | Error e) {
            ckpt.close();
            throw e;
        }
        if (!placed.resources.contains(ckpt)) {
            // Nothing is read in place: the loaded tensors own their memory (or the offload folder's mappings).
            ckpt.close();
        }
        return Dispatcher.attach(model, map, main, plan, placed, options.prefetch());
    }

    /**
     * Places a model whose weights are already materialized (for example on the CPU) per {@code deviceMap}: moves
     * GPU entries, keeps offloaded {@code cpu} entries' weights in CPU memory, writes {@code disk} entries to
     * {@link DispatchOptions#offloadFolder()} (always rewritten: weights in memory have no file to fingerprint), and
     * attaches the hooks. Only the map, offload folder, prefetch and execution device of {@code options} are used.
     *
     * <pre>{@code
     * DispatchedModel<Stack> d = BigModel.dispatchModel(stack, DeviceMap.fromJson("{\"layers\": 0, \"head\": \"cpu\"}"),
     *         DispatchOptions.builder().build());
     * }</pre>
     *
     * @throws DeviceMapException as {@link #loadCheckpointAndDispatch}
     * @throws IllegalArgumentException when a weight holds no values, or disk is used without an offload folder
     */
    public static <M extends Module> DispatchedModel<M> dispatchModel(M model, DeviceMap deviceMap,
            DispatchOptions options) {
        Objects.requireNonNull(model, "model");
        Objects.requireNonNull(deviceMap, "deviceMap");
        Objects.requireNonNull(options, "options");
        NativeRuntime.init();
        Device main = Dispatcher.mainDevice(deviceMap, options.plan().executionDevice());
        Dispatcher.validate(model, deviceMap, main, options.plan().inventory());
        List<Dispatcher.Placement> placements = Dispatcher.placements(model, deviceMap, main);
        Dispatcher.Placed placed = Dispatcher.placeMaterialized(model, placements, options.offloadFolder());
        return Dispatcher.attach(model, deviceMap, main, null, placed, options.prefetch());
    }

    /**
     * Keeps every weight of a materialized model in CPU memory and runs each module on {@code executionDevice},
     * bringing its weights in for each forward (accelerate's {@code cpu_offload}). With the CPU as execution device
     * nothing needs offloading and the model simply runs on the CPU.
     *
     * <pre>{@code
     * DispatchedModel<Stack> d = BigModel.cpuOffload(stack, Device.cuda(0));
     * }</pre>
     *
     * @param executionDevice where modules compute; null for the first GPU, or the CPU without one
     */
    public static <M extends Module> DispatchedModel<M> cpuOffload(M model, Device executionDevice) {
        return dispatchModel(model, DeviceMap.of(Map.of("", Device.CPU)), DispatchOptions.builder().prefetch(0)
                .executionDevice(defaultExecution(executionDevice)).build());
    }

    /**
     * Writes every weight of a materialized model to {@code offloadFolder} (accelerate's format) and runs each
     * module on {@code executionDevice}, reading its weights (memory-mapped) for each forward (accelerate's
     * {@code disk_offload}).
     *
     * <pre>{@code
     * DispatchedModel<Stack> d = BigModel.diskOffload(stack, Path.of("offload"), Device.CPU);
     * }</pre>
     *
     * @param executionDevice where modules compute; null for the first GPU, or the CPU without one
     */
    public static <M extends Module> DispatchedModel<M> diskOffload(M model, Path offloadFolder,
            Device executionDevice) {
        Objects.requireNonNull(offloadFolder, "offloadFolder");
        return dispatchModel(model, DeviceMap.of(Map.of("", Device.DISK)), DispatchOptions.builder().prefetch(1)
                .offloadFolder(offloadFolder).executionDevice(defaultExecution(executionDevice)).build());
    }

    private static Device defaultExecution(Device requested) {
        if (requested != null) {
            return requested;
        }
        return DeviceInventory.system().gpuCount() > 0 ? Device.cuda(0) : Device.CPU;
    }
}
