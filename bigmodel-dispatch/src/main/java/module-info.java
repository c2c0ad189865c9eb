/**
 * accelerate's big-model inference: budgets and device maps ({@code plan}), load and dispatch ({@code BigModel}),
 * accelerate's offload folder format ({@code offload}) and memory reports ({@code report}). Knows no model family.
 * The hooks that bring offloaded weights in ({@code hooks}) are internal.
 */
module io.github.bigmodel.dispatch {
    requires transitive io.github.bigmodel.core;
    requires transitive io.github.bigmodel.safetensors;
    requires com.fasterxml.jackson.databind;
    requires org.slf4j;
    // Available RAM for unset budgets (OperatingSystemMXBean).
    requires java.management;
    requires jdk.management;

    exports io.github.bigmodel.dispatch;
    exports io.github.bigmodel.dispatch.plan;
    exports io.github.bigmodel.dispatch.offload;
    exports io.github.bigmodel.dispatch.report;
}
