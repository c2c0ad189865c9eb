package io.github.bigmodel.dispatch.plan;

import java.util.List;

/**
 * The biggest "layer" of a model (a module without children or of a no-split class) and every name reaching that
 * size. Main devices keep this much free so an offloaded layer can be brought back.
 *
 * <pre>{@code
 * LargestLayer l = DeviceMapPlanner.largestLayer(model, sizes, List.copyOf(model.noSplitModuleClasses()));
 * l.size();    // 1.069285376E9
 * l.names();   // [transformer.word_embeddings, lm_head]
 * }</pre>
 *
 * @param size  bytes of the largest layer
 * @param names every layer of that size, in traversal order
 */
public record LargestLayer(double size, List<String> names) {
    public LargestLayer {
        names = List.copyOf(names);
    }
}
