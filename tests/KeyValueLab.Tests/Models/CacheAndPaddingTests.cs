using KeyValueLab.Models;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace KeyValueLab.Tests.Models;

/// <summary>Incremental decoding with the KV cache and padded batches give the same logits as plain forward passes.</summary>
public class CacheAndPaddingTests(ITestOutputHelper output)
{
    public static TheoryData<string> Models => new([.. ArchitectureFixtures.All, "stories260K_hf"]);

    private static readonly long[] RowA = [5, 17, 99, 3, 42, 42, 7, 11];
    private static readonly long[] RowB = [8, 300, 2, 64, 19];
    private const long Pad = 0;

    private static LoadedModel Load(string fixture) => ModelLoader.Load(TestData.Path("fixtures/" + fixture));

    private static Tensor Row(long[] ids) => tensor(ids, [1, ids.Length]);

    [Theory]
    [MemberData(nameof(Models))]
    public void CachedDecodingEqualsOneForwardPass(string fixture)
    {
        using var loaded = Load(fixture);
        var model = loaded.Model;
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var ids = Row(RowA);
        var full = model.Forward(ids);  // [1, 8, V]

        // A 3-token prompt, then a 2-token chunk (masked path with a past), then one token at a time.
        using var cache = model.NewCache();
        var parts = new List<Tensor> { model.Forward(ids.narrow(1, 0, 3), cache: cache), model.Forward(ids.narrow(1, 3, 2), cache: cache) };
        for (int t = 5; t < RowA.Length; t++) parts.Add(model.Forward(ids.narrow(1, t, 1), cache: cache));
        Assert.Equal(RowA.Length, cache.Length);
        double diff = TensorAssert.MaxDiff(full, cat(parts, 1)), tolerance = Fp32.Tolerance(full);
        output.WriteLine($"{fixture}: CACHE maxdiff {diff:g3} (bound {tolerance:g3})");
        Assert.True(diff <= tolerance, $"cached vs uncached maxdiff {diff:g3} > {tolerance:g3}");
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void RightPaddedBatchEqualsEachRowAlone(string fixture)
    {
        using var loaded = Load(fixture);
        var model = loaded.Model;
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        int pad = RowA.Length - RowB.Length;
        var ids = tensor(RowA.Concat(RowB).Concat(Enumerable.Repeat(Pad, pad)).ToArray(), [2, RowA.Length]);
        var mask = tensor(Enumerable.Repeat(1L, RowA.Length + RowB.Length).Concat(Enumerable.Repeat(0L, pad)).ToArray(), [2, RowA.Length]);
        var batch = model.Forward(ids, mask);
        double a = TensorAssert.MaxDiff(model.Forward(Row(RowA)), batch.narrow(0, 0, 1));
        double b = TensorAssert.MaxDiff(model.Forward(Row(RowB)), batch.narrow(0, 1, 1).narrow(1, 0, RowB.Length));
        double tolerance = Fp32.Tolerance(batch);
        output.WriteLine($"{fixture}: RIGHT PADDING maxdiff row A {a:g3} row B {b:g3} (bound {tolerance:g3})");
        Assert.True(Math.Max(a, b) <= tolerance, $"right padding maxdiff {a:g3} / {b:g3} > {tolerance:g3}");
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void LeftPaddedBatchEqualsEachRowAlone(string fixture)
    {
        using var loaded = Load(fixture);
        var model = loaded.Model;
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        int pad = RowA.Length - RowB.Length;
        var ids = tensor(RowA.Concat(Enumerable.Repeat(Pad, pad)).Concat(RowB).ToArray(), [2, RowA.Length]);
        var mask = tensor(Enumerable.Repeat(1L, RowA.Length).Concat(Enumerable.Repeat(0L, pad)).Concat(Enumerable.Repeat(1L, RowB.Length)).ToArray(), [2, RowA.Length]);
        // Positions default to the count of real tokens before each one, so row B starts at 0.
        var batch = model.Forward(ids, mask);
        double a = TensorAssert.MaxDiff(model.Forward(Row(RowA)), batch.narrow(0, 0, 1));
        double b = TensorAssert.MaxDiff(model.Forward(Row(RowB)), batch.narrow(0, 1, 1).narrow(1, pad, RowB.Length));
        double tolerance = Fp32.Tolerance(batch);
        output.WriteLine($"{fixture}: LEFT PADDING maxdiff row A {a:g3} row B {b:g3} (bound {tolerance:g3})");
        Assert.True(Math.Max(a, b) <= tolerance, $"left padding maxdiff {a:g3} / {b:g3} > {tolerance:g3}");

        // Explicit positions give the same result as the derived ones.
        var positions = tensor(Enumerable.Range(0, RowA.Length).Select(i => (long)i).Concat(Enumerable.Repeat(0L, pad)).Concat(Enumerable.Range(0, RowB.Length).Select(i => (long)i)).ToArray(), [2, RowA.Length]);
        Assert.Equal(0.0, TensorAssert.MaxDiff(batch, model.Forward(ids, mask, positions)));
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void LeftPaddedCachedDecodingEqualsEachRowAlone(string fixture)
    {
        using var loaded = Load(fixture);
        var model = loaded.Model;
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        // Prompts: A[..5] and B[..2] left-padded to 5; then both continue with 3 more of their tokens.
        int promptA = 5, promptB = 2, steps = 3, pad = promptA - promptB;
        var prompt = tensor(RowA.Take(promptA).Concat(Enumerable.Repeat(Pad, pad)).Concat(RowB.Take(promptB)).ToArray(), [2, promptA]);
        var mask = tensor(Enumerable.Repeat(1L, promptA).Concat(Enumerable.Repeat(0L, pad)).Concat(Enumerable.Repeat(1L, promptB)).ToArray(), [2, promptA]);
        using var cache = model.NewCache();
        var last = model.Forward(prompt, mask, cache: cache).narrow(1, promptA - 1, 1);
        var stepsA = new List<Tensor> { last.narrow(0, 0, 1) };
        var stepsB = new List<Tensor> { last.narrow(0, 1, 1) };
        for (int s = 0; s < steps; s++)
        {
            var next = tensor(new[] { RowA[promptA + s], RowB[promptB + s] }, [2, 1]);
            mask = cat([mask, ones(2, 1, dtype: ScalarType.Int64)], 1);
            var logits = model.Forward(next, mask, cache: cache);
            stepsA.Add(logits.narrow(0, 0, 1));
            stepsB.Add(logits.narrow(0, 1, 1));
        }
        var aloneA = model.Forward(Row(RowA.Take(promptA + steps).ToArray())).narrow(1, promptA - 1, steps + 1);
        var aloneB = model.Forward(Row(RowB.Take(promptB + steps).ToArray())).narrow(1, promptB - 1, steps + 1);
        double a = TensorAssert.MaxDiff(aloneA, cat(stepsA, 1)), b = TensorAssert.MaxDiff(aloneB, cat(stepsB, 1));
        double tolerance = Math.Max(Fp32.Tolerance(aloneA), Fp32.Tolerance(aloneB));
        output.WriteLine($"{fixture}: LEFT PADDING + CACHE maxdiff row A {a:g3} row B {b:g3} (bound {tolerance:g3})");
        Assert.True(Math.Max(a, b) <= tolerance, $"left padding with cache maxdiff {a:g3} / {b:g3} > {tolerance:g3}");
    }
}
