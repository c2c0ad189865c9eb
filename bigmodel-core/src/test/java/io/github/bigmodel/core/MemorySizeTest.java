package io.github.bigmodel.core;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import org.junit.jupiter.api.Test;

class MemorySizeTest {

    @Test
    void unitsAsAccelerate() {
        assertThat(MemorySize.parse("10GiB")).isEqualTo(10L << 30);
        assertThat(MemorySize.parse("10GB")).isEqualTo(10_000_000_000L);
        assertThat(MemorySize.parse("30GIB")).isEqualTo(30L << 30);
        assertThat(MemorySize.parse("500MB")).isEqualTo(500_000_000L);
        assertThat(MemorySize.parse("1.5 GiB")).isEqualTo(1_610_612_736L);
        assertThat(MemorySize.parse("1e3MB")).isEqualTo(1_000_000_000L);
        assertThat(MemorySize.parse("0.0125GiB")).isEqualTo((long) (0.0125 * (1L << 30)));
        assertThat(MemorySize.parse("7KiB")).isEqualTo(7168);
    }

    @Test
    void lowercaseBMeansBitsForDecimalUnits() {
        assertThat(MemorySize.parse("10Gb")).isEqualTo(1_250_000_000L);
        assertThat(MemorySize.parse("10gb")).isEqualTo(1_250_000_000L);
        assertThat(MemorySize.parse("7kb")).isEqualTo(875);
        assertThat(MemorySize.parse("10gib")).isEqualTo(10L << 30);
    }

    @Test
    void budgetsTakeIntegersAsBytes() {
        assertThat(MemorySize.parseBudget(1000)).isEqualTo(1000);
        assertThat(MemorySize.parseBudget(0L)).isZero();
        assertThat(MemorySize.parseBudget("2GiB")).isEqualTo(2L << 30);
    }

    @Test
    void rejectsBadStringsNamingThem() {
        for (String bad : new String[] {"10 potatoes", "1000", "10G", "5MBB", "-1GB", "GB", "", "1__0GB", "nanGB",
                "infGB", "1e400GB", "0x10GB", "10dGB"}) {
            assertThatThrownBy(() -> MemorySize.parse(bad)).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("`size` " + bad + " is not in a valid format");
        }
        assertThatThrownBy(() -> MemorySize.parseBudget(-5)).isInstanceOf(IllegalArgumentException.class);
        assertThatThrownBy(() -> MemorySize.parseBudget(1.5)).isInstanceOf(IllegalArgumentException.class);
    }

    @Test
    void formats() {
        assertThat(MemorySize.format(1536)).isEqualTo("1.50 KiB");
        assertThat(MemorySize.format(10L << 30)).isEqualTo("10.00 GiB");
        assertThat(MemorySize.format(12)).isEqualTo("12 B");
    }
}
