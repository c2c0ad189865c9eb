package io.github.bigmodel.pipeline;

import io.github.bigmodel.core.NativeRuntime;
import io.github.bigmodel.dispatch.DispatchOptions;
import io.github.bigmodel.dispatch.plan.DeviceMap;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;

/**
 * A worker in a JVM of its own, as the tests start it: {@code storeHost port rank world modelDir mapFile
 * joinSeconds stepSeconds [bindAddress]}. Exits 0 when shut down, 3 when refused at join, 4 on any other failure; the reason goes
 * to stderr.
 */
public final class WorkerProcess {

    public static final int REFUSED = 3;
    public static final int FAILED = 4;

    private WorkerProcess() {
    }

    public static void main(String[] args) throws Exception {
        NativeRuntime.init();
        try {
            DeviceMap map = DeviceMap.fromJson(Files.readString(Path.of(args[5])));
            PipelineWorker.Options o = new PipelineWorker.Options(args[0], Integer.parseInt(args[1]),
                    Integer.parseInt(args[2]), Integer.parseInt(args[3]), args.length > 8 ? args[8] : "127.0.0.1",
                    Duration.ofSeconds(Long.parseLong(args[6])), Duration.ofSeconds(Long.parseLong(args[7])));
            try (PipelineWorker w = PipelineWorker.load(Path.of(args[4]), map, DispatchOptions.builder().build(), o)) {
                System.err.println("worker rank " + o.rank() + " loaded " + w.span());
                w.serve();
            }
            System.exit(0);
        } catch (PipelineException e) {
            System.err.println("worker: " + e.kind() + ": " + e.getMessage());
            System.exit(e.kind() == PipelineException.Kind.REFUSED ? REFUSED : FAILED);
        } catch (Throwable e) {
            e.printStackTrace();
            System.exit(FAILED);
        }
    }
}
