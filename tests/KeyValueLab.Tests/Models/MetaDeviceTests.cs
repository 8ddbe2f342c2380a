using KeyValueLab.Models;
using static TorchSharp.torch;

namespace KeyValueLab.Tests.Models;

/// <summary>
/// Loading onto another device (TorchSharp's <c>meta</c>: shapes, no storage) puts every parameter and every frozen weight
/// there, so nothing the loader creates stays on the CPU.
/// </summary>
/// <remarks>
/// A forward pass on <c>meta</c> is not possible with libtorch 2.10's CPU build: it has no meta kernel for
/// <c>index_select</c> (the embedding lookup), <c>max</c>, <c>logical_and</c>/<c>logical_not</c> (the attention mask),
/// <c>where.self</c> (inside scaled_dot_product_attention) or <c>native_batch_norm</c> (reached by layer_norm); see docs/performance.md.
/// </remarks>
public class MetaDeviceTests
{
    public static TheoryData<string, bool> Cases => new()
    {
        { "tiny_gpt2_bf16_sharded", false }, { "tiny_gptj_f16", false }, { "tiny_llama_gqa", false }, { "tiny_gptj_f16", true },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void LoadingOntoMetaPutsEveryTensorThere(string fixture, bool bf16)
    {
        using var loaded = ModelLoader.Load(TestData.Path("fixtures/" + fixture), new LoadOptions { Device = META, DType = bf16 ? WeightDType.BF16 : WeightDType.Stored });
        Assert.All(loaded.Model.parameters(), p => Assert.Equal(TorchSharp.DeviceType.META, p.device_type));
        var frozen = FrozenLinear.FrozenIn(loaded.Model).ToList();
        Assert.Equal(fixture != "tiny_llama_gqa", frozen.Count > 0);
        Assert.All(frozen, f => Assert.Equal(TorchSharp.DeviceType.META, ((StoredWeight)FrozenLinear.Of(f.Linear)!).Stored.device_type));
    }
}
