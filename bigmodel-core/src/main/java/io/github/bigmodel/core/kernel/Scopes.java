package io.github.bigmodel.core.kernel;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;

/**
 * Hands tensors made inside a private pointer scope to the caller, as the rest of the project does. Internal (this
 * package is exported to the ChatGLM modeling only): the kernels, the quantization code and the modeling share it.
 */
public final class Scopes {

    private Scopes() {
    }

    /**
     * Gives {@code t} (retained out of an inner scope) to the caller's innermost scope when one is open, so that
     * it is released with the caller's other temporaries; else the caller owns it.
     */
    public static Tensor handOut(Tensor t) {
        PointerScope outer = PointerScope.getInnerScope();
        if (outer != null) {
            outer.attach(t);
            t.releaseReference();
        }
        return t;
    }

    /**
     * Keeps {@code t} alive past the scope it was made in (which then only drops its own reference); it lives
     * until closed explicitly.
     */
    public static Tensor keep(Tensor t) {
        t.retainReference();
        return t;
    }
}
