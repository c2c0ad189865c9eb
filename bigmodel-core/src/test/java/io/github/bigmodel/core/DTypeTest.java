package io.github.bigmodel.core;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;

class DTypeTest {

    @Test
    void sizes() {
        assertThat(DType.FLOAT32.bytesPerElement()).isEqualTo(4.0);
        assertThat(DType.FLOAT16.bytesPerElement()).isEqualTo(2.0);
        assertThat(DType.BFLOAT16.bytesPerElement()).isEqualTo(2.0);
        assertThat(DType.INT8.bytesPerElement()).isEqualTo(1.0);
        assertThat(DType.INT4.bytesPerElement()).isEqualTo(0.5);
        assertThat(DType.INT4.bytesFor(7)).isEqualTo(4);
        assertThat(DType.FLOAT64.bytesFor(3)).isEqualTo(24);
        // Sizes that do not fit are refused, not wrapped into negative or tiny byte counts.
        assertThatThrownBy(() -> DType.FLOAT32.bytesFor(Long.MAX_VALUE / 16)).isInstanceOf(ArithmeticException.class);
        assertThatThrownBy(() -> DType.FLOAT32.bytesFor(-1)).isInstanceOf(IllegalArgumentException.class);
    }

    @Test
    void safetensorsNamesRoundTrip() {
        for (DType d : DType.values()) {
            if (d != DType.INT4) {
                assertThat(DType.fromSafetensors(d.safetensorsName())).isEqualTo(d);
            }
        }
        assertThatThrownBy(() -> DType.fromSafetensors("F17")).hasMessageContaining("'F17'");
        assertThatThrownBy(() -> DType.fromSafetensors("I4")).isInstanceOf(IllegalArgumentException.class);
    }

    @Test
    void parsesUserNames() {
        assertThat(DType.parse("torch.float16")).isEqualTo(DType.FLOAT16);
        assertThat(DType.parse("fp16")).isEqualTo(DType.FLOAT16);
        assertThat(DType.parse("bf16")).isEqualTo(DType.BFLOAT16);
        assertThat(DType.parse("float32")).isEqualTo(DType.FLOAT32);
        assertThat(DType.parse("int4")).isEqualTo(DType.INT4);
        assertThat(DType.parse("BF16")).isEqualTo(DType.BFLOAT16);
        assertThatThrownBy(() -> DType.parse("float17")).hasMessageContaining("'float17'");
    }

    @Test
    void mapsToLibtorchScalarTypes() {
        assertThat(DType.FLOAT32.scalarType()).isEqualTo(ScalarType.Float);
        assertThat(DType.BFLOAT16.scalarType()).isEqualTo(ScalarType.BFloat16);
        assertThat(DType.INT8.scalarType()).isEqualTo(ScalarType.Char);
        for (DType d : DType.values()) {
            if (d.hasScalarType()) {
                assertThat(DType.of(d.scalarType())).isEqualTo(d);
            }
        }
        assertThatThrownBy(DType.INT4::scalarType).isInstanceOf(UnsupportedOperationException.class);
    }
}
