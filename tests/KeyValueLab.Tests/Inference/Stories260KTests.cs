using System.Text.Json.Nodes;
using KeyValueLab.Inference;
using KeyValueLab.Models;
using KeyValueLab.Tokenization;

namespace KeyValueLab.Tests.Inference;

/// <summary>The real pretrained llama2.c stories260K model: our generator must print what run.c prints.</summary>
public sealed class Stories260KFixture : IDisposable
{
    public LoadedModel Loaded { get; } = ModelLoader.Load(TestData.Path("llama2c_stories260K/stories260K.bin"));
    public ITokenizer Tokenizer { get; } = TokenizerLoader.Load(TestData.Path("llama2c_stories260K/tok512.bin"));
    public CausalLM Model => Loaded.Model;
    public void Dispose() => Loaded.Dispose();
}

public class Stories260KTests(Stories260KFixture f) : IClassFixture<Stories260KFixture>
{
    private static byte[] Expected(string file) => File.ReadAllBytes(TestData.Path("llama2c_stories260K/" + file));

    [Fact]
    public void Greedy200StepsWithoutPromptPrintsWhatRunCPrints()
    {
        // ./run stories260K.bin -z tok512.bin -t 0.0 -n 200
        var streamed = new List<string>();
        var result = Generator.Generate(f.Model, f.Tokenizer, "", new GenerationOptions { Steps = 200, Temperature = 0 }, streamed.Add);

        byte[] expected = Expected("run_t0_n200.txt");
        Assert.Equal(System.Text.Encoding.ASCII.GetString(expected[..^1]), result.Text);
        Assert.Equal(expected, result.StdoutBytes);
        Assert.Equal(result.Text, string.Concat(streamed));
        Assert.Equal(201, result.Tokens.Count);
    }

    [Fact]
    public void Greedy64StepsWithPromptPrintsWhatRunCPrints()
    {
        // ./run stories260K.bin -z tok512.bin -t 0.0 -n 64 -i "Once upon a time"
        var result = Generator.Generate(f.Model, f.Tokenizer, "Once upon a time", new GenerationOptions { Steps = 64, Temperature = 0, KeepLogits = true });

        byte[] expected = Expected("run_t0_n64_once_upon_a_time.txt");
        Assert.Equal(System.Text.Encoding.ASCII.GetString(expected[..^1]), result.Text);
        Assert.Equal(expected, result.StdoutBytes);

        var doc = JsonNode.Parse(File.ReadAllText(TestData.Path("llama2c_stories260K/logits_once_upon_a_time_greedy64.json")))!.AsObject();
        int[] sequence = [.. doc["greedy_token_sequence"]!.AsArray().Select(n => n!.GetValue<int>())];
        int[] prompt = [.. doc["prompt_tokens"]!.AsArray().Select(n => n!.GetValue<int>())];
        Assert.Equal(sequence, result.Tokens);
        Assert.Equal(prompt.Length, result.PromptLength);

        // Logits at each position the reference printed (prompt positions come from the one prefill pass).
        var rows = doc["logits_per_position"]!.AsArray();
        double maxDiff = 0;
        for (int p = 0; p < rows.Count; p++)
        {
            var reference = rows[p]!["logits"]!.AsArray();
            for (int v = 0; v < reference.Count; v++)
                maxDiff = Math.Max(maxDiff, Math.Abs(reference[v]!.GetValue<double>() - result.Logits![p][v]));
        }
        Assert.True(maxDiff < 1e-4, $"generator logits vs run.c maxdiff={maxDiff:g3}");
    }

    [Fact]
    public void CachedAndUncachedGenerationAgree()
    {
        var options = new GenerationOptions { Steps = 48, Temperature = 0.8f, TopP = 0.9f, Seed = 1234, KeepLogits = true, StopAtEos = false };
        var cached = Generator.Generate(f.Model, f.Tokenizer, "Lily and Tom", options);
        var uncached = Generator.Generate(f.Model, f.Tokenizer, "Lily and Tom", options with { UseCache = false });

        Assert.Equal(cached.Tokens, uncached.Tokens);
        double maxDiff = 0;
        for (int p = 0; p < cached.Logits!.Count; p++)
            for (int v = 0; v < cached.Logits[p].Length; v++)
                maxDiff = Math.Max(maxDiff, Math.Abs(cached.Logits[p][v] - uncached.Logits![p][v]));
        Assert.True(maxDiff < 1e-4, $"cached vs uncached maxdiff={maxDiff:g3}");
    }

    [Fact]
    public void BatchedGreedyEqualsOneAtATime()
    {
        string[] prompts = ["Once upon a time", "Lily and Tom went to the park.", "The dog", "", "One day, a little bird"];
        var batched = Generator.GreedyBatch(f.Model, f.Tokenizer, prompts, maxNewTokens: 16, batchSize: 5, stopAtEos: false);
        for (int i = 0; i < prompts.Length; i++)
        {
            var single = Generator.Generate(f.Model, f.Tokenizer, prompts[i],
                new GenerationOptions { Steps = batched[i].PromptIds.Length - 1 + 16, Temperature = 0, StopAtEos = false });
            Assert.Equal(single.NewTokens, batched[i].NewIds);
        }
    }

    [Fact]
    public void BatchedScoresEqualOneAtATime()
    {
        (string, string)[] items =
        [
            ("Once upon a time, there was a little", "girl"),
            ("Lily and Tom went to the", "park"),
            ("The sun was", "shining and the birds were singing"),
            ("One day", "she saw a big red ball"),
        ];
        var alone = items.Select(it => Scorer.Score(f.Model, f.Tokenizer, [it])[0]).ToArray();
        var batched = Scorer.Score(f.Model, f.Tokenizer, items, batchSize: 4);
        for (int i = 0; i < items.Length; i++)
        {
            Assert.Equal(1, batched[i].PromptIds[0]); // Llama: BOS by default
            // The tokenizer's dummy prefix makes the target word-initial; no lone " " token in front.
            Assert.Equal(f.Tokenizer.Encode(items[i].Item2), batched[i].TargetIds);
            Assert.Equal(alone[i].ArgmaxIds, batched[i].ArgmaxIds);
            double tolerance = Fp32.ToleranceOf(alone[i].TokenLogProbs);
            for (int j = 0; j < alone[i].TokenLogProbs.Length; j++) Assert.Equal(alone[i].TokenLogProbs[j], batched[i].TokenLogProbs[j], tolerance);
        }
        // The model knows its stories: "girl" after "a little" is likelier than a random continuation.
        Assert.True(alone[0].Loss < Scorer.Score(f.Model, f.Tokenizer, [("Once upon a time, there was a little", "ball park")])[0].Loss);
    }
}
