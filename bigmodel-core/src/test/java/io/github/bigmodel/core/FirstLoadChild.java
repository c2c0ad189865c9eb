package io.github.bigmodel.core;

import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;

/** {@link NativeRuntimeFirstLoadTest}'s child: bigmodel's entry step, then libtorch's first tensor. */
public final class FirstLoadChild {

    private FirstLoadChild() {
    }

    public static void main(String[] args) {
        NativeRuntime.init();
        try (Tensor t = torch.ones(3)) {
            System.out.println("sum=" + t.sum().item_float());
        }
    }
}
