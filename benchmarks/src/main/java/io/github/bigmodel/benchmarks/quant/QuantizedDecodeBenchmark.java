package io.github.bigmodel.benchmarks.quant;

import io.github.bigmodel.chatglm.ChatGLMConfig;
import io.github.bigmodel.chatglm.model.ChatGLMLanguageModel;
import io.github.bigmodel.chatglm.model.ForwardInput;
import io.github.bigmodel.chatglm.model.KvCache;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Device;
import io.github.bigmodel.core.quant.Precision;
import java.util.concurrent.TimeUnit;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;

/**
 * Decoding tokens/s on the CPU of a ChatGLM3-shaped model at real width (hidden 4096, 32 heads, 2 kv groups, ffn
 * 13696) with a few layers and random weights, its block linears held in bf16, int8 or int4. The vocabulary is
 * cut to 4096 so that the output layer (bf16 in every case) does not hide the blocks. One operation is one new
 * token through the KV cache.
 *
 * <pre>{@code
 * java -jar benchmarks/target/benchmarks.jar QuantizedDecodeBenchmark -f 1 -wi 2 -i 3
 * }</pre>
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.Throughput)
@OutputTimeUnit(TimeUnit.SECONDS)
// PointerScope blocks are used for what they release on close.
@SuppressWarnings("try")
public class QuantizedDecodeBenchmark {

    @Param({"bf16", "int8", "int4"})
    public String precision;

    @Param({"2"})
    public int layers;

    private ChatGLMLanguageModel model;
    private KvCache cache;
    private long position;

    @Setup(Level.Trial)
    public void load() {
        ChatGLMConfig config = shaped(layers);
        model = ChatGLMLanguageModel.create(config, DType.BFLOAT16);
        Precision p = Precision.parse(precision);
        torch.manual_seed(1);
        // Random weights made one tensor at a time, as a checkpoint would hand them over.
        model.loadWeights(name -> randomLike(model.tensor(name).shape()), n -> Device.CPU, DType.BFLOAT16,
                device -> p);
        cache = model.newCache(1, 256);
    }

    static ChatGLMConfig shaped(int layers) {
        return ChatGLMConfig.fromJsonString("{\"padded_vocab_size\": 4096, \"hidden_size\": 4096,"
                + " \"num_layers\": " + layers + ", \"num_attention_heads\": 32, \"kv_channels\": 128,"
                + " \"ffn_hidden_size\": 13696, \"multi_query_attention\": true, \"multi_query_group_num\": 2,"
                + " \"seq_length\": 8192, \"rmsnorm\": true, \"add_qkv_bias\": true, \"add_bias_linear\": false,"
                + " \"post_layer_norm\": true, \"apply_residual_connection_post_layernorm\": false,"
                + " \"torch_dtype\": \"bfloat16\"}");
    }

    private static Tensor randomLike(long[] shape) {
        return torch.randn(shape).mul(new Scalar(0.02));
    }

    @Benchmark
    public long decodeOneToken() {
        if (cache.length() >= cache.capacity()) {
            cache.reset();
        }
        try (PointerScope scope = new PointerScope()) {
            long[][] ids = {{(position * 31 + 7) % 4000}};
            Tensor positions = torch.full(new long[] {1, 1}, new Scalar(cache.length()),
                    new org.bytedeco.pytorch.TensorOptions(torch.ScalarType.Long));
            Tensor logits = model.forward(ForwardInput.builder(ids).cache(cache).positionIds(positions)
                    .lastLogitOnly(true).build());
            position++;
            return logits.argmax().item_long();
        }
    }

    @TearDown(Level.Trial)
    public void release() {
        cache.close();
        model.toMeta();
    }
}
