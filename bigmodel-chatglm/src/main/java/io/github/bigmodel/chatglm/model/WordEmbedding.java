package io.github.bigmodel.chatglm.model;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.ForwardScope;
import io.github.bigmodel.core.Module;
import io.github.bigmodel.core.Parameter;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;

/** {@code torch.nn.Embedding}: one {@code weight} row per token id. */
final class WordEmbedding extends Module {

    final Parameter weight;

    WordEmbedding(long vocab, long hidden, DType dtype) {
        super("Embedding");
        this.weight = registerParameter("weight", Parameter.empty(dtype, vocab, hidden));
    }

    /** The rows of {@code ids} ([B, L] int64) as [B, L, hidden]; inside the hook scope, so it may be offloaded. */
    Tensor forward(Tensor ids) {
        try (ForwardScope f = enterForward()) {
            return f.output(torch.embedding(weight.data(), f.input(ids)));
        }
    }
}
