namespace KeyValueLab.Statistics;

/// <summary>
/// SplitMix64 (Steele, Lea, Flood 2014): the one generator of every bootstrap and permutation. Its sequence is fixed
/// by its definition, unlike <see cref="Random"/>, whose algorithm may change between .NET versions.
/// </summary>
internal sealed class SplitMix64(ulong seed)
{
    private ulong _state = seed;

    public ulong Next()
    {
        ulong z = _state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>Uniform integer in [0, n) by Lemire's multiply-shift (bias below n/2³², negligible here).</summary>
    public int NextInt(int n) => (int)(((Next() >> 32) * (ulong)n) >> 32);

    public bool NextBool() => (Next() >> 63) != 0;

    /// <summary>Uniform double in [0, 1) from the top 53 bits.</summary>
    public double NextDouble() => (Next() >> 11) * (1.0 / (1UL << 53));

    /// <summary>Standard normal draw (Box–Muller); for simulations, not for the report's resampling.</summary>
    public double NextNormal()
    {
        double u = 1 - NextDouble(), v = NextDouble();
        return Math.Sqrt(-2 * Math.Log(u)) * Math.Cos(2 * Math.PI * v);
    }
}
