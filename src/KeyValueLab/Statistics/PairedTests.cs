namespace KeyValueLab.Statistics;

/// <summary>
/// Two-sided tests of paired data: Wilcoxon signed-rank (exact or normal), exact McNemar, and the paired permutation
/// test (exact or Monte Carlo). Each switches to its exact form where few pairs differ, since that is where the
/// normal approximation and random permutations are least trustworthy.
/// </summary>
public static class PairedTests
{
    /// <summary>Up to this many non-zero differences the Wilcoxon test is exact (SciPy's threshold for its default).</summary>
    public const int ExactWilcoxonLimit = 50;
    /// <summary>Up to this many exchangeable pairs the permutation test enumerates all 2ⁿ swaps.</summary>
    public const int ExactPermutationLimit = 16;

    public const string ExactWilcoxon = "exact Wilcoxon signed-rank";
    public const string Wilcoxon = "Wilcoxon signed-rank";

    /// <summary>
    /// Two-sided Wilcoxon signed-rank test of paired differences against 0. Zero differences are dropped first
    /// (Wilcoxon's method, SciPy's <c>zero_method="wilcox"</c>); tied |d| get their average rank. The statistic is W+
    /// (sum of the ranks of positive d). Up to <see cref="ExactWilcoxonLimit"/> differences the p-value is exact: the
    /// distribution of W+ over all 2ⁿ sign patterns of these ranks (with ties, the exact conditional distribution),
    /// p = P(|W+ − E| ≥ |w − E|). Otherwise the normal approximation with the tie-corrected variance
    /// n(n+1)(2n+1)/24 − Σ(t³ − t)/48 and a continuity correction of ½ (as R's <c>wilcox.test(correct = TRUE)</c>).
    /// p = 1 when nothing is left to rank.
    /// </summary>
    public static TestResult WilcoxonSignedRank(IReadOnlyList<double> differences)
    {
        var d = differences.Where(x => !double.IsNaN(x) && !IsZero(x)).ToArray();
        int n = d.Length;
        if (n == 0) return new TestResult(n <= ExactWilcoxonLimit ? ExactWilcoxon : Wilcoxon, 0, 1);
        var order = Enumerable.Range(0, n).OrderBy(i => Math.Abs(d[i])).ToArray();
        var doubledRanks = new int[n];  // 2 × average rank: always an integer
        double tieTerm = 0;
        for (int start = 0; start < n;)
        {
            int end = start + 1;
            while (end < n && NearlyEqual(Math.Abs(d[order[end]]), Math.Abs(d[order[start]]))) end++;
            int doubled = start + 1 + end;  // average of ranks start+1 .. end, times 2
            for (int k = start; k < end; k++) doubledRanks[order[k]] = doubled;
            double t = end - start;
            tieTerm += t * t * t - t;
            start = end;
        }
        int doubledPlus = 0;
        for (int i = 0; i < n; i++) if (d[i] > 0) doubledPlus += doubledRanks[i];
        double wPlus = doubledPlus / 2.0;
        if (n <= ExactWilcoxonLimit) return new TestResult(ExactWilcoxon, wPlus, ExactSignedRankP(doubledRanks, doubledPlus));

        double mean = n * (n + 1) / 4.0;
        double variance = n * (n + 1) * (2.0 * n + 1) / 24.0 - tieTerm / 48.0;
        if (variance <= 0) return new TestResult(Wilcoxon, wPlus, 1);
        double deviation = Math.Max(0, Math.Abs(wPlus - mean) - 0.5);
        return new TestResult(Wilcoxon, wPlus, Math.Min(1, Normal.TwoSidedP(deviation / Math.Sqrt(variance))));
    }

    /// <summary>P(|T − E| ≥ |t − E|) where T is the sum of a random subset of the (doubled) ranks, each in with probability ½.</summary>
    private static double ExactSignedRankP(int[] doubledRanks, int observed)
    {
        int total = doubledRanks.Sum();
        var probability = new double[total + 1];
        probability[0] = 1;
        int reach = 0;
        foreach (int r in doubledRanks)
        {
            reach += r;
            for (int s = reach; s >= 0; s--)
                probability[s] = 0.5 * probability[s] + (s >= r ? 0.5 * probability[s - r] : 0);
        }
        // |2s − total| compares distances from the mean total/2 in integers.
        int distance = Math.Abs(2 * observed - total);
        double p = 0;
        for (int s = 0; s <= total; s++)
            if (Math.Abs(2 * s - total) >= distance) p += probability[s];
        return Math.Min(1, p);
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

    /// <summary>
    /// Paired permutation (randomisation) test, Fisher (1935): under H0 the two members of each pair are exchangeable,
    /// so each pair is swapped with probability ½ and the statistic recomputed; the statistic gets the swap flags
    /// (true = swapped). Up to <see cref="ExactPermutationLimit"/> pairs all 2ⁿ swap patterns are enumerated and
    /// p = #{|s| ≥ |s_obs|} / 2ⁿ; beyond, <paramref name="permutations"/> random patterns give
    /// p = (1 + #{|s| ≥ |s_obs|}) / (1 + B).
    /// </summary>
    public static TestResult PairedPermutation(int n, Func<bool[], double> statistic, int permutations, ulong seed = Bootstrap.DefaultSeed)
    {
        var swapped = new bool[n];
        double observed = statistic(swapped);
        bool exact = n <= ExactPermutationLimit;
        string name = exact ? "exact paired permutation" : "paired permutation";
        if (n == 0 || double.IsNaN(observed)) return new TestResult(name, observed, 1);
        double threshold = Math.Abs(observed) - 1e-12 * Math.Max(1, Math.Abs(observed));
        int extreme = 0;
        if (exact)
        {
            int patterns = 1 << n;
            for (int mask = 0; mask < patterns; mask++)
            {
                for (int i = 0; i < n; i++) swapped[i] = (mask >> i & 1) != 0;
                if (Math.Abs(statistic(swapped)) >= threshold) extreme++;
            }
            return new TestResult(name, observed, (double)extreme / patterns);
        }
        var random = new SplitMix64(seed);
        for (int r = 0; r < permutations; r++)
        {
            for (int i = 0; i < n; i++) swapped[i] = random.NextBool();
            if (Math.Abs(statistic(swapped)) >= threshold) extreme++;
        }
        return new TestResult(name, observed, (1.0 + extreme) / (1.0 + permutations));
    }

    private static bool IsZero(double x) => Math.Abs(x) <= 1e-9;

    private static bool NearlyEqual(double a, double b) => Math.Abs(a - b) <= 1e-9 * Math.Max(1, Math.Max(Math.Abs(a), Math.Abs(b)));
}
