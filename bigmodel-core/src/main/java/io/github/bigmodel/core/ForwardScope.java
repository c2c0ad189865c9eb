package io.github.bigmodel.core;

import java.util.ArrayList;
import java.util.List;
import org.bytedeco.pytorch.Tensor;

/**
 * One run of a module's forward with its hooks: opened by {@link Module#enterForward()}, it has already run every
 * hook's {@code beforeForward}; {@link #input(Tensor)} and {@link #output(Tensor)} pass tensors through the hooks;
 * {@link #close()} runs {@code afterForward} in reverse order.
 *
 * <pre>{@code
 * public Tensor forward(Tensor hidden) {
 *     try (ForwardScope f = enterForward()) {
 *         Tensor x = f.input(hidden);          // on this module's execution device
 *         Tensor y = torch.linear(x, weight.data());
 *         return f.output(y);
 *     }
 * }
 * }</pre>
 *
 * <p>Tensors that {@code input} created (device copies) are closed when the scope closes; the caller's own tensors
 * never are.
 */
public final class ForwardScope implements AutoCloseable {

    /** The scope of a module without hooks: every call is the identity. */
    static final ForwardScope NONE = new ForwardScope(null, List.of());

    private final Module module;
    private final List<ForwardHook> hooks;
    private List<Tensor> created;
    private int entered;

    ForwardScope(Module module, List<ForwardHook> hooks) {
        this.module = module;
        this.hooks = hooks;
    }

    static ForwardScope open(Module module, List<ForwardHook> hooks) {
        ForwardScope scope = new ForwardScope(module, hooks);
        try {
            for (ForwardHook h : hooks) {
                h.beforeForward(module);
                scope.entered++;
            }
        } catch (RuntimeException | Error e) {
            scope.close();
            throw e;
        }
        return scope;
    }

    /** Passes an input through the hooks (for example a move to the execution device). */
    public Tensor input(Tensor input) {
        Tensor t = input;
        for (ForwardHook h : hooks) {
            Tensor next = h.onInput(module, t);
            if (next != t) {
                track(next);
            }
            t = next;
        }
        return t;
    }

    /** Passes an output through the hooks. The result is the caller's to close. */
    public Tensor output(Tensor output) {
        Tensor t = output;
        for (ForwardHook h : hooks) {
            Tensor next = h.onOutput(module, t);
            if (next != t && t != output) {
                t.close();
            }
            t = next;
        }
        return t;
    }

    private void track(Tensor t) {
        if (created == null) {
            created = new ArrayList<>(4);
        }
        created.add(t);
    }

    /** Runs the hooks' {@code afterForward} in reverse order and closes the input copies this scope made. */
    @Override
    public void close() {
        if (this == NONE) {
            return;
        }
        RuntimeException failure = null;
        for (int i = entered - 1; i >= 0; i--) {
            try {
                hooks.get(i).afterForward(module);
            } catch (RuntimeException e) {
                if (failure == null) {
                    failure = e;
                }
            }
        }
        entered = 0;
        if (created != null) {
            created.forEach(Tensor::close);
            created = null;
        }
        if (failure != null) {
            throw failure;
        }
    }
}
