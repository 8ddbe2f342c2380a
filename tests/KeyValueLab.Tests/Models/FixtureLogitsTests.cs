using KeyValueLab.Models;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace KeyValueLab.Tests.Models;

/// <summary>Every fixture loads and reproduces the reference implementation's logits at every position.</summary>
public class FixtureLogitsTests(ITestOutputHelper output)
{
    private const double Tolerance = 1e-4;

    public static TheoryData<string> Fixtures => new(ReferenceLogits.Fixtures);

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void LogitsMatchReferenceAtEveryPosition(string fixture)
    {
        var reference = ReferenceLogits.For(fixture);
        using var loaded = ModelLoader.Load(TestData.Path("fixtures/" + fixture));
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var logits = loaded.Model.Forward(reference.InputTensor());
        Assert.Equal(new long[] { reference.Batch, reference.Positions, reference.Vocab }, logits.shape);
        var diffs = reference.MaxDiffPerPosition(logits);
        output.WriteLine($"{fixture}: LOGITS maxdiff per position {string.Join(" ", diffs.Select(d => d.ToString("0.0e0")))}");
        for (int t = 0; t < diffs.Length; t++)
            Assert.True(diffs[t] <= Tolerance, $"{fixture} sequence {t / reference.Positions} position {t % reference.Positions}: maxdiff {diffs[t]:g3} > {Tolerance}");
    }

    /// <summary>
    /// The batch fixtures again, decoded one token at a time through the KV cache (both sequences together):
    /// every position's logits must still match the reference, so cached decoding (and, for Mistral and Gemma 2,
    /// the sliding window over cached keys) is checked against the oracle itself, not only against our own forward.
    /// </summary>
    [Theory]
    [MemberData(nameof(BatchFixtures))]
    public void CachedDecodingMatchesReferenceAtEveryPosition(string fixture)
    {
        var reference = ReferenceLogits.For(fixture);
        using var loaded = ModelLoader.Load(TestData.Path("fixtures/" + fixture));
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var ids = reference.InputTensor();
        using var cache = loaded.Model.NewCache();
        var steps = Enumerable.Range(0, reference.Positions).Select(t => loaded.Model.Forward(ids.narrow(1, t, 1), cache: cache)).ToList();
        var diffs = reference.MaxDiffPerPosition(cat(steps, 1));
        output.WriteLine($"{fixture}: CACHED LOGITS maxdiff per position {string.Join(" ", diffs.Select(d => d.ToString("0.0e0")))}");
        for (int t = 0; t < diffs.Length; t++)
            Assert.True(diffs[t] <= Tolerance, $"{fixture} cached, sequence {t / reference.Positions} position {t % reference.Positions}: maxdiff {diffs[t]:g3} > {Tolerance}");
    }

    public static TheoryData<string> BatchFixtures => new(ReferenceLogits.BatchFixtures);

    [Fact]
    public void Llama2cBinGivesRunCLogits()
    {
        var reference = ReferenceLogits.Stories260K();
        using var loaded = ModelLoader.Load(TestData.Path("llama2c_stories260K/stories260K.bin"));
        Assert.Equal("llama", loaded.Config.ModelType);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var diffs = reference.MaxDiffPerPosition(loaded.Model.Forward(reference.InputTensor()));
        output.WriteLine($"stories260K.bin: LOGITS maxdiff per position {string.Join(" ", diffs.Select(d => d.ToString("0.0e0")))}");
        Assert.All(diffs, d => Assert.True(d <= Tolerance, $"maxdiff {d:g3}"));
    }

    [Fact]
    public void Llama2cBinAndConvertedFolderHoldTheSameWeights()
    {
        using var bin = ModelLoader.Load(TestData.Path("llama2c_stories260K/stories260K.bin"));
        using var hf = ModelLoader.Load(TestData.Path("fixtures/stories260K_hf"));
        var a = bin.Model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        var b = hf.Model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        Assert.Equal(a.Keys.Order(), b.Keys.Order());
        foreach (var (name, p) in a) Assert.True(p.eq(b[name]).all().item<bool>(), name);
    }
}
