using System.Text.Json.Nodes;
using TorchSharp;
using static TorchSharp.torch;

namespace KeyValueLab.Tests.Models;

/// <summary>Input ids and the reference implementation's logits <c>[T, V]</c> for a fixture.</summary>
internal sealed record ReferenceLogits(long[] InputIds, float[] Logits, int Vocab)
{
    public int Positions => InputIds.Length;

    /// <summary>Every fixture folder with its reference (stories260K_hf uses llama2.c run.c's logits).</summary>
    public static readonly string[] Fixtures =
        ["tiny_gpt2", "tiny_gpt2_bf16_sharded", "tiny_gptj", "tiny_gptj_f16", "tiny_llama_gqa", "stories260K_hf"];

    public static ReferenceLogits For(string fixture) =>
        fixture == "stories260K_hf" ? Stories260K() : FromFixture(TestData.Path("fixtures/" + fixture));

    /// <summary><c>expected.json</c> (input_ids, logits_shape) and <c>expected_logits.f32</c> (float32 LE, [position, vocab]).</summary>
    public static ReferenceLogits FromFixture(string folder)
    {
        var expected = JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "expected.json")))!.AsObject();
        long[] ids = expected["input_ids"]!.AsArray().Select(n => n!.GetValue<long>()).ToArray();
        int vocab = expected["logits_shape"]![1]!.GetValue<int>();
        byte[] bytes = File.ReadAllBytes(Path.Combine(folder, expected["logits_file"]!.GetValue<string>()));
        Assert.True(BitConverter.IsLittleEndian);
        float[] logits = new float[bytes.Length / 4];
        Buffer.BlockCopy(bytes, 0, logits, 0, bytes.Length);
        Assert.Equal(ids.Length * vocab, logits.Length);
        return new ReferenceLogits(ids, logits, vocab);
    }

    /// <summary>llama2.c run.c's logits for "Once upon a time" + greedy tokens, first 8 positions.</summary>
    public static ReferenceLogits Stories260K()
    {
        var doc = JsonNode.Parse(File.ReadAllText(TestData.Path("llama2c_stories260K/logits_once_upon_a_time_greedy64.json")))!.AsObject();
        var rows = doc["logits_per_position"]!.AsArray();
        long[] ids = rows.Select(r => r!["input_token"]!.GetValue<long>()).ToArray();
        float[][] logits = rows.Select(r => r!["logits"]!.AsArray().Select(v => (float)v!.GetValue<double>()).ToArray()).ToArray();
        for (int i = 0; i < rows.Count; i++) Assert.Equal(i, rows[i]!["pos"]!.GetValue<int>());
        // The logged inputs are the prompt, then the greedy sequence.
        long[] sequence = doc["greedy_token_sequence"]!.AsArray().Select(n => n!.GetValue<long>()).ToArray();
        Assert.Equal(sequence.Take(ids.Length), ids);
        return new ReferenceLogits(ids, logits.SelectMany(l => l).ToArray(), logits[0].Length);
    }

    public Tensor InputTensor() => tensor(InputIds, [1, InputIds.Length]);

    /// <summary>Largest |actual − expected| per position; <paramref name="actual"/> is <c>[1, T, V]</c> or <c>[T, V]</c>.</summary>
    public double[] MaxDiffPerPosition(Tensor actual)
    {
        var flat = actual.detach().reshape(Positions, Vocab).to(ScalarType.Float32).data<float>().ToArray();
        var diffs = new double[Positions];
        for (int t = 0; t < Positions; t++)
            for (int v = 0; v < Vocab; v++)
                diffs[t] = Math.Max(diffs[t], Math.Abs(flat[t * Vocab + v] - Logits[t * Vocab + v]));
        return diffs;
    }
}

internal static class TensorAssert
{
    /// <summary>Max |a − b|, asserting equal shapes.</summary>
    public static double MaxDiff(Tensor a, Tensor b)
    {
        Assert.Equal(a.shape, b.shape);
        return (a - b).abs().max().item<float>();
    }

    /// <summary>Close within <see cref="Fp32.Tolerance(Tensor)"/> of <paramref name="expected"/>'s magnitude.</summary>
    public static void CloseFp32(Tensor expected, Tensor actual, string what) => Close(expected, actual, Fp32.Tolerance(expected), what);

    public static void Close(Tensor expected, Tensor actual, double tolerance, string what)
    {
        double diff = MaxDiff(expected, actual);
        Assert.True(diff <= tolerance, $"{what}: maxdiff {diff:g3} > {tolerance:g3}");
    }
}
