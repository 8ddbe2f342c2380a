namespace KeyValueLab.Organism;

/// <summary>
/// SplitMix64 (Steele, Lea &amp; Flood 2014): a tiny generator whose sequence is fixed by this code alone, so the
/// same seed gives the same world on every .NET version and platform (System.Random promises no such thing).
/// </summary>
internal sealed class WorldRandom(ulong seed)
{
    private ulong _state = seed;

    /// <summary>A generator for one purpose, independent of the order in which other purposes draw numbers.</summary>
    public static WorldRandom For(long seed, string purpose)
    {
        ulong h = 14695981039346656037UL;  // FNV-1a of the purpose, mixed with the seed
        foreach (char c in purpose) { h ^= c; h *= 1099511628211UL; }
        return new WorldRandom(h ^ (ulong)seed * 0x9E3779B97F4A7C15UL);
    }

    public ulong NextUInt64()
    {
        ulong z = _state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>Uniform integer in [0, <paramref name="n"/>) (rejection sampling, no modulo bias).</summary>
    public int Next(int n)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(n, 1);
        ulong limit = ulong.MaxValue - ulong.MaxValue % (ulong)n;
        ulong x;
        do x = NextUInt64(); while (x >= limit);
        return (int)(x % (ulong)n);
    }

    /// <summary>Uniform double in [0, 1).</summary>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));

    public T Pick<T>(IReadOnlyList<T> items) => items[Next(items.Count)];

    /// <summary>Fisher–Yates shuffle in place.</summary>
    public void Shuffle<T>(IList<T> items)
    {
        for (int i = items.Count - 1; i > 0; i--)
        {
            int j = Next(i + 1);
            (items[i], items[j]) = (items[j], items[i]);
        }
    }

    /// <summary>A shuffled copy of <c>0..n-1</c>.</summary>
    public int[] Permutation(int n)
    {
        int[] p = [.. Enumerable.Range(0, n)];
        Shuffle(p);
        return p;
    }
}
