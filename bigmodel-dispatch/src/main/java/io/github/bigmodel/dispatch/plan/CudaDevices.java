package io.github.bigmodel.dispatch.plan;

import io.github.bigmodel.core.NativeRuntime;
import java.util.ArrayList;
import java.util.List;
import java.util.function.IntFunction;
import org.bytedeco.pytorch.global.torch;

/**
 * Asks something of every visible CUDA device, for the planner's inventory and the memory report.
 *
 * <pre>{@code
 * List<Long> free = CudaDevices.query(i -> freeBytesOf(i));   // empty without CUDA
 * }</pre>
 */
public final class CudaDevices {

    private CudaDevices() {
    }

    /**
     * {@code query} applied to device indices {@code 0..count-1}; an empty list when CUDA is not available (nothing
     * is asked of CUDA then). A CPU-only libtorch may throw {@link RuntimeException} or {@link LinkageError} from
     * its CUDA bindings: callers catch them, since what such a failure means differs per caller.
     */
    public static <T> List<T> query(IntFunction<T> query) {
        NativeRuntime.init();
        List<T> out = new ArrayList<>();
        if (!torch.cuda_is_available()) {
            return out;
        }
        int count = torch.cuda_device_count();
        for (int i = 0; i < count; i++) {
            out.add(query.apply(i));
        }
        return out;
    }
}
