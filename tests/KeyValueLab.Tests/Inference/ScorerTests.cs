using KeyValueLab.Inference;

namespace KeyValueLab.Tests.Inference;

public class ScorerTests
{
    private static readonly CharTokenizer Tok = new();

    private static double LogSoftmax(float[,] table, int row, int col)
    {
        int v = table.GetLength(1);
        double max = double.NegativeInfinity;
        for (int j = 0; j < v; j++) max = Math.Max(max, table[row, j]);
        double sum = 0;
        for (int j = 0; j < v; j++) sum += Math.Exp(table[row, j] - max);
        return table[row, col] - max - Math.Log(sum);
    }

    private static int RowArgmax(float[,] table, int row)
    {
        int best = 0;
        for (int j = 1; j < table.GetLength(1); j++) if (table[row, j] > table[row, best]) best = j;
        return best;
    }

    [Theory]
    [InlineData("gpt2", false)]
    [InlineData("llama", true)]
    public void MatchesAHandComputationOnABigramModel(string modelType, bool expectBos)
    {
        var table = BigramLM.TableWithChain(CharTokenizer.Vocab, i => (i * 7 + 3) % CharTokenizer.Vocab, seed: 5);
        using var model = new BigramLM(table, modelType);

        var score = Scorer.Score(model, Tok, [("ab", "cd")])[0];

        // ids = [BOS] a b | ␠ c d: each target token is predicted from the token before it.
        int[] prompt = expectBos ? [1, CharTokenizer.Id('a'), CharTokenizer.Id('b')] : [CharTokenizer.Id('a'), CharTokenizer.Id('b')];
        int[] target = [CharTokenizer.Id(' '), CharTokenizer.Id('c'), CharTokenizer.Id('d')];
        int[] previous = [CharTokenizer.Id('b'), CharTokenizer.Id(' '), CharTokenizer.Id('c')];
        Assert.Equal(prompt, score.PromptIds);
        Assert.Equal(target, score.TargetIds);
        double loss = 0;
        for (int j = 0; j < 3; j++)
        {
            double lp = LogSoftmax(table, previous[j], target[j]);
            Assert.Equal(lp, score.TokenLogProbs[j], Fp32.Tolerance(lp));
            Assert.Equal(RowArgmax(table, previous[j]), score.ArgmaxIds[j]);
            loss -= lp / 3;
        }
        Assert.Equal(loss, score.Loss, Fp32.Tolerance(loss));
        Assert.Equal(Math.Exp(-loss), score.MeanTokenProbability, Fp32.Tolerance(1));
    }

    [Fact]
    public void ExactMatchAndTokenAccuracyFollowTheArgmax()
    {
        // Argmax chain: each character predicts the next one in ASCII, a space predicts 'b', 'a' predicts a space.
        int space = CharTokenizer.Id(' ');
        var table = BigramLM.TableWithChain(CharTokenizer.Vocab, i => i == space ? CharTokenizer.Id('b') : i + 1 < CharTokenizer.Vocab ? i + 1 : 0, seed: 9);
        table[CharTokenizer.Id('a'), space] = 6f; // after 'a' the model prefers a space
        using var model = new BigramLM(table);

        var scores = Scorer.Score(model, Tok, [("a", "bcd"), ("a", "bxd")]);

        Assert.True(scores[0].ExactMatch);
        Assert.Equal(1.0, scores[0].TokenAccuracy);
        Assert.False(scores[1].ExactMatch);
        Assert.Equal(2 / 4.0, scores[1].TokenAccuracy); // ' ' and 'b' right; 'x' wrong, 'd' after 'x' wrong
        Assert.True(scores[0].Loss < scores[1].Loss);
    }

    [Fact]
    public void BatchedScoresEqualOneAtATime()
    {
        using var model = new TinyLM();
        (string, string)[] items =
        [
            ("The capital of France is", "Paris"),
            ("A", "b"),
            ("Lily went to the", "park with her mom"),
            ("x", "y z"),
            ("Once upon a time there was a", "girl"),
            ("Keys decide when memories fire;", "values decide what they write."),
            ("", "empty prompt with BOS"),
        ];
        var alone = items.Select(it => Scorer.Score(model, Tok, [it], addBos: true)[0]).ToArray();
        var batched = Scorer.Score(model, Tok, items, batchSize: 3, addBos: true);
        var oneBatch = Scorer.Score(model, Tok, items, batchSize: 16, addBos: true);

        for (int i = 0; i < items.Length; i++)
        {
            foreach (var other in new[] { batched[i], oneBatch[i] })
            {
                Assert.Equal(alone[i].TargetIds, other.TargetIds);
                Assert.Equal(alone[i].ArgmaxIds, other.ArgmaxIds);
                double tolerance = Fp32.ToleranceOf(alone[i].TokenLogProbs);
                for (int j = 0; j < alone[i].TokenLogProbs.Length; j++)
                    Assert.Equal(alone[i].TokenLogProbs[j], other.TokenLogProbs[j], tolerance);
                Assert.Equal(alone[i].Loss, other.Loss, tolerance);
            }
        }
    }

    [Fact]
    public void UnscorableItemsAreRefused()
    {
        using var model = new TinyLM();
        Assert.Throws<ArgumentException>(() => Scorer.Score(model, Tok, [("prompt", "")], targetPrefix: ""));
        Assert.Throws<ArgumentException>(() => Scorer.Score(model, Tok, [("", "target")], addBos: false));
        Assert.Throws<ArgumentException>(() => Scorer.Score(model, Tok, [(new string('a', 200), "b")]));
    }
}
