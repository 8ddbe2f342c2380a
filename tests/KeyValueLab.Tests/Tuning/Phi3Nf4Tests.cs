using KeyValueLab.Models;
using KeyValueLab.Tests.Models;
using KeyValueLab.Tuning;
using static TorchSharp.torch;

namespace KeyValueLab.Tests.Tuning;

/// <summary>
/// Phi-3's fused <c>gate_up_proj</c> under <c>--4bit</c>: quantised at load as one NF4 tensor (as bitsandbytes quantises the one
/// <c>nn.Linear</c> that holds it), its gate and up parts computing with row views of it; no fp32 copy of it stays.
/// </summary>
/// <remarks>
/// Two checkpoints: the <c>tiny_phi3</c> fixture (hidden 32, inner 48: each half is 24 whole blocks of 64) and a synthetic
/// one (hidden 40, inner 50: each half is 31.25 blocks, so the up part starts inside a block).
/// </remarks>
public sealed class Phi3Nf4Tests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private string Checkpoint(string which)
    {
        if (which == "fixture") return TestData.Path("fixtures/tiny_phi3");
        string folder = Path.Combine(_dir.Path, "phi3");
        if (Directory.Exists(folder)) return folder;
        const string config = """
            { "model_type": "phi3", "hidden_size": 40, "intermediate_size": 50, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "vocab_size": 97, "max_position_embeddings": 32, "tie_word_embeddings": false,
              "bos_token_id": 1, "eos_token_id": 2, "initializer_range": 0.2 }
            """;
        using var created = ModelLoader.Create(config, seed: 11);
        created.Save(folder);
        return folder;
    }

    private static List<(string Name, FusedLinear Module)> Fused(CausalLM model) =>
        [.. model.named_modules().Where(m => m.module is FusedLinear).Select(m => (m.name, (FusedLinear)m.module))];

    [Theory]
    [InlineData("fixture")]
    [InlineData("synthetic")]
    public void FusedWeightIsNf4AtLoadWithTheBytesOfQuantisingItAfterLoading(string which)
    {
        string path = Checkpoint(which);
        using var wide = ModelLoader.Load(path, new LoadOptions { DType = WeightDType.F32 });
        using var nf4 = ModelLoader.Load(path, new LoadOptions { FourBit = true });
        var wideFused = Fused(wide.Model).ToDictionary(f => f.Name, f => f.Module);
        var fused = Fused(nf4.Model);
        Assert.Equal(2, fused.Count);
        foreach (var (name, module) in fused)
        {
            var whole = Assert.IsType<Nf4Tensor>(module.Frozen);
            Assert.Equal(0, module.weight.NumberOfElements);  // no fp32 copy left
            Assert.Contains(name, nf4.FourBit!.Modules);
            using var expected = Nf4Tensor.Quantize(wideFused[name].weight);
            Assert.True(expected.Packed.equal(whole.Packed).all().item<bool>(), $"{name}: packed bytes");
            Assert.True(expected.QuantizedAbsmax.equal(whole.QuantizedAbsmax).all().item<bool>(), $"{name}: block scales");
            Assert.True(expected.NestedAbsmax.equal(whole.NestedAbsmax).all().item<bool>(), $"{name}: nested scales");
            Assert.Equal(expected.Offset, whole.Offset);

            // The keys (gate, up) are exactly their rows of the dequantised fused matrix.
            using var dequantised = whole.Dequantize();
            long offset = 0;
            foreach (var (part, linear) in module.Parts)
            {
                using var key = FrozenLinear.Weight(linear);
                using var rows = dequantised.narrow(0, offset, key.shape[0]);
                Assert.True(rows.equal(key).all().item<bool>(), $"{name}.{part}: rows {offset}..");
                offset += key.shape[0];
            }
            Assert.Equal(dequantised.shape[0], offset);
        }
    }

    [Theory]
    [InlineData("fixture")]
    [InlineData("synthetic")]
    public void LogitsEqualThoseOfTheDequantisedWeights(string which)
    {
        string path = Checkpoint(which);
        using var nf4 = ModelLoader.Load(path, new LoadOptions { FourBit = true });
        using var reference = ModelLoader.Load(path, new LoadOptions { DType = WeightDType.F32 });
        using (no_grad())
        {
            // The reference: every quantised matrix replaced by its dequantised fp32 copy, in a plain fp32 model.
            var plain = reference.Model.named_modules().Where(m => m.module is TorchSharp.Modules.Linear).ToDictionary(m => m.name, m => (TorchSharp.Modules.Linear)m.module);
            var fusedReference = Fused(reference.Model).ToDictionary(f => f.Name, f => f.Module);
            foreach (var (name, module) in nf4.Model.named_modules())
            {
                if (module is TorchSharp.Modules.Linear linear && Nf4Base.Of(linear) is { } w)
                    using (var d = w.Dequantize()) plain[name].weight!.copy_(d);
                if (module is FusedLinear { Frozen: Nf4Tensor whole })
                    using (var d = whole.Dequantize()) fusedReference[name].weight.copy_(d);  // reaches the parts' views
            }
        }
        var ids = tensor(new long[] { 5, 17, 33, 2, 71, 9, 40, 12 }, [1, 8]);
        using var expected = reference.Model.Forward(ids);
        using var actual = nf4.Model.Forward(ids);
        TensorAssert.CloseFp32(expected, actual, $"{which} logits");
    }

    [Theory]
    [InlineData("fixture")]
    [InlineData("synthetic")]
    public void EstimateIsTheResidentBytesOfTheLoadedModel(string which)
    {
        string path = Checkpoint(which);
        var options = new LoadOptions { FourBit = true };
        long estimate = ModelLoader.EstimateBytes(path, options);
        using var nf4 = ModelLoader.Load(path, options);
        var model = nf4.Model;
        long fp32 = model.parameters().Sum(p => p.NumberOfElements * 4);  // placeholders have no elements
        long largest = FrozenLinear.FrozenIn(model).Select(f => ((Nf4Tensor)FrozenLinear.Of(f.Linear)!).Count)
            .Concat(Fused(model).Select(f => ((Nf4Tensor)f.Module.Frozen!).Count)).Max();
        Assert.Equal(ModelLoader.RuntimeBytes + 16 * largest + fp32 + nf4.FourBit!.Nf4Bytes, estimate);
        Assert.Equal(FrozenLinear.FrozenIn(model).Sum(f => FrozenLinear.Of(f.Linear)!.Bytes) + Fused(model).Sum(f => f.Module.Frozen!.Bytes),
            nf4.FourBit.Nf4Bytes);
    }
}
