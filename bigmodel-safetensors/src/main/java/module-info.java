/**
 * Checkpoint files: safetensors (mapped, lazy, zero-copy), torch {@code .bin} zips read without executing pickles,
 * and shard index files. Knows no devices. The torch reader is internal: {@code Checkpoint} opens every form.
 */
module io.github.bigmodel.safetensors {
    requires transitive io.github.bigmodel.core;
    requires com.fasterxml.jackson.databind;
    requires org.slf4j;

    exports io.github.bigmodel.safetensors;
}
