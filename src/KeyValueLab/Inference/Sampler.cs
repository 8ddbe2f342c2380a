namespace KeyValueLab.Inference;

/// <summary>
/// Picks the next token from one position's logits: greedy when <see cref="Temperature"/> is 0,
/// else softmax(logits / temperature), optionally restricted to the top-k logits (ties at the k-th
/// value kept, as Hugging Face does) and then to the nucleus of probability <see cref="TopP"/>
/// (llama2.c's rule: the smallest most-probable prefix whose mass exceeds top-p, after dropping
/// tokens below (1 − top-p)/(V − 1)), and draws from it with one uniform number per token.
/// The random numbers come from a seeded xorshift64* generator (Marsaglia/Vigna), the one llama2.c
/// uses, so a run is reproducible from its seed on any machine.
/// </summary>
public sealed class Sampler
{
    private ulong _state;

    /// <summary>0 means greedy (argmax).</summary>
    public float Temperature { get; }

    /// <summary>Keep only the k highest logits; 0 (or ≥ vocabulary) keeps all.</summary>
    public int TopK { get; }

    /// <summary>Nucleus mass in (0, 1); values ≤ 0 or ≥ 1 turn nucleus sampling off.</summary>
    public float TopP { get; }

    /// <summary>The seed this sampler started from (0 is replaced by a fixed non-zero constant: xorshift needs one).</summary>
    public ulong Seed { get; }

    public Sampler(float temperature = 0f, int topK = 0, float topP = 1f, ulong seed = 42)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(temperature);
        ArgumentOutOfRangeException.ThrowIfNegative(topK);
        if (float.IsNaN(temperature) || float.IsNaN(topP)) throw new ArgumentException("temperature and top-p must be numbers");
        (Temperature, TopK, TopP) = (temperature, topK, topP);
        Seed = seed == 0 ? 0x9E3779B97F4A7C15UL : seed;
        _state = Seed;
    }

    /// <summary>Index of the first largest value (the first one on ties, as llama2.c and torch do).</summary>
    public static int Argmax(ReadOnlySpan<float> values)
    {
        int best = 0;
        for (int i = 1; i < values.Length; i++) if (values[i] > values[best]) best = i;
        return best;
    }

    /// <summary>The next token for <paramref name="logits"/> (one position, all vocabulary entries).</summary>
    public int Sample(ReadOnlySpan<float> logits)
    {
        if (logits.IsEmpty) throw new ArgumentException("no logits to sample from", nameof(logits));
        if (Temperature == 0f) return Argmax(logits);

        int n = logits.Length;
        var probs = new float[n];
        for (int i = 0; i < n; i++) probs[i] = logits[i] / Temperature;
        if (TopK > 0 && TopK < n)
        {
            float kth = KthLargest(probs, TopK);
            for (int i = 0; i < n; i++) if (probs[i] < kth) probs[i] = float.NegativeInfinity;
        }
        Softmax(probs);

        float coin = NextFloat();
        return TopP > 0f && TopP < 1f ? SampleNucleus(probs, TopP, coin) : SampleMultinomial(probs, coin);
    }

    /// <summary>A uniform number in [0, 1) with 24 random bits, advancing the generator.</summary>
    public float NextFloat() => (NextUInt32() >> 8) / 16777216.0f;

    private uint NextUInt32()
    {
        _state ^= _state >> 12;
        _state ^= _state << 25;
        _state ^= _state >> 27;
        return (uint)((_state * 0x2545F4914F6CDD1DUL) >> 32);
    }

    private static float KthLargest(float[] values, int k)
    {
        var sorted = (float[])values.Clone();
        Array.Sort(sorted);
        return sorted[^k];
    }

    // Float arithmetic in llama2.c's order, so the same logits and coin pick the same token.
    private static void Softmax(float[] x)
    {
        float max = x[0];
        for (int i = 1; i < x.Length; i++) if (x[i] > max) max = x[i];
        float sum = 0f;
        for (int i = 0; i < x.Length; i++) { x[i] = MathF.Exp(x[i] - max); sum += x[i]; }
        for (int i = 0; i < x.Length; i++) x[i] /= sum;
    }

    private static int SampleMultinomial(float[] probs, float coin)
    {
        float cdf = 0f;
        int lastPossible = 0;
        for (int i = 0; i < probs.Length; i++)
        {
            if (probs[i] == 0f) continue;
            cdf += probs[i];
            lastPossible = i;
            if (coin < cdf) return i;
        }
        return lastPossible; // rounding left the cdf just below the coin
    }

    private static int SampleNucleus(float[] probs, float topP, float coin)
    {
        // Tokens below this cannot be in the nucleus: dropping them first keeps the sort short.
        float cutoff = (1f - topP) / (probs.Length - 1);
        var candidates = new List<(float P, int Index)>();
        for (int i = 0; i < probs.Length; i++) if (probs[i] >= cutoff && probs[i] > 0f) candidates.Add((probs[i], i));
        if (candidates.Count == 0) return Argmax(probs);
        candidates.Sort((a, b) => a.P != b.P ? b.P.CompareTo(a.P) : a.Index.CompareTo(b.Index));

        float cumulative = 0f;
        int last = candidates.Count - 1;
        for (int i = 0; i < candidates.Count; i++)
        {
            cumulative += candidates[i].P;
            if (cumulative > topP) { last = i; break; }
        }
        float r = coin * cumulative;
        float cdf = 0f;
        for (int i = 0; i <= last; i++)
        {
            cdf += candidates[i].P;
            if (r < cdf) return candidates[i].Index;
        }
        return candidates[last].Index;
    }
}
