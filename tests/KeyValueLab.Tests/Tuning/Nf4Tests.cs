using KeyValueLab.Models;
using KeyValueLab.Tuning;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace KeyValueLab.Tests.Tuning;

public class Nf4Tests(ITestOutputHelper output)
{
    [Fact]
    public void QuantiseDequantiseOfKnownValuesFollowsTheCodeTable()
    {
        // One block of 64 values: absmax 2.0, so value/2 picks the nearest code value.
        var values = new float[70];
        values[0] = 2.0f;        // +1.0 → code 15
        values[1] = -2.0f;       // −1.0 → code 0
        values[2] = 0.0f;        // → code 7
        values[3] = 0.16f;       // 0.08 → nearest 0.0796 (code 8)
        values[4] = -0.4f;       // −0.2 → nearest −0.1848 (code 5)
        values[5] = 1.12f;       // 0.56 → nearest 0.5626 (code 13)
        values[64] = -3.0f;      // second (short) block of 6 values: absmax 3
        values[65] = 1.5f;       // 0.5 → nearest 0.4407 (code 12) or 0.5626 (13): 0.5 < (0.4407+0.5626)/2 = 0.5017 → 12
        using var input = tensor(values);
        using var q = Nf4Tensor.Quantize(input);
        var packed = q.Packed.data<byte>().ToArray();
        Assert.Equal(35, packed.Length);
        Assert.Equal(0xF0, packed[0]);   // element 0 in the high nibble, element 1 in the low one
        Assert.Equal(0x78, packed[1]);
        Assert.Equal(0x5D, packed[2]);
        Assert.Equal(0x77, packed[3]);
        Assert.Equal(0x0C, packed[32]);  // elements 64, 65
        Assert.Equal(2, q.QuantizedAbsmax.shape[0]);

        var absmax = q.Absmax().data<float>().ToArray();
        using var back = q.Dequantize();
        var restored = back.data<float>().ToArray();
        float[] nf4 = Nf4Codes.Nf4;
        Assert.Equal(nf4[15] * absmax[0], restored[0]);
        Assert.Equal(nf4[0] * absmax[0], restored[1]);
        Assert.Equal(0f, restored[2]);
        Assert.Equal(nf4[8] * absmax[0], restored[3]);
        Assert.Equal(nf4[5] * absmax[0], restored[4]);
        Assert.Equal(nf4[13] * absmax[0], restored[5]);
        Assert.Equal(nf4[0] * absmax[1], restored[64]);
        Assert.Equal(nf4[12] * absmax[1], restored[65]);
        // Double quantisation: the 8-bit absmax is within one dynamic-map step of the true one.
        Assert.InRange(absmax[0], 1.98f, 2.02f);
        Assert.InRange(absmax[1], 2.97f, 3.03f);
    }

    [Fact]
    public void QuantisingInChunksGivesTheBytesOfOnePassPerChunk()
    {
        // 1.5 M + 37 values: two chunks of 2^20 values, the second short and odd. Each piece of at most one chunk is quantised
        // in a single pass; the 4-bit codes of the whole must be those pieces' codes side by side (blocks are independent).
        using var scope = NewDisposeScope();
        long n = (1 << 20) + (1 << 19) + 37;
        var w = randn(n, generator: new Generator(21)) * 0.02;
        using var whole = Nf4Tensor.Quantize(w);
        using var first = Nf4Tensor.Quantize(w.narrow(0, 0, 1 << 20));
        using var second = Nf4Tensor.Quantize(w.narrow(0, 1 << 20, n - (1 << 20)));
        var bytes = whole.Packed.data<byte>().ToArray();
        Assert.Equal(first.Packed.data<byte>().ToArray(), bytes[..(1 << 19)]);
        Assert.Equal(second.Packed.data<byte>().ToArray(), bytes[(1 << 19)..]);
        // The scales: each block's dequantised absmax is within one dynamic-map step of the piece's own.
        var a = whole.Absmax();
        var b = cat([first.Absmax(), second.Absmax()]);
        Assert.True((a - b).abs().max().item<float>() < 0.02f * b.abs().max().item<float>());
    }

    [Theory]
    [InlineData(7, 37)]      // 259 weights: odd count, short last block, one decode task
    [InlineData(300, 257)]   // 1,205 blocks: several parallel decode tasks
    public void DequantizeEqualsTheTensorOpDecodingBitForBit(int rows, int cols)
    {
        using var scope = NewDisposeScope();
        var w = randn(rows, cols, generator: new Generator(11));
        using var q = Nf4Tensor.Quantize(w);
        long n = w.NumberOfElements;
        // Reference: unpack both nibbles with tensor ops, look the codes up and scale by the block's absmax (one fp32 product each).
        var bytes = q.Packed.to(ScalarType.Int64);
        var indices = stack([bytes.div(16, RoundingMode.floor), bytes.remainder(16)], 1).flatten().narrow(0, 0, n);
        var codes = tensor(Nf4Codes.Nf4).index_select(0, indices);
        var scales = q.Absmax().repeat_interleave(Nf4Tensor.BlockSize).narrow(0, 0, n);
        var expected = (codes * scales).view(rows, cols);
        var actual = q.Dequantize();
        Assert.Equal(ScalarType.Float32, actual.dtype);
        Assert.Equal(new long[] { rows, cols }, actual.shape);
        Assert.True(actual.equal(expected).all().item<bool>());
        Assert.True(q.Dequantize().equal(actual).all().item<bool>());  // and the same every call
    }

    [Fact]
    public void DynamicMapIsBitsandbytesSignedMap()
    {
        float[] map = Nf4Codes.DynamicSigned;
        Assert.Equal(256, map.Length);
        Assert.Equal(-1f, map[0], 0.01f);                 // −(0.1+1)/2·… the largest negative is close to −1
        Assert.Equal(1f, map[255]);
        Assert.Contains(0f, map);
        Assert.True(map.Zip(map.Skip(1)).All(p => p.First <= p.Second));
        Assert.Equal(127, map.Count(v => v < 0));
        Assert.Equal(0.55f * 1e-6f, map.Where(v => v > 0).Min(), 1e-12f);  // smallest magnitude: mean of 0.1 and 1 at 10⁻⁶
    }

    [Fact]
    public void RandomWeightsRoundTripWithinNf4ResolutionAndTakeUnderSixteenPercent()
    {
        using var w = randn(96, 200, generator: new Generator(3));
        using var q = Nf4Tensor.Quantize(w);
        using var back = q.Dequantize();
        Assert.Equal(w.shape, back.shape);
        // Largest NF4 step is −0.6962 − (−1) ≈ 0.304 of the absmax; error ≤ half of it (plus absmax rounding).
        var err = (back - w).abs();
        var blockMax = w.flatten().abs().view(-1, 64).amax([1L]).repeat_interleave(64);
        Assert.True((err.flatten() <= blockMax * 0.17f).all().item<bool>());
        double ratio = q.Bytes / (w.NumberOfElements * 4.0);
        output.WriteLine($"NF4 bytes/fp32 bytes = {ratio:F4}");
        Assert.True(ratio <= 0.16, $"ratio {ratio}");
    }

    [Fact]
    public void FourBitModelLogitsStayCloseAndMemoryShrinks()
    {
        using var loaded = ModelLoader.Create(SmallLlamaConfig, seed: 5);
        var model = loaded.Model;
        using var ids = tensor(new long[] { 1, 5, 9, 33, 2, 7, 100, 64 }, [1, 8]);
        using var noGrad = no_grad();
        using var reference = model.Forward(ids);
        using (var nf4 = Nf4Base.Quantize(model))
        {
            using var logits = model.Forward(ids);
            double maxErr = (logits - reference).abs().max().item<float>();
            double scale = reference.abs().max().item<float>();
            double ratio = nf4.Nf4Bytes / (double)nf4.Fp32Bytes;
            output.WriteLine($"4-bit vs fp32 logits: max |Δ| = {maxErr:G4} (max |logit| {scale:G4}); NF4/fp32 bytes = {ratio:F4} over {nf4.Modules.Count} linears");
            Assert.True(ratio <= 0.16);
            Assert.True(maxErr < 0.25 * scale, $"max error {maxErr}");
            Assert.True(maxErr > 0);  // really quantised
            // The weights are gone between calls: only placeholders remain.
            Assert.All(model.named_modules().Where(m => m.module is TorchSharp.Modules.Linear && m.name != "lm_head"),
                m => Assert.Equal(0, ((TorchSharp.Modules.Linear)m.module).weight!.NumberOfElements));
        }
        using var restored = model.Forward(ids);
        Assert.Equal(restored.shape, reference.shape);
    }

    internal const string SmallLlamaConfig = """
        {"model_type":"llama","vocab_size":128,"hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,
         "num_attention_heads":4,"num_key_value_heads":2,"max_position_embeddings":256,"rms_norm_eps":1e-5,
         "bos_token_id":1,"eos_token_id":2,"tie_word_embeddings":false}
        """;
}

/// <summary>NF4 at load (each linear quantised as it is read) against NF4 after an fp32 load, the bitsandbytes-checked path.</summary>
public class Nf4AtLoadTests(ITestOutputHelper output)
{
    /// <summary>Every fixture folder whose architecture this build supports (new architectures join by themselves).</summary>
    public static TheoryData<string> Fixtures()
    {
        var data = new TheoryData<string>();
        foreach (string dir in Directory.GetDirectories(TestData.Path("fixtures")).Order(StringComparer.Ordinal))
        {
            var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!;
            if (Architectures.Supported.Contains(config["model_type"]?.GetValue<string>())) data.Add(Path.GetFileName(dir));
        }
        return data;
    }

    /// <summary>The NF4 weight of a quantised linear, or the one tensor of a fused linear (Phi-3's gate_up_proj).</summary>
    private static Nf4Tensor Nf4Of(nn.Module module) =>
        module is FusedLinear fused ? Assert.IsType<Nf4Tensor>(fused.Frozen) : Nf4Base.Of((TorchSharp.Modules.Linear)module)!;

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void QuantisingAtLoadGivesTheBytesOfQuantisingAfterLoading(string fixture)
    {
        string path = TestData.Path("fixtures/" + fixture);
        using var atLoad = ModelLoader.Load(path, new LoadOptions { FourBit = true });
        using var after = ModelLoader.Load(path, new LoadOptions { DType = WeightDType.F32 });
        using var nf4 = Nf4Base.Quantize(after.Model);
        Assert.NotNull(atLoad.FourBit);
        Assert.Equal(nf4.Modules.Order(StringComparer.Ordinal), atLoad.FourBit!.Modules.Order(StringComparer.Ordinal));
        Assert.Equal(nf4.Nf4Bytes, atLoad.FourBit.Nf4Bytes);
        var modules = atLoad.Model.named_modules().ToDictionary(m => m.name, m => m.module);
        var reference = after.Model.named_modules().ToDictionary(m => m.name, m => m.module);
        foreach (string name in nf4.Modules)
        {
            var a = Nf4Of(modules[name]);
            var b = Nf4Of(reference[name]);
            Assert.Equal(b.Shape, a.Shape);
            Assert.Equal(b.Offset, a.Offset);
            Assert.Equal(b.Packed.data<byte>().ToArray(), a.Packed.data<byte>().ToArray());
            Assert.Equal(b.QuantizedAbsmax.data<byte>().ToArray(), a.QuantizedAbsmax.data<byte>().ToArray());
            Assert.Equal(b.NestedAbsmax.data<float>().ToArray(), a.NestedAbsmax.data<float>().ToArray());
        }
        // No linear but the head (lm_head, GPT-NeoX's embed_out) keeps a real weight.
        string? head = atLoad.Model.UnembeddingModule;
        Assert.True(head is null || head is "lm_head" or "embed_out", head);
        Assert.All(atLoad.Model.named_modules().Where(m => m.module is TorchSharp.Modules.Linear && m.name != head),
            m => Assert.Equal(0, ((TorchSharp.Modules.Linear)m.module).weight.shape[1]));
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var ids = tensor(new long[] { 1, 7, 42, 3, 9 }, [1, 5]);
        var x = after.Model.Forward(ids);
        var y = atLoad.Model.Forward(ids);
        output.WriteLine($"{fixture}: {nf4.Modules.Count} linears, {atLoad.FourBit.Nf4Bytes:N0} NF4 bytes; max |Δlogit| {(x - y).abs().max().item<float>():g3}");
        Assert.True(x.equal(y).all().item<bool>(), $"{fixture}: logits of NF4 at load differ from NF4 after load");
    }
}
