using KeyValueLab.Inference;
using KeyValueLab.Models;
using KeyValueLab.Tokenization;

namespace KeyValueLab.Tests.Inference;

/// <summary>Batching and caching on the real architectures (random-weight Hugging Face fixtures).</summary>
public class FixtureModelTests
{
    public static TheoryData<string> Fixtures => KeyValueLab.Tests.Models.ArchitectureFixtures.All;

    private static IReadOnlyList<int>[] Prompts(int vocab) =>
    [
        [.. Enumerable.Range(0, 9).Select(i => (i * 37 + 5) % vocab)],
        [(17 * 3) % vocab],
        [.. Enumerable.Range(0, 4).Select(i => (i * 101 + 11) % vocab)],
        [.. Enumerable.Range(0, 6).Select(i => (i * 53 + 2) % vocab)],
    ];

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void BatchedScoringEqualsOneAtATime(string fixture)
    {
        using var loaded = ModelLoader.Load(TestData.Path("fixtures/" + fixture));
        int vocab = loaded.Config.VocabSize;
        var prompts = Prompts(vocab);
        var items = prompts.Select((p, i) => (p, (IReadOnlyList<int>)[.. Enumerable.Range(0, 1 + i).Select(j => (j * 29 + i * 7 + 3) % vocab)])).ToArray();

        var alone = items.Select(it => Scorer.ScoreIds(loaded.Model, [it])[0]).ToArray();
        var batched = Scorer.ScoreIds(loaded.Model, items, batchSize: 4);
        for (int i = 0; i < items.Length; i++)
        {
            Assert.Equal(alone[i].ArgmaxIds, batched[i].ArgmaxIds);
            double tolerance = Fp32.ToleranceOf(alone[i].TokenLogProbs);
            for (int j = 0; j < alone[i].TokenLogProbs.Length; j++) Assert.Equal(alone[i].TokenLogProbs[j], batched[i].TokenLogProbs[j], tolerance);
        }
    }

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void LeftPaddedBatchedGreedyEqualsOneAtATime(string fixture)
    {
        using var loaded = ModelLoader.Load(TestData.Path("fixtures/" + fixture));
        var prompts = Prompts(loaded.Config.VocabSize);
        var batched = Generator.GreedyBatchIds(loaded.Model, prompts, maxNewTokens: 10, stopIds: [], batchSize: 4);
        for (int i = 0; i < prompts.Length; i++)
            Assert.Equal(Generator.GreedyBatchIds(loaded.Model, [prompts[i]], maxNewTokens: 10, stopIds: [])[0], batched[i]);
    }

    [Fact]
    public void Gpt2ScoresWithoutBosAndWithTheRealTokenizer()
    {
        using var loaded = ModelLoader.Load(TestData.Path("fixtures/tiny_gpt2"));
        var tok = TokenizerLoader.Load(TestData.Path("gpt2_tokenizer"));
        var score = Scorer.Score(loaded.Model, tok, [("The capital of France is", "Paris")])[0];
        Assert.Equal(tok.Encode("The capital of France is"), score.PromptIds);
        Assert.Equal(tok.Encode(" Paris"), score.TargetIds);
    }
}

public class TargetEncodingTests
{
    [Fact]
    public void TargetsAreWordInitialForEveryTokenizerKind()
    {
        var gpt2 = TokenizerLoader.Load(TestData.Path("gpt2_tokenizer"));
        var llama = TokenizerLoader.Load(TestData.Path("llama2_tokenizer/tokenizer.model"));
        var llama2c = TokenizerLoader.Load(TestData.Path("llama2c_stories260K/tok512.bin"));
        Assert.False(PromptEncoding.AddsDummyPrefix(gpt2));
        Assert.True(PromptEncoding.AddsDummyPrefix(llama));
        Assert.True(PromptEncoding.AddsDummyPrefix(llama2c));
        Assert.Equal(gpt2.Encode(" Paris"), PromptEncoding.EncodeTarget(gpt2, "Paris"));
        Assert.Equal(llama.Encode("Paris"), PromptEncoding.EncodeTarget(llama, "Paris"));
        Assert.Single(PromptEncoding.EncodeTarget(llama, "Paris")); // "▁Paris", not "▁" + "▁Paris"
        Assert.Equal(llama.Encode(" Paris"), PromptEncoding.EncodeTarget(llama, "Paris", targetPrefix: " "));
    }
}
