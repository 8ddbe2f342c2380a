using KeyValueLab.Editing;
using KeyValueLab.Memory;
using KeyValueLab.Models;
using KeyValueLab.Tests.Models;
using KeyValueLab.Tests.Tuning;
using KeyValueLab.Tokenization;

namespace KeyValueLab.Tests.Editing;

/// <summary>Statistics over a text corpus run only the layers they read.</summary>
public sealed class SecondMomentsTests : IDisposable
{
    private readonly TempDir _cache = new();
    public void Dispose() => _cache.Dispose();

    [Fact]
    public void TextCorpusPassStopsAfterTheHighestLayerReadAndMatchesRomesMoment()
    {
        using var loaded = ModelLoader.Load(ReferenceFixtures.Path("editors/tiny_gpt2"));
        var tokenizer = TokenizerLoader.Load(ReferenceFixtures.Path("editors/tiny_gpt2"));
        var model = loaded.Model;
        var memory = new FfnMemory(model);
        var point = new MomentPoint(0, "value-input", HookPoint.Linear(memory.ValuesName(0), memory.ValueModule(0)));
        int read = 0, above = 0;
        using var counted = HookPoint.BlockOutput(model, 0).Install((_, output) => { read++; return output; });
        using var after = HookPoint.BlockOutput(model, 1).Install((_, output) => { above++; return output; });

        var stats = new SecondMoments(ReferenceFixtures.Path("editors/corpus.txt"), 48, 32, _cache.Path);
        using var moment = stats.Get(model, tokenizer, [point])[0];

        Assert.Equal(3, read);    // 48 lines, 16 a batch
        Assert.Equal(0, above);   // nothing above layer 0 ran
        // ROME's own second moment of the same inputs over the full model (Fixtures/reference/editors/README.md).
        var (sum, count) = LayerStatsFile.Read(ReferenceFixtures.Path("editors/layer_stats/transformer.h.0.mlp.c_proj_float32_mom2_48.npz"));
        using (sum) TensorAssert.CloseFp32(sum / count, moment, "E[xxᵀ] value-input L0");

        // The model is whole again afterwards: a forward pass runs every layer.
        using var ids = TorchSharp.torch.tensor(new long[] { 1, 2, 3 }).unsqueeze(0);
        using var logits = model.Forward(ids);
        Assert.Equal(1, above);
    }
}
