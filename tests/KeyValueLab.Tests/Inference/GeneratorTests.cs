using KeyValueLab.Inference;

namespace KeyValueLab.Tests.Inference;

public class GeneratorTests
{
    private static readonly CharTokenizer Tok = new();

    [Fact]
    public void CachedAndUncachedGiveTheSameLogitsAndTokens()
    {
        using var model = new TinyLM("llama");
        var options = new GenerationOptions { Steps = 40, Temperature = 0.9f, TopP = 0.9f, Seed = 17, StopAtEos = false, KeepLogits = true };
        var cached = Generator.Generate(model, Tok, "Hello there", options);
        var uncached = Generator.Generate(model, Tok, "Hello there", options with { UseCache = false });

        Assert.Equal(cached.Tokens, uncached.Tokens);
        Assert.Equal(cached.Text, uncached.Text);
        Assert.Equal(40, cached.Logits!.Count);
        double maxDiff = 0;
        for (int p = 0; p < cached.Logits.Count; p++)
            for (int v = 0; v < cached.Logits[p].Length; v++)
                maxDiff = Math.Max(maxDiff, Math.Abs(cached.Logits[p][v] - uncached.Logits![p][v]));
        double tolerance = Fp32.ToleranceOf(uncached.Logits!.SelectMany(l => l));
        Assert.True(maxDiff <= tolerance, $"cached vs uncached logits maxdiff={maxDiff} > {tolerance}");
    }

    [Fact]
    public void StepsCountPositionsIncludingPromptAndBos()
    {
        // Argmax chain: each character predicts the next one in ASCII.
        var table = BigramLM.TableWithChain(CharTokenizer.Vocab, i => Math.Min(i + 1, CharTokenizer.Vocab - 1), seed: 2);
        using var model = new BigramLM(table, "llama");
        var streamed = new List<string>();

        var result = Generator.Generate(model, Tok, "ab", new GenerationOptions { Steps = 5, Temperature = 0 }, streamed.Add);

        // Positions 0..4 run: BOS→a, a→b (forced), then c, d, e sampled. BOS is not printed.
        Assert.Equal("abcde", result.Text);
        Assert.Equal("abcde\n", result.Stdout);
        Assert.Equal(new[] { "a", "b", "c", "d", "e" }, streamed);
        Assert.Equal(6, result.Tokens.Count);
        Assert.Equal(3, result.PromptLength);
        Assert.Equal([.. "cde".Select(CharTokenizer.Id)], result.NewTokens);
        Assert.False(result.StoppedAtEos);

        // A prompt longer than the steps is cut, as llama2.c does.
        Assert.Equal("abc", Generator.Generate(model, Tok, "abcdefg", new GenerationOptions { Steps = 3, Temperature = 0 }).Text);
    }

    [Fact]
    public void StopsAtEosAndDoesNotPrintIt()
    {
        int z = CharTokenizer.Id('z');
        var table = BigramLM.TableWithChain(CharTokenizer.Vocab, i => i == z ? 2 : Math.Min(i + 1, CharTokenizer.Vocab - 1), seed: 3);
        using var model = new BigramLM(table, "llama");

        var result = Generator.Generate(model, Tok, "w", new GenerationOptions { Steps = 50, Temperature = 0 });
        Assert.Equal("wxyz", result.Text);
        Assert.True(result.StoppedAtEos);
        Assert.DoesNotContain(2, result.Tokens);

        var goOn = Generator.Generate(model, Tok, "w", new GenerationOptions { Steps = 6, Temperature = 0, StopAtEos = false });
        Assert.Equal(2, goOn.Tokens[5]);
        Assert.False(goOn.StoppedAtEos);
    }

    [Fact]
    public void WithoutBosTheFirstPromptTokenIsPrinted()
    {
        using var model = new TinyLM("gpt2");
        var result = Generator.Generate(model, Tok, "Hi", new GenerationOptions { Steps = 6, Temperature = 0, StopAtEos = false });
        Assert.StartsWith("Hi", result.Text);
        Assert.Equal(CharTokenizer.Id('H'), result.Tokens[0]);
        Assert.Equal(7, result.Tokens.Count);
    }

    [Fact]
    public void SeededSamplingIsReproducible()
    {
        using var model = new TinyLM("llama");
        var options = new GenerationOptions { Steps = 30, Temperature = 1f, TopK = 10, TopP = 0.9f, Seed = 5, StopAtEos = false };
        Assert.Equal(Generator.Generate(model, Tok, "Once", options).Tokens, Generator.Generate(model, Tok, "Once", options).Tokens);
        Assert.NotEqual(Generator.Generate(model, Tok, "Once", options).Tokens, Generator.Generate(model, Tok, "Once", options with { Seed = 6 }).Tokens);
    }

    [Fact]
    public void BatchedGreedyEqualsOneAtATime()
    {
        using var model = new TinyLM("llama");
        string[] prompts = ["The capital of France is", "A", "Lily and Tom went", "", "Keys fire, values write"];
        const int maxNew = 12;

        var batched = Generator.GreedyBatch(model, Tok, prompts, maxNew, batchSize: 3, stopAtEos: false);
        for (int i = 0; i < prompts.Length; i++)
        {
            var alone = Generator.GreedyBatch(model, Tok, [prompts[i]], maxNew, batchSize: 1, stopAtEos: false)[0];
            Assert.Equal(alone.NewIds, batched[i].NewIds);
            Assert.Equal(maxNew, batched[i].NewIds.Length);

            // Same as the single-prompt generator, greedy, for the same number of positions.
            var single = Generator.GenerateFromIds(model, Tok, batched[i].PromptIds,
                new GenerationOptions { Steps = batched[i].PromptIds.Length - 1 + maxNew, Temperature = 0, StopAtEos = false });
            Assert.Equal(single.NewTokens, batched[i].NewIds);
            Assert.Equal(Tok.Decode(batched[i].NewIds), batched[i].Text);
        }
    }

    [Fact]
    public void BatchedGreedyStopsEachRowAtItsOwnEos()
    {
        int z = CharTokenizer.Id('z');
        var table = BigramLM.TableWithChain(CharTokenizer.Vocab, i => i == z ? 2 : Math.Min(i + 1, CharTokenizer.Vocab - 1), seed: 3);
        using var model = new BigramLM(table, "llama");
        var result = Generator.GreedyBatch(model, Tok, ["x", "a"], maxNewTokens: 5);
        Assert.Equal("yz", result[0].Text);
        Assert.Equal("bcdef", result[1].Text);
    }
}

public class GeneratorByteTests
{
    [Fact]
    public void CharactersSplitOverTokensStreamWholeAndControlBytesAreSkipped()
    {
        // Chain after BOS: 'a' → 0xC3 → 0xA9 ("é") → 0x07 (bell, not printed) → 'b' → EOS.
        var next = new Dictionary<int, int> { ['a'] = 0xC3, [0xC3] = 0xA9, [0xA9] = 0x07, [0x07] = 'b', ['b'] = 257 };
        var table = BigramLM.TableWithChain(258, i => next.GetValueOrDefault(i, 257), seed: 4);
        using var model = new BigramLM(table, "llama");
        var streamed = new List<string>();

        var result = Generator.Generate(model, new ByteTokenizer(), "a", new GenerationOptions { Steps = 20, Temperature = 0 }, streamed.Add);

        Assert.Equal("aéb", result.Text);
        Assert.Equal(new byte[] { (byte)'a', 0xC3, 0xA9, (byte)'b' }, result.Bytes);
        Assert.Equal(new byte[] { (byte)'a', 0xC3, 0xA9, (byte)'b', (byte)'\n' }, result.StdoutBytes);
        Assert.Equal(new[] { "a", "é", "b" }, streamed);
        Assert.True(result.StoppedAtEos);
        Assert.Equal(new[] { 256, 'a', 0xC3, 0xA9, 0x07, 'b' }, result.Tokens);
    }
}
