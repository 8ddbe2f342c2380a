using System.Text.Json.Nodes;
using TorchSharp;
using static TorchSharp.torch;

namespace KeyValueLab.Tests.Models;

/// <summary>
/// Input ids <c>[B, T]</c> (flattened) and the reference implementation's logits <c>[B, T, V]</c> for a fixture;
/// the older fixtures hold one sequence, the batch fixtures (Qwen2, Mistral, Gemma, Gemma 2, Phi-3, GPT-NeoX) two.
/// </summary>
internal sealed record ReferenceLogits(long[] InputIds, float[] Logits, int Vocab, int Batch = 1)
{
    public int Positions => InputIds.Length / Batch;

    /// <summary>The batch fixtures: two sequences of 7 tokens each, logits [2, 7, 1000].</summary>
    public static readonly string[] BatchFixtures =
        ["tiny_qwen2", "tiny_mistral", "tiny_mistral_bf16", "tiny_gemma", "tiny_gemma2", "tiny_phi3", "tiny_gpt_neox", "tiny_gpt_neox_sequential"];

    /// <summary>Every fixture folder with its reference (stories260K_hf uses llama2.c run.c's logits).</summary>
    public static readonly string[] Fixtures =
        ["tiny_gpt2", "tiny_gpt2_bf16_sharded", "tiny_gptj", "tiny_gptj_f16", "tiny_llama_gqa", "stories260K_hf", .. BatchFixtures];

    public static ReferenceLogits For(string fixture) =>
        fixture == "stories260K_hf" ? Stories260K() : FromFixture(TestData.Path("fixtures/" + fixture));

    /// <summary>
    /// <c>expected.json</c> (input_ids, logits_shape) and <c>expected_logits.f32</c> (float32 LE, [position, vocab],
    /// or [sequence, position, vocab] when input_ids is a list of sequences).
    /// </summary>
    public static ReferenceLogits FromFixture(string folder)
    {
        var expected = JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "expected.json")))!.AsObject();
        var idsNode = expected["input_ids"]!.AsArray();
        bool batched = idsNode[0] is JsonArray;
        long[] ids = batched
            ? idsNode.SelectMany(row => row!.AsArray().Select(n => n!.GetValue<long>())).ToArray()
            : idsNode.Select(n => n!.GetValue<long>()).ToArray();
        int batch = batched ? idsNode.Count : 1;
        var shape = expected["logits_shape"]!.AsArray().Select(n => n!.GetValue<int>()).ToArray();
        Assert.Equal(batched ? 3 : 2, shape.Length);
        int vocab = shape[^1];
        byte[] bytes = File.ReadAllBytes(Path.Combine(folder, expected["logits_file"]!.GetValue<string>()));
        Assert.True(BitConverter.IsLittleEndian);
        float[] logits = new float[bytes.Length / 4];
        Buffer.BlockCopy(bytes, 0, logits, 0, bytes.Length);
        Assert.Equal(ids.Length * vocab, logits.Length);
        return new ReferenceLogits(ids, logits, vocab, batch);
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

    public Tensor InputTensor() => tensor(InputIds, [Batch, Positions]);

    /// <summary>
    /// Largest |actual − expected| per position, sequence after sequence (B·T values); <paramref name="actual"/>
    /// is <c>[B, T, V]</c> or <c>[T, V]</c>.
    /// </summary>
    public double[] MaxDiffPerPosition(Tensor actual)
    {
        int rows = Batch * Positions;
        var flat = actual.detach().reshape(rows, Vocab).to(ScalarType.Float32).data<float>().ToArray();
        var diffs = new double[rows];
        for (int t = 0; t < rows; t++)
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
