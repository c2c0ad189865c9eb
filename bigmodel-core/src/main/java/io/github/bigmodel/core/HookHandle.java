package io.github.bigmodel.core;

/**
 * Removes a hook it was returned for. Removing twice is harmless.
 *
 * <pre>{@code
 * try (HookHandle h = module.addForwardHook(hook)) {
 *     ... // hook active
 * }         // hook removed
 * }</pre>
 */
public interface HookHandle extends AutoCloseable {

    /** Detaches the hook from its module. */
    void remove();

    @Override
    default void close() {
        remove();
    }
}
