package io.github.bigmodel.chatglm;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Module;
import io.github.bigmodel.core.Parameter;

/** {@code torch.nn.Embedding}: one {@code weight} row per token id. */
final class WordEmbedding extends Module {

    final Parameter weight;

    WordEmbedding(long vocab, long hidden, DType dtype) {
        super("Embedding");
        this.weight = registerParameter("weight", Parameter.empty(dtype, vocab, hidden));
    }
}
