/**
 * Devices, dtypes, sizes, the module tree and empty init, and int8/int4 weight layouts: what every other bigmodel
 * module builds on. Knows no files, device maps or model families.
 */
module io.github.bigmodel.core {
    requires transitive org.bytedeco.javacpp;
    requires transitive org.bytedeco.pytorch;
    requires org.slf4j;

    exports io.github.bigmodel.core;
    exports io.github.bigmodel.core.quant;
    // the layer operations' native forms, for the model families' modeling only
    exports io.github.bigmodel.core.kernel to io.github.bigmodel.chatglm;
}
