using KeyValueLab.Inference;

namespace KeyValueLab.Tests.Inference;

public class SamplerTests
{
    private static readonly float[] Logits = [1.0f, 3.0f, 2.5f, -1f, 3.0f, 0.5f];

    [Fact]
    public void GreedyTakesTheFirstLargest()
    {
        var sampler = new Sampler(temperature: 0f);
        Assert.Equal(1, sampler.Sample(Logits));
        Assert.Equal(1, Sampler.Argmax(Logits));
    }

    [Fact]
    public void SameSeedSameDraws()
    {
        int[] Draw(ulong seed)
        {
            var s = new Sampler(temperature: 1.3f, topK: 4, topP: 0.95f, seed: seed);
            return [.. Enumerable.Range(0, 200).Select(_ => s.Sample(Logits))];
        }
        Assert.Equal(Draw(7), Draw(7));
        Assert.NotEqual(Draw(7), Draw(8));
        Assert.Equal(Draw(0), Draw(0)); // seed 0 is replaced, not stuck at zero
        Assert.True(Draw(0).Distinct().Count() > 1);
    }

    [Fact]
    public void UniformNumbersLookUniform()
    {
        var s = new Sampler(seed: 123);
        var xs = Enumerable.Range(0, 20000).Select(_ => s.NextFloat()).ToArray();
        Assert.All(xs, x => Assert.InRange(x, 0f, 0.99999995f));
        Assert.InRange(xs.Average(), 0.49, 0.51);
    }

    [Fact]
    public void MultinomialFollowsTheSoftmax()
    {
        float[] logits = [0f, MathF.Log(2f), MathF.Log(5f)]; // probabilities 1/8, 2/8, 5/8
        var s = new Sampler(temperature: 1f, topP: 1f, seed: 99);
        var counts = new int[3];
        const int n = 40000;
        for (int i = 0; i < n; i++) counts[s.Sample(logits)]++;
        Assert.Equal(1 / 8.0, counts[0] / (double)n, 0.01);
        Assert.Equal(2 / 8.0, counts[1] / (double)n, 0.01);
        Assert.Equal(5 / 8.0, counts[2] / (double)n, 0.01);
    }

    [Fact]
    public void TemperatureSharpens()
    {
        float[] logits = [0f, 1f];
        int Hits(float t)
        {
            var s = new Sampler(temperature: t, topP: 0f, seed: 3);
            return Enumerable.Range(0, 5000).Count(_ => s.Sample(logits) == 1);
        }
        Assert.True(Hits(0.2f) > Hits(1f));
        Assert.True(Hits(1f) > Hits(5f));
    }

    [Fact]
    public void TopKKeepsOnlyTheKBest()
    {
        var s = new Sampler(temperature: 5f, topK: 2, topP: 0f, seed: 11);
        var seen = Enumerable.Range(0, 3000).Select(_ => s.Sample(Logits)).ToHashSet();
        Assert.Equal(new HashSet<int> { 1, 4 }, seen); // the two 3.0 logits
        float[] unique = [1.0f, 3.0f, 2.9f, -1f];
        var k1 = new Sampler(temperature: 1f, topK: 1, seed: 11);
        Assert.All(Enumerable.Range(0, 100), _ => Assert.Equal(1, k1.Sample(unique)));
    }

    [Fact]
    public void TopPKeepsTheSmallestNucleusAboveP()
    {
        float[] logits = [MathF.Log(0.5f), MathF.Log(0.3f), MathF.Log(0.15f), MathF.Log(0.05f)];
        var s = new Sampler(temperature: 1f, topP: 0.7f, seed: 5); // 0.5 + 0.3 > 0.7: nucleus {0, 1}
        var counts = new int[4];
        for (int i = 0; i < 20000; i++) counts[s.Sample(logits)]++;
        Assert.Equal(0, counts[2] + counts[3]);
        Assert.Equal(0.5 / 0.8, counts[0] / 20000.0, 0.015);
        var tiny = new Sampler(temperature: 1f, topP: 0.01f, seed: 5);
        Assert.All(Enumerable.Range(0, 100), _ => Assert.Equal(0, tiny.Sample(logits)));
    }
}
