package io.github.bigmodel.core;

/**
 * A forward pass, generation, chat turn or weight read was asked of a model that is closed (or whose weights are
 * being released). It is the one exception every such late call gets, whichever thread makes it: work that races a
 * {@code close()} either completes or fails with this, and never touches freed native memory.
 *
 * <pre>{@code
 * try {
 *     glm.chat("你好", List.of());
 * } catch (ModelClosedException e) {
 *     // another thread closed glm: load it again
 * }
 * }</pre>
 *
 * <p>An {@link IllegalStateException}, so callers that already catch that keep working.
 */
public class ModelClosedException extends IllegalStateException {

    private static final long serialVersionUID = 1L;

    public ModelClosedException(String message) {
        super(message);
    }
}
