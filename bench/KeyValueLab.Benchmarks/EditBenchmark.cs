using System.Diagnostics;
using KeyValueLab.Editing;
using KeyValueLab.Models;
using KeyValueLab.Tokenization;
using TorchSharp;

namespace KeyValueLab.Benchmarks;

/// <summary>
/// Time of one FT edit (one request, a fixed number of Adam steps, early stop off) on the keys and on the
/// values of one layer of a GPT-2-medium-shaped model with random weights, and the ratio of each to the
/// time its floating-point work would take at the fp32 matmul rate measured in the same run.
/// </summary>
internal static class EditBenchmark
{
    /// <summary>GPT-2 medium (355M): 24 layers × 1024, 16 heads, vocab 50257.</summary>
    public const string Gpt2MediumConfig = """
        {"model_type":"gpt2","vocab_size":50257,"n_positions":1024,"n_embd":1024,"n_layer":24,"n_head":16,
         "activation_function":"gelu_new","layer_norm_epsilon":1e-5,"tie_word_embeddings":true}
        """;

    private static readonly EditRequest Request = new("bench", "The mother tongue of {} is", "Danielle Darrieux", "English", "French");

    public static void Run(int steps, int layer, int repeats)
    {
        using var loaded = ModelLoader.Create(Gpt2MediumConfig, seed: 0);
        var model = loaded.Model;
        var tokenizer = new ByteTokenizer();
        double matmul = RuntimeBenchmark.MatmulGflops(repeats);
        var prompt = EditPrompts.Build(model, tokenizer, Request.Prompt, Request.Subject, Request.TargetNew);
        int tokens = prompt.PromptIds.Length + prompt.TargetIds.Length - 1;
        Console.WriteLine($"GPT-2-medium shape, layer {layer}, one request ({tokens} tokens), {steps} Adam steps; fp32 matmul {matmul:F1} GFLOP/s");
        var times = new Dictionary<string, double>();
        foreach (string side in new[] { "keys", "values" })
        {
            var editor = new FineTuneEditor(new FtHyperparameters { Layers = [layer], Side = side, Steps = steps, EarlyStopLoss = -1 });
            using var snapshot = Memory.WeightSnapshot.Take(model, editor.ParameterNames(model));
            double best = RuntimeBenchmark.Best(repeats, () =>
            {
                var sw = Stopwatch.StartNew();
                editor.Apply(model, tokenizer, [Request]);
                double t = sw.Elapsed.TotalSeconds;
                snapshot.Restore(model);
                return t;
            }, out double median);
            double flop = steps * StepFlop(model.Config, tokens, layer, side == "keys");
            double ideal = flop / (matmul * 1e9);
            times[side] = best;
            Console.WriteLine($"FT {side,-6}: {best * 1e3,8:F1} ms per edit (median {median * 1e3:F1}); {flop / 1e9:F2} GFLOP → {ideal * 1e3:F1} ms at the matmul rate; ratio {best / ideal:F2}");
        }
        Console.WriteLine($"values / keys time: {times["values"] / times["keys"]:F3}");
    }

    /// <summary>
    /// FLOP of one FT step on one sequence of T tokens: the full forward pass, then backward: input gradients only
    /// through every layer above the edited one and the unembedding (their weights are frozen: one product per weight,
    /// 1× its forward; the attention's two T×T products take four, 2× theirs), in the edited layer the weight gradient
    /// of the edited matrix plus, for keys, the input gradient through the value matrix.
    /// </summary>
    public static double StepFlop(ModelConfig c, int tokens, int layer, bool keys)
    {
        double d = c.HiddenSize, ff = c.IntermediateSize, t = tokens;
        double linear = 2 * t * (4 * d * d + 2 * d * ff), attention = 2 * 2.0 * t * t * d;
        double unembed = 2 * t * d * c.VocabSize;
        double forward = c.NumLayers * (linear + attention) + unembed;
        double backward = (c.NumLayers - layer - 1) * (linear + 2 * attention) + unembed;
        double edited = 2 * t * d * ff + (keys ? 2 * t * d * ff : 0);
        return forward + backward + edited;
    }

    /// <summary>FLOP of one step's recomputation under gradient checkpointing: the forward pass of every layer above the edited one again.</summary>
    public static double RecomputeFlop(ModelConfig c, int tokens, int layer)
    {
        double d = c.HiddenSize, ff = c.IntermediateSize, t = tokens;
        return (c.NumLayers - layer - 1) * (2 * t * (4 * d * d + 2 * d * ff) + 2 * 2.0 * t * t * d);
    }

    /// <summary>One id per UTF-16 unit (random weights need no real vocabulary).</summary>
    internal sealed class ByteTokenizer(int vocab = 50257) : ITokenizer
    {
        public int VocabSize => vocab;
        public int? BosId => null;
        public int? EosId => vocab - 1;
        public IReadOnlyList<int> Encode(string text, bool addBos = false) => [.. text.Select(ch => (int)ch % (vocab - 1))];
        public string Decode(IEnumerable<int> ids) => new([.. ids.Select(i => (char)i)]);
        public string DecodeToken(int previousId, int id) => ((char)id).ToString();
        public byte[] DecodeTokenBytes(int previousId, int id) => System.Text.Encoding.UTF8.GetBytes(DecodeToken(previousId, id));
        public string TokenText(int id) => DecodeToken(0, id);
    }
}
