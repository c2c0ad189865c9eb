package io.github.bigmodel.core;

import org.bytedeco.pytorch.Tensor;

/**
 * Code that runs around a module's forward pass: before it (bring offloaded weights in), on each input tensor (move
 * it to the module's execution device), on each output, and after it (release what was brought in).
 *
 * <p>Hooks are attached with {@link Module#addForwardHook(ForwardHook)}, run in the order added (after-forward
 * callbacks in reverse order, so hooks nest), and removed through the returned {@link HookHandle}. A module
 * without hooks pays nothing: its forward scope is a shared no-op.
 *
 * <pre>{@code
 * HookHandle h = block.addForwardHook(new ForwardHook() {
 *     public Tensor onInput(Module m, Tensor x) { return x.to(cuda0); }
 * });
 * ...
 * h.remove();
 * }</pre>
 *
 * <p>Methods returning a tensor may return the argument itself or a new tensor; when they return a new one, the
 * scope closes the intermediate it replaced only if the scope created it (inputs owned by the caller are never
 * closed).
 */
public interface ForwardHook {

    /** Runs when the module's forward starts, before any input is seen. */
    default void beforeForward(Module module) {
    }

    /** Maps one input tensor; returns the tensor the module should use. */
    default Tensor onInput(Module module, Tensor input) {
        return input;
    }

    /** Maps one output tensor; returns the tensor the caller receives. */
    default Tensor onOutput(Module module, Tensor output) {
        return output;
    }

    /** Runs when the module's forward ends, normally or by an exception. */
    default void afterForward(Module module) {
    }

    /**
     * The device this hook makes the module compute on, or null when the hook does not decide it. Lets a model
     * allocate per-layer state (a KV cache) where the layer will run even while its weights are offloaded.
     */
    default Device executionDevice() {
        return null;
    }
}
