namespace KeyValueLab.Statistics;

/// <summary>Means, variances and the Wilson interval: the one copy of each in the code base.</summary>
public static class Descriptive
{
    /// <summary>Arithmetic mean; NaN for an empty list.</summary>
    public static double Mean(IReadOnlyList<double> xs)
    {
        if (xs.Count == 0) return double.NaN;
        double sum = 0;
        for (int i = 0; i < xs.Count; i++) sum += xs[i];
        return sum / xs.Count;
    }

    /// <summary>Mean of values[i] over the given indices (a bootstrap draw); NaN when there are none.</summary>
    public static double MeanAt(ReadOnlySpan<double> values, ReadOnlySpan<int> indices)
    {
        if (indices.Length == 0) return double.NaN;
        double sum = 0;
        foreach (int i in indices) sum += values[i];
        return sum / indices.Length;
    }

    /// <summary>Sample variance (divisor n − 1); NaN below two values.</summary>
    public static double Variance(IReadOnlyList<double> xs)
    {
        if (xs.Count < 2) return double.NaN;
        double mean = Mean(xs), ss = 0;
        for (int i = 0; i < xs.Count; i++) ss += (xs[i] - mean) * (xs[i] - mean);
        return ss / (xs.Count - 1);
    }

    /// <summary>Harmonic mean of three non-negative scores, as ROME's Score; 0 when any is 0.</summary>
    public static double HarmonicMean(double a, double b, double c) =>
        a <= 0 || b <= 0 || c <= 0 ? 0 : 3 / (1 / a + 1 / b + 1 / c);

    /// <summary>Wilson score interval (Wilson 1927) for k successes in n trials at z = 1.96, as fractions; (0, 1) when n = 0.</summary>
    public static (double Low, double High) Wilson(int k, int n)
    {
        if (n == 0) return (0, 1);
        const double z = 1.96;
        double p = (double)k / n, z2 = z * z;
        double centre = (p + z2 / (2 * n)) / (1 + z2 / n);
        double half = z * Math.Sqrt(p * (1 - p) / n + z2 / (4.0 * n * n)) / (1 + z2 / n);
        return (Math.Max(0, centre - half), Math.Min(1, centre + half));
    }
}
