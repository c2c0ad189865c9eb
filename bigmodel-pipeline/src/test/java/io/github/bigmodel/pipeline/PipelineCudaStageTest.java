package io.github.bigmodel.pipeline;

import static org.assertj.core.api.Assertions.assertThat;

import io.github.bigmodel.chatglm.ChatGLMFamily;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.testing.ReferenceTree;
import io.github.bigmodel.dispatch.BigModel;
import io.github.bigmodel.dispatch.DispatchOptions;
import io.github.bigmodel.dispatch.DispatchedModel;
import io.github.bigmodel.dispatch.plan.DeviceMap;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.TimeUnit;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A first stage on the GPU (its hidden state staged through host memory for Gloo) and a worker on the CPU give the
 * same bits as one process with the same placement (the same map without hosts). Skipped without CUDA.
 */
class PipelineCudaStageTest {

    @TempDir
    Path tmp;

    @Test
    void aGpuStageStagesThroughTheHost() throws Exception {
        Assumptions.assumeTrue(torch.cuda_is_available(), "no CUDA device");
        Path folder = ReferenceTree.models().resolve("chatglm3-6b-tiny");
        int layers = PipelineTestSupport.wholeModel(folder).config().numLayers();
        Path cpuMap = PipelineTestSupport.hostMap(folder, PipelineProcessesTest.spans(layers, 2), tmp);
        // Rank 0's entries on the GPU.
        Path map = Files.writeString(tmp.resolve("gpu-map.json"), Files.readString(cpuMap).replace("h0/cpu",
                "h0/cuda:0"));
        DeviceMap hostMap = DeviceMap.fromJson(Files.readString(map));
        ChatGLMLanguageModel local = ChatGLMFamily.ofFolder(folder).createModel(DType.FLOAT32);
        int port = Workers.freePort();
        try (DispatchedModel<ChatGLMLanguageModel> single = BigModel.loadCheckpointAndDispatch(local, folder,
                DispatchOptions.builder().deviceMap(DeviceMap.of(hostMap.asMap())).build());
             Workers workers = new Workers(tmp)) {
            Process worker = workers.start(port, 1, 2, folder, map, 120, 60);
            PipelineCoordinator.Options o = PipelineCoordinator.Options.of("127.0.0.1", port)
                    .withTimeouts(Duration.ofSeconds(120), Duration.ofSeconds(60));
            try (PipelineCoordinator c = PipelineCoordinator.start(folder, hostMap, o);
                 DispatchedModel<ChatGLMLanguageModel> first = c.loadModel(DispatchOptions.builder().build())) {
                PipelineProcessesTest.compare(folder, single.model(), first.model());
                c.shutdownWorkers();
                assertThat(worker.waitFor(30, TimeUnit.SECONDS)).isTrue();
            } catch (RuntimeException | AssertionError e) {
                throw new AssertionError(e.getMessage() + "\nworker logs:\n" + workers.allLogs(), e);
            }
        }
    }
}
