package io.github.bigmodel.cli;

import io.github.bigmodel.pipeline.PipelineException;
import io.github.bigmodel.pipeline.PipelineWorker;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/**
 * {@code bigmodel worker}: serves one stage of a pipeline. Loads only what the {@code --device-map} places on its
 * host (the rank-th host of the map), joins the coordinator's group at {@code --store} and serves steps until the
 * coordinator shuts it down; when the group breaks it waits for the coordinator to form it again.
 *
 * <pre>
 * bigmodel worker --rank 1 --world 2 --store 10.0.0.1:29500 --model chatglm3-6b --device-map pipeline.json \
 *     --bind 10.0.0.2
 * </pre>
 */
@Command(name = "worker", mixinStandardHelpOptions = true,
        description = "Serve one stage of a pipeline: load this rank's part of the model and carry the coordinator's "
                + "steps (see docs/distributed.md).")
final class WorkerCommand implements Callable<Integer> {

    /** Exit code when the coordinator refused this worker (another checkpoint, world size or version). */
    static final int REFUSED = 3;

    @Option(names = "--rank", paramLabel = "R", required = true,
            description = "This worker's rank, 1..W-1: the R-th host of the device map (rank 0 is the coordinator).")
    int rank;

    @Option(names = "--world", paramLabel = "W", required = true, description = "Ranks in the pipeline.")
    int world;

    @Option(names = "--store", paramLabel = "HOST:PORT", required = true,
            description = "The coordinator's store (its --pipeline address).")
    String store;

    @Option(names = "--model", paramLabel = "DIR", required = true,
            description = "This host's copy of the model folder (the same checkpoint as the coordinator's).")
    Path model;

    @Option(names = "--bind", paramLabel = "ADDR",
            description = "The address of this host the other ranks reach it by (default: the address this host "
                    + "uses to reach the store).")
    String bind;

    @Option(names = "--join-timeout", paramLabel = "SECONDS", defaultValue = "3600",
            description = "How long to wait for a coordinator (default: ${DEFAULT-VALUE}).")
    long joinSeconds;

    @Option(names = "--step-timeout", paramLabel = "SECONDS", defaultValue = "120",
            description = "How long the parts of one step may take to arrive or leave (default: ${DEFAULT-VALUE}).")
    long stepSeconds;

    @Mixin
    ModelOptions modelOptions;

    @Spec
    CommandSpec spec;

    @Override
    public Integer call() throws Exception {
        PrintWriter out = spec.commandLine().getOut();
        String[] hp = PipelineOptions.hostPort(spec.commandLine(), "--store", store);
        String address = bind != null ? bind : localAddressTowards(hp[0], Integer.parseInt(hp[1]));
        PipelineWorker.Options o = new PipelineWorker.Options(hp[0], Integer.parseInt(hp[1]), rank, world, address,
                Duration.ofSeconds(joinSeconds), Duration.ofSeconds(stepSeconds));
        try (PipelineWorker w = PipelineWorker.load(model,
                PipelineOptions.hostMap(spec.commandLine(), modelOptions.deviceMap),
                modelOptions.toDispatchOptions(), o)) {
            out.println("Rank " + rank + " of " + world + " holds " + w.span() + "; serving the coordinator at "
                    + store + " (from " + address + ")");
            out.flush();
            w.serve();
            out.println("Shut down by the coordinator.");
            return 0;
        } catch (PipelineException e) {
            spec.commandLine().getErr().println("worker: " + e.getMessage());
            return e.kind() == PipelineException.Kind.REFUSED ? REFUSED : 1;
        }
    }

    /** The local address of the interface that reaches the store (what the other hosts can reach this one by). */
    static String localAddressTowards(String host, int port) {
        try (java.net.DatagramSocket s = new java.net.DatagramSocket()) {
            s.connect(java.net.InetAddress.getByName(host), port);
            return s.getLocalAddress().getHostAddress();
        } catch (java.io.IOException e) {
            return "127.0.0.1";
        }
    }
}
