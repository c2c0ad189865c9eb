package io.github.bigmodel.safetensors;

import java.nio.file.Path;
import java.util.List;
import org.bytedeco.pytorch.Tensor;

/**
 * One checkpoint file that holds named tensors (a safetensors file, a torch {@code .bin} zip), opened lazily:
 * opening reads only the table of contents, and each {@link #load(String)} reads one tensor.
 *
 * <p>Implementations are safe to read from several threads once opened.
 *
 * <pre>{@code
 * try (TensorFile f = SafetensorsFile.open(Path.of("model.safetensors"))) {
 *     for (TensorInfo t : f.tensors()) System.out.println(t);
 *     Tensor w = f.load("lm_head.weight");   // a CPU view of the mapped bytes
 * }
 * }</pre>
 */
public interface TensorFile extends AutoCloseable {

    /** The file. */
    Path path();

    /** Every tensor of the file, in the order the file lists them. */
    List<TensorInfo> tensors();

    /**
     * The tensor called {@code name}.
     *
     * @throws CheckpointException with {@link CheckpointException.Reason#MISSING_TENSOR} when there is none
     */
    TensorInfo info(String name);

    /** Whether the file holds {@code name}. */
    boolean contains(String name);

    /**
     * The values of {@code name} as a CPU tensor in its stored dtype. Where the layout allows it the tensor is a
     * zero-copy view of the memory-mapped file (copy-on-write: writing to it never changes the file), and the
     * mapping stays alive for as long as the tensor does, even after this file is closed.
     *
     * @throws CheckpointException when the name is missing or the bytes cannot be read
     */
    Tensor load(String name);

    /** Releases the file's own resources; tensors already loaded stay valid. */
    @Override
    void close();
}
