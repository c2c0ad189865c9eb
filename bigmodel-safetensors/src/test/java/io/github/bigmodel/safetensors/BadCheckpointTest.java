package io.github.bigmodel.safetensors;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.catchThrowableOfType;
import static org.junit.jupiter.api.DynamicTest.dynamicTest;

import io.github.bigmodel.core.DType;
import io.github.bigmodel.safetensors.CheckpointException.Reason;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.function.Function;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;
import org.junit.jupiter.api.io.TempDir;

/** Damaged files and indexes: each gives a typed CheckpointException naming the kind, the file and the tensor. */
class BadCheckpointTest {

    @TempDir
    Path dir;

    private static final String A8 = "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}";

    private static byte[] st(String json, int dataBytes) {
        return TestBytes.safetensors(json, new byte[dataBytes]);
    }

    /** A damaged file: its bytes, and what opening it must report. */
    private DynamicTest fileCase(String name, byte[] bytes, Reason reason, String tensor) {
        return dynamicTest(name, () -> {
            Path file = dir.resolve(name + ".safetensors");
            Files.write(file, bytes);
            expect(() -> SafetensorsFile.open(file), reason, file, tensor);
            expect(() -> Checkpoint.open(file), reason, file, tensor);
            // The pure parser gives the same verdict from the bytes alone.
            expect(() -> SafetensorsHeader.parse(file, bytes, bytes.length), reason, file, tensor);
        });
    }

    private static void expect(Runnable action, Reason reason, Path file, String tensor) {
        CheckpointException e = catchThrowableOfType(CheckpointException.class, action::run);
        assertThat(e).as("expected " + reason).isNotNull();
        assertThat(e.reason()).as(e.getMessage()).isEqualTo(reason);
        assertThat(e.file()).isEqualTo(file);
        assertThat(e.tensor()).as(e.getMessage()).isEqualTo(tensor);
        assertThat(e.getMessage()).contains(file.toString());
        if (tensor != null) {
            assertThat(e.getMessage()).contains("'" + tensor + "'");
        }
    }

    @TestFactory
    List<DynamicTest> damagedFiles() throws Exception {
        List<DynamicTest> cases = new ArrayList<>();
        // A well-formed two-tensor file, cut short: the header is intact, the data ends early.
        Path whole = dir.resolve("whole.safetensors");
        try (SafetensorsWriter w = SafetensorsWriter.create(whole, List.of(
                SafetensorsWriter.Entry.of("first", DType.FLOAT32, 4),
                SafetensorsWriter.Entry.of("second", DType.FLOAT32, 4)), Map.of())) {
            w.write("first", ByteBuffer.allocate(16));
            w.write("second", ByteBuffer.allocate(16));
        }
        byte[] good = Files.readAllBytes(whole);
        cases.add(fileCase("truncated", Arrays.copyOf(good, good.length - 4), Reason.TRUNCATED, "second"));
        cases.add(fileCase("truncated_in_header", Arrays.copyOf(good, 20), Reason.HEADER_LENGTH_OUT_OF_RANGE, null));
        cases.add(fileCase("shorter_than_8_bytes", new byte[] {1, 0, 0, 0, 0}, Reason.TRUNCATED, null));
        cases.add(fileCase("empty_file", new byte[0], Reason.TRUNCATED, null));
        cases.add(fileCase("header_length_past_end",
                TestBytes.withPrefix(1000, "{}".getBytes(StandardCharsets.UTF_8), new byte[0]),
                Reason.HEADER_LENGTH_OUT_OF_RANGE, null));
        cases.add(fileCase("header_over_100MB",
                TestBytes.withPrefix(100_000_001L, "{}".getBytes(StandardCharsets.UTF_8), new byte[0]),
                Reason.HEADER_TOO_LARGE, null));
        cases.add(fileCase("header_length_u64_max",
                TestBytes.withPrefix(-1L, "{}".getBytes(StandardCharsets.UTF_8), new byte[0]),
                Reason.HEADER_TOO_LARGE, null));
        cases.add(fileCase("invalid_json", st("{\"a\": {", 0), Reason.INVALID_JSON, null));
        cases.add(fileCase("empty_header", st("", 0), Reason.INVALID_JSON, null));
        cases.add(fileCase("trailing_text", st("{} x", 0), Reason.INVALID_JSON, null));
        cases.add(fileCase("invalid_utf8", TestBytes.withPrefix(4, new byte[] {'{', '}', (byte) 0xC3, ' '},
                new byte[0]), Reason.INVALID_JSON, null));
        cases.add(fileCase("non_object_json", st("[1,2]", 0), Reason.INVALID_JSON, null));
        cases.add(fileCase("entry_not_object", st("{\"a\":5}", 0), Reason.INVALID_JSON, "a"));
        cases.add(fileCase("metadata_not_strings", st("{\"__metadata__\":{\"k\":1}}", 0), Reason.INVALID_JSON, null));
        cases.add(fileCase("missing_dtype", st("{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8),
                Reason.INVALID_JSON, "a"));
        cases.add(fileCase("unknown_dtype", st("{\"a\":{\"dtype\":\"Q7\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8),
                Reason.UNKNOWN_DTYPE, "a"));
        cases.add(fileCase("offsets_past_data", st("{" + A8
                + ",\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[100,108]}}", 16),
                Reason.OFFSET_OUT_OF_RANGE, "b"));
        cases.add(fileCase("offsets_reversed", st("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", 8),
                Reason.OFFSET_OUT_OF_RANGE, "a"));
        cases.add(fileCase("offsets_negative", st("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", 8),
                Reason.OFFSET_OUT_OF_RANGE, "a"));
        cases.add(fileCase("offsets_beyond_u64", st("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],"
                + "\"data_offsets\":[18446744073709551615,18446744073709551616]}}", 8),
                Reason.OFFSET_OUT_OF_RANGE, "a"));
        cases.add(fileCase("overlapping_offsets", st("{" + A8
                + ",\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12), Reason.OVERLAP, "b"));
        cases.add(fileCase("size_shape_mismatch", st("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8),
                Reason.SIZE_MISMATCH, "a"));
        cases.add(fileCase("duplicate_name", st("{" + A8 + "," + A8 + "}", 8), Reason.DUPLICATE_NAME, "a"));
        cases.add(fileCase("hole_between_tensors", st("{" + A8
                + ",\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}", 20), Reason.HOLE, "b"));
        cases.add(fileCase("trailing_bytes", st("{" + A8 + "}", 12), Reason.HOLE, "a"));
        cases.add(fileCase("negative_shape", st("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,8]}}", 8),
                Reason.INVALID_SHAPE, "a"));
        cases.add(fileCase("fractional_shape", st("{\"a\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", 8),
                Reason.INVALID_JSON, "a"));
        cases.add(fileCase("huge_shape_numel_overflow", st("{\"a\":{\"dtype\":\"F32\","
                + "\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}", 8), Reason.SIZE_MISMATCH, "a"));
        cases.add(fileCase("shape_beyond_u64", st("{\"a\":{\"dtype\":\"F32\","
                + "\"shape\":[100000000000000000000000],\"data_offsets\":[0,8]}}", 8), Reason.SIZE_MISMATCH, "a"));
        return cases;
    }

    private DynamicTest indexCase(String name, Function<Path, Path> setup, Reason reason,
            Function<Path, Path> expectedFile, String tensor, boolean failsAtOpen) {
        return dynamicTest(name, () -> {
            Path folder = Files.createDirectory(dir.resolve(name));
            Path index = setup.apply(folder);
            Path file = expectedFile.apply(folder);
            if (failsAtOpen) {
                expect(() -> Checkpoint.open(folder), reason, file, tensor);
            } else {
                try (Checkpoint c = Checkpoint.open(index)) {
                    expect(() -> c.load(tensor), reason, file, tensor);
                    expect(c::tensors, reason, file, tensor);
                }
            }
        });
    }

    private static Path shard(Path folder, String fileName, String... tensors) {
        List<SafetensorsWriter.Entry> entries = new ArrayList<>();
        for (String t : tensors) {
            entries.add(SafetensorsWriter.Entry.of(t, DType.FLOAT32, 2));
        }
        Path p = folder.resolve(fileName);
        try (SafetensorsWriter w = SafetensorsWriter.create(p, entries, Map.of())) {
            for (String t : tensors) {
                w.write(t, ByteBuffer.allocate(8));
            }
        }
        return p;
    }

    private static Path writeText(Path p, String text) {
        try {
            return Files.writeString(p, text);
        } catch (java.io.IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }

    @TestFactory
    List<DynamicTest> damagedIndexes() {
        String hf = "model.safetensors.index.json";
        List<DynamicTest> cases = new ArrayList<>();
        cases.add(indexCase("index_missing_shard", f -> {
            shard(f, "s1.safetensors", "a");
            return writeText(f.resolve(hf), "{\"metadata\":{},\"weight_map\":{\"a\":\"s1.safetensors\","
                    + "\"b\":\"s2.safetensors\"}}");
        }, Reason.MISSING_SHARD, f -> f.resolve("s2.safetensors").toAbsolutePath(), "b", true));
        cases.add(indexCase("index_tensor_missing_from_shard", f -> {
            shard(f, "s1.safetensors", "a");
            return writeText(f.resolve(hf), "{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\"}}");
        }, Reason.MISSING_TENSOR, f -> f.resolve("s1.safetensors").toAbsolutePath(), "b", false));
        cases.add(indexCase("flat_index_tensor_missing_from_shard", f -> {
            shard(f, "first_state_dict.safetensors", "linear1.weight");
            return writeText(f.resolve("index.json"), "{\"linear1.weight\":\"first_state_dict.safetensors\","
                    + "\"linear2.weight\":\"first_state_dict.safetensors\"}");
        }, Reason.MISSING_TENSOR, f -> f.resolve("first_state_dict.safetensors").toAbsolutePath(),
                "linear2.weight", false));
        cases.add(indexCase("index_invalid_json", f -> writeText(f.resolve(hf), "{\"weight_map\": {"),
                Reason.INVALID_JSON, f -> f.resolve(hf), null, true));
        cases.add(indexCase("index_not_object", f -> writeText(f.resolve(hf), "[\"a\"]"),
                Reason.INVALID_JSON, f -> f.resolve(hf), null, true));
        cases.add(indexCase("index_weight_map_not_object", f -> writeText(f.resolve(hf), "{\"weight_map\": 3}"),
                Reason.INVALID_JSON, f -> f.resolve(hf), null, true));
        cases.add(indexCase("index_value_not_file_name",
                f -> writeText(f.resolve(hf), "{\"weight_map\": {\"a\": 3}}"),
                Reason.INVALID_JSON, f -> f.resolve(hf), "a", true));
        cases.add(indexCase("flat_index_wrong_structure",
                f -> writeText(f.resolve("index.json"), "{\"a\": {\"dtype\": \"F32\"}}"),
                Reason.INVALID_JSON, f -> f.resolve("index.json"), "a", true));
        cases.add(indexCase("index_escaping_folder",
                f -> writeText(f.resolve(hf), "{\"weight_map\": {\"a\": \"../x.safetensors\"}}"),
                Reason.INVALID_JSON, f -> f.resolve(hf), "a", true));
        // Found by ShardIndexMutationTest: a shard name the file system cannot hold (a NUL, a lone surrogate) gave an
        // InvalidPathException instead of a CheckpointException.
        cases.add(indexCase("index_shard_name_with_nul",
                f -> writeText(f.resolve(hf), "{\"weight_map\": {\"a\": \"s\\u0000.safetensors\"}}"),
                Reason.INVALID_JSON, f -> f.resolve(hf), "a", true));
        cases.add(indexCase("index_shard_name_with_lone_surrogate",
                f -> writeText(f.resolve(hf), "{\"weight_map\": {\"a\": \"s\\ud800.safetensors\"}}"),
                Reason.INVALID_JSON, f -> f.resolve(hf), "a", true));
        cases.add(indexCase("empty_directory", f -> f, Reason.UNKNOWN_FORMAT, f -> f, null, true));
        cases.add(indexCase("torch_bin_not_linked", f -> writeText(f.resolve("pytorch_model.bin"), "x"),
                Reason.UNKNOWN_FORMAT, f -> f.resolve("pytorch_model.bin"), null, true));
        return cases;
    }
}
