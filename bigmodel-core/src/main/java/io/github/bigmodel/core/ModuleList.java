package io.github.bigmodel.core;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/**
 * An indexed list of child modules named {@code "0"}, {@code "1"}, ... as PyTorch's {@code nn.ModuleList}.
 *
 * <pre>{@code
 * ModuleList<Linear> layers = new ModuleList<>();
 * for (int i = 0; i < 1000; i++) layers.add(new Linear(10000, 10000, true, DType.FLOAT32));
 * layers.get(3);   // child "3"
 * }</pre>
 */
public class ModuleList<M extends Module> extends Module {

    private final List<M> items = new ArrayList<>();

    public ModuleList() {
        super("ModuleList");
    }

    /** Appends a module under the next index and returns it. */
    public M add(M module) {
        registerModule(Integer.toString(items.size()), module);
        items.add(module);
        return module;
    }

    public M get(int index) {
        return items.get(index);
    }

    public int size() {
        return items.size();
    }

    public List<M> asList() {
        return Collections.unmodifiableList(items);
    }
}
