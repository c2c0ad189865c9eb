package io.github.bigmodel.chatglm.model;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Module;
import io.github.bigmodel.core.Parameter;
import io.github.bigmodel.safetensors.SafetensorsWriter;
import io.github.bigmodel.safetensors.ShardedCheckpointWriter;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import io.github.bigmodel.chatglm.ChatGLMConfig;

/**
 * Writes a checkpoint with a model's exact state-dict names and shapes and seeded random weights, as sharded
 * safetensors: for demos, tests and benchmarks, where real weights cannot be downloaded. Random weights decode at
 * the same speed as trained ones. Norm weights are 1, everything else normal with the given standard deviation;
 * tensors are generated and written one at a time, so memory stays bounded by the largest tensor.
 *
 * <pre>{@code
 * ChatGLMLanguageModel meta = ChatGLMLanguageModel.create(ChatGLMConfig.preset("chatglm3-6b"), DType.BFLOAT16);
 * RandomCheckpoint.write(meta, Path.of("/data/chatglm3-6b-random"), DType.BFLOAT16, 2_000_000_000L, 0.02, 42);
 * }</pre>
 */
public final class RandomCheckpoint {

    private RandomCheckpoint() {
    }

    /**
     * @param model         the model (on meta) whose state dict to write
     * @param folder        the target folder: {@code model-0000k-of-0000n.safetensors} and the index
     * @param dtype         the dtype of every floating tensor
     * @param maxShardBytes the most bytes per shard
     * @param std           standard deviation of the random weights
     * @param seed          the seed of libtorch's generator
     */
    public static void write(Module model, Path folder, DType dtype, long maxShardBytes, double std, long seed) {
        torch.manual_seed(seed);
        Map<String, Parameter> stateDict = model.stateDict();
        List<SafetensorsWriter.Entry> entries = new ArrayList<>();
        stateDict.forEach((name, p) -> entries.add(SafetensorsWriter.Entry.of(name,
                p.dtype().isFloatingPoint() ? dtype : p.dtype(), p.shape())));
        try (ShardedCheckpointWriter writer = ShardedCheckpointWriter.create(folder, entries, maxShardBytes)) {
            for (SafetensorsWriter.Entry e : entries) {
                try (PointerScope scope = new PointerScope()) {
                    Tensor t;
                    if (e.name().endsWith("layernorm.weight")) {
                        t = torch.ones(e.shape()).to(e.dtype().scalarType());
                    } else if (e.dtype().isFloatingPoint()) {
                        t = torch.randn(e.shape()).mul_(new Scalar(std)).to(e.dtype().scalarType());
                    } else {
                        t = torch.zeros(e.shape()).to(e.dtype().scalarType());
                    }
                    writer.write(e.name(), t);
                }
            }
        }
    }
}
