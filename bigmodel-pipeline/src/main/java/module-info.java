/**
 * A ChatGLM model split across processes (and hosts) as pipeline stages over libtorch's c10d: a TCPStore for the
 * rendezvous and ProcessGroupGloo for the hidden states. {@code PipelineWorker} serves one stage,
 * {@code PipelineCoordinator} drives generation on rank 0. The wire protocol and the Gloo group
 * ({@code internal}) are not exported.
 */
module io.github.bigmodel.pipeline {
    requires transitive io.github.bigmodel.chatglm;
    requires com.fasterxml.jackson.databind;
    requires org.slf4j;

    exports io.github.bigmodel.pipeline;
}
