namespace KeyValueLab.Study.Report;

/// <summary>A point estimate with its 95% interval.</summary>
public readonly record struct Estimate(double Value, double Low, double High)
{
    /// <summary>True when the interval lies entirely above 0 or entirely below 0.</summary>
    public bool ExcludesZero => Low > 0 || High < 0;
}

/// <summary>A paired test's result: its name, the statistic it computed and the two-sided p-value.</summary>
public sealed record TestResult(string Test, double Statistic, double P);

/// <summary>
/// The statistics of the report, kept free of I/O so they can be checked by hand: percentile bootstrap, harmonic
/// mean, Wilcoxon signed-rank (normal approximation), exact McNemar, Wilson interval and a paired permutation test.
/// Every random draw comes from <see cref="SplitMix64"/> with a fixed seed, so the same input gives the same numbers.
/// </summary>
public static class ReportStatistics
{
    /// <summary>Seed of every bootstrap and permutation; fixed so that reports are reproducible byte for byte.</summary>
    public const ulong DefaultSeed = 20240219;

    /// <summary>Arithmetic mean; NaN for an empty list.</summary>
    public static double Mean(IReadOnlyList<double> xs)
    {
        if (xs.Count == 0) return double.NaN;
        double sum = 0;
        for (int i = 0; i < xs.Count; i++) sum += xs[i];
        return sum / xs.Count;
    }

    /// <summary>Harmonic mean of three non-negative scores, as ROME's Score; 0 when any is 0.</summary>
    public static double HarmonicMean(double a, double b, double c) =>
        a <= 0 || b <= 0 || c <= 0 ? 0 : 3 / (1 / a + 1 / b + 1 / c);

    /// <summary>Quantile q of sorted values, linear between order statistics (Hyndman–Fan type 7, numpy's default).</summary>
    public static double Quantile(IReadOnlyList<double> sorted, double q)
    {
        if (sorted.Count == 0) return double.NaN;
        double h = (sorted.Count - 1) * q;
        int lo = (int)Math.Floor(h);
        int hi = Math.Min(lo + 1, sorted.Count - 1);
        return sorted[lo] + (h - lo) * (sorted[hi] - sorted[lo]);
    }

    /// <summary>
    /// The statistic on all n items and its 95% percentile-bootstrap interval: <paramref name="resamples"/> times draw n
    /// indices with replacement and recompute. The statistic gets the drawn indices (a multiset of 0..n−1).
    /// </summary>
    public static Estimate Bootstrap(int n, Func<int[], double> statistic, int resamples, ulong seed = DefaultSeed)
    {
        if (n <= 0) return new Estimate(double.NaN, double.NaN, double.NaN);
        var all = new int[n];
        for (int i = 0; i < n; i++) all[i] = i;
        double value = statistic(all);
        var random = new SplitMix64(seed);
        var draws = new int[n];
        var stats = new List<double>(resamples);
        for (int r = 0; r < resamples; r++)
        {
            for (int i = 0; i < n; i++) draws[i] = random.NextInt(n);
            double s = statistic(draws);
            if (!double.IsNaN(s)) stats.Add(s);
        }
        stats.Sort();
        return new Estimate(value, Quantile(stats, 0.025), Quantile(stats, 0.975));
    }

    /// <summary>Mean of the values with its percentile-bootstrap interval.</summary>
    public static Estimate BootstrapMean(IReadOnlyList<double> values, int resamples, ulong seed = DefaultSeed)
    {
        double[] v = [.. values];
        return Bootstrap(v.Length, idx => MeanAt(v, idx), resamples, seed);
    }

    /// <summary>Mean of values[i] over the given indices.</summary>
    public static double MeanAt(double[] values, int[] indices)
    {
        if (indices.Length == 0) return double.NaN;
        double sum = 0;
        foreach (int i in indices) sum += values[i];
        return sum / indices.Length;
    }

    /// <summary>
    /// Stratified bootstrap: each resample draws, inside every stratum, as many items as the stratum has. The statistic
    /// gets one index list per stratum.
    /// </summary>
    public static Estimate StratifiedBootstrap(IReadOnlyList<int> sizes, Func<int[][], double> statistic,
        int resamples, ulong seed = DefaultSeed)
    {
        if (sizes.Count == 0 || sizes.Any(s => s <= 0)) return new Estimate(double.NaN, double.NaN, double.NaN);
        var all = sizes.Select(s => Enumerable.Range(0, s).ToArray()).ToArray();
        double value = statistic(all);
        var random = new SplitMix64(seed);
        var draws = sizes.Select(s => new int[s]).ToArray();
        var stats = new List<double>(resamples);
        for (int r = 0; r < resamples; r++)
        {
            foreach (var d in draws)
                for (int i = 0; i < d.Length; i++) d[i] = random.NextInt(d.Length);
            double s = statistic(draws);
            if (!double.IsNaN(s)) stats.Add(s);
        }
        stats.Sort();
        return new Estimate(value, Quantile(stats, 0.025), Quantile(stats, 0.975));
    }

    /// <summary>
    /// Two-sided Wilcoxon signed-rank test of paired differences against 0, normal approximation without continuity
    /// correction. Zero differences are dropped first (Wilcoxon's method); tied |d| get their average rank and the
    /// variance is reduced by Σ(t³ − t)/48 over tie groups. The statistic is W+ (sum of the ranks of positive d).
    /// p = 1 when nothing is left to rank.
    /// </summary>
    public static TestResult WilcoxonSignedRank(IReadOnlyList<double> differences)
    {
        const string name = "Wilcoxon signed-rank";
        var d = differences.Where(x => !double.IsNaN(x) && !IsZero(x)).ToArray();
        int n = d.Length;
        if (n == 0) return new TestResult(name, 0, 1);
        var order = Enumerable.Range(0, n).OrderBy(i => Math.Abs(d[i])).ToArray();
        var ranks = new double[n];
        double tieTerm = 0;
        for (int start = 0; start < n;)
        {
            int end = start + 1;
            while (end < n && NearlyEqual(Math.Abs(d[order[end]]), Math.Abs(d[order[start]]))) end++;
            double rank = (start + 1 + end) / 2.0;  // average of ranks start+1 .. end
            for (int k = start; k < end; k++) ranks[order[k]] = rank;
            double t = end - start;
            tieTerm += t * t * t - t;
            start = end;
        }
        double wPlus = 0;
        for (int i = 0; i < n; i++) if (d[i] > 0) wPlus += ranks[i];
        double mean = n * (n + 1) / 4.0;
        double variance = n * (n + 1) * (2.0 * n + 1) / 24.0 - tieTerm / 48.0;
        if (variance <= 0) return new TestResult(name, wPlus, 1);
        double z = (wPlus - mean) / Math.Sqrt(variance);
        return new TestResult(name, wPlus, Math.Min(1, TwoSidedNormalP(z)));
    }

    /// <summary>
    /// Exact McNemar test: under H0 the b + c discordant pairs split as Binomial(b + c, ½);
    /// p = min(1, 2·P(X ≤ min(b, c))). The statistic is b − c.
    /// </summary>
    public static TestResult McNemarExact(int b, int c)
    {
        const string name = "exact McNemar";
        int n = b + c;
        if (n == 0) return new TestResult(name, 0, 1);
        int k = Math.Min(b, c);
        double logHalfPowN = -n * Math.Log(2);
        double logChoose = 0, tail = 0;
        for (int i = 0; i <= k; i++)
        {
            if (i > 0) logChoose += Math.Log(n - i + 1) - Math.Log(i);
            tail += Math.Exp(logChoose + logHalfPowN);
        }
        return new TestResult(name, b - c, Math.Min(1, 2 * tail));
    }

    /// <summary>Wilson score interval for k successes in n trials (z = 1.96), as fractions: the one the tuner reports.</summary>
    public static (double Low, double High) Wilson(int k, int n) => Tuning.TaskEvaluator.Wilson(k, n);

    /// <summary>
    /// Monte-Carlo paired permutation test: under H0 the two members of each pair are exchangeable, so each random
    /// permutation swaps every pair with probability ½ and recomputes the statistic. p = (1 + #{|s| ≥ |s_obs|}) / (1 + B).
    /// The statistic gets the swap flags (true = swapped).
    /// </summary>
    public static TestResult PairedPermutation(int n, Func<bool[], double> statistic, int permutations, ulong seed = DefaultSeed)
    {
        const string name = "paired permutation";
        var swapped = new bool[n];
        double observed = statistic(swapped);
        if (n == 0 || double.IsNaN(observed)) return new TestResult(name, observed, 1);
        var random = new SplitMix64(seed);
        int extreme = 0;
        double threshold = Math.Abs(observed) - 1e-12 * Math.Max(1, Math.Abs(observed));
        for (int r = 0; r < permutations; r++)
        {
            for (int i = 0; i < n; i++) swapped[i] = random.NextBool();
            if (Math.Abs(statistic(swapped)) >= threshold) extreme++;
        }
        return new TestResult(name, observed, (1.0 + extreme) / (1.0 + permutations));
    }

    /// <summary>Two-sided p-value of a standard normal statistic: erfc(|z|/√2).</summary>
    public static double TwoSidedNormalP(double z) => Erfc(Math.Abs(z) / Math.Sqrt(2));

    /// <summary>
    /// Complementary error function by the Chebyshev fit of Numerical Recipes (3rd ed., §6.2.2, erfccheb);
    /// relative error below 1.2e-7 everywhere, enough for p-values printed to three significant digits.
    /// </summary>
    public static double Erfc(double x)
    {
        if (x < 0) return 2 - Erfc(-x);
        double t = 1 / (1 + 0.5 * x);
        double poly = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806
            + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
        return t * Math.Exp(-x * x + poly);
    }

    private static bool IsZero(double x) => Math.Abs(x) <= 1e-9;

    private static bool NearlyEqual(double a, double b) => Math.Abs(a - b) <= 1e-9 * Math.Max(1, Math.Max(Math.Abs(a), Math.Abs(b)));
}

/// <summary>
/// SplitMix64 (Steele, Lea, Flood 2014): a tiny generator whose sequence is fixed by its definition, unlike
/// <see cref="Random"/>, whose algorithm may change between .NET versions.
/// </summary>
public sealed class SplitMix64(ulong seed)
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
}
