namespace KeyValueLab.Statistics;

/// <summary>One hierarchical resample: <see cref="Clusters"/>[j] is the j-th drawn cluster and <see cref="Cases"/>[j]
/// the case indices drawn inside it (each a multiset of 0..size−1).</summary>
public readonly record struct ClusterDraw(int[] Clusters, int[][] Cases);

/// <summary>A mean over clusters with its hierarchical-bootstrap interval, each cluster's own mean, and the spread
/// (standard deviation) of the cluster means: NaN with one cluster.</summary>
public sealed record ClusteredEstimate(Estimate Pooled, IReadOnlyList<double> PerCluster, double BetweenClusterSd);

/// <summary>
/// The one bootstrap of the code base: percentile intervals (2.5th and 97.5th percentiles of the resampled statistic,
/// Efron &amp; Tibshirani 1993 §13.3) with type-7 quantiles, every draw from <see cref="SplitMix64"/> with a fixed seed,
/// so the same input gives the same interval in <c>edit-eval</c> and in the study report.
/// </summary>
public static class Bootstrap
{
    /// <summary>Resamples per interval (the percentile interval needs 1,000 or more).</summary>
    public const int DefaultResamples = 2000;
    /// <summary>Seed of every bootstrap and permutation; fixed so that reports are reproducible byte for byte.</summary>
    public const ulong DefaultSeed = 20240219;

    /// <summary>Quantile q of sorted values, linear between order statistics (Hyndman–Fan type 7, R's and numpy's default).</summary>
    public static double Quantile(IReadOnlyList<double> sorted, double q)
    {
        if (sorted.Count == 0) return double.NaN;
        double h = (sorted.Count - 1) * q;
        int lo = (int)Math.Floor(h);
        int hi = Math.Min(lo + 1, sorted.Count - 1);
        return sorted[lo] + (h - lo) * (sorted[hi] - sorted[lo]);
    }

    /// <summary>
    /// The statistic on all n items and its 95% percentile interval: <paramref name="resamples"/> times draw n indices
    /// with replacement and recompute. The statistic gets the drawn indices (a multiset of 0..n−1).
    /// </summary>
    public static Estimate Percentile(int n, Func<int[], double> statistic, int resamples = DefaultResamples, ulong seed = DefaultSeed) =>
        Stratified([n], idx => statistic(idx[0]), resamples, seed);

    /// <summary>Mean of the values with its percentile interval.</summary>
    public static Estimate Mean(IReadOnlyList<double> values, int resamples = DefaultResamples, ulong seed = DefaultSeed)
    {
        double[] v = [.. values];
        return Percentile(v.Length, idx => Descriptive.MeanAt(v, idx), resamples, seed);
    }

    /// <summary>
    /// Stratified bootstrap: each resample draws, inside every stratum, as many items as the stratum has. The statistic
    /// gets one index list per stratum. NaN statistics of a resample are left out of the percentiles.
    /// </summary>
    public static Estimate Stratified(IReadOnlyList<int> sizes, Func<int[][], double> statistic,
        int resamples = DefaultResamples, ulong seed = DefaultSeed)
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
        return Interval(value, stats);
    }

    /// <summary>
    /// Hierarchical (two-stage) bootstrap for clustered data (Davison &amp; Hinkley 1997, §3.8): each resample draws as
    /// many clusters as there are, with replacement, then inside every drawn cluster as many cases as it has, with
    /// replacement. With one cluster the first stage is skipped, so the draws are exactly those of
    /// <see cref="Percentile"/>. Resampling both stages slightly overstates the variance when the clusters differ
    /// little (a conservative interval); with few clusters the interval is only as good as the clusters are many.
    /// </summary>
    public static Estimate Hierarchical(IReadOnlyList<int> sizes, Func<ClusterDraw, double> statistic,
        int resamples = DefaultResamples, ulong seed = DefaultSeed)
    {
        int k = sizes.Count;
        if (k == 0 || sizes.Any(s => s <= 0)) return new Estimate(double.NaN, double.NaN, double.NaN);
        var identity = new ClusterDraw([.. Enumerable.Range(0, k)], [.. sizes.Select(s => Enumerable.Range(0, s).ToArray())]);
        double value = statistic(identity);
        var random = new SplitMix64(seed);
        var clusters = new int[k];
        var cases = new int[k][];
        var draw = new ClusterDraw(clusters, cases);
        var stats = new List<double>(resamples);
        for (int r = 0; r < resamples; r++)
        {
            for (int j = 0; j < k; j++)
            {
                clusters[j] = k == 1 ? 0 : random.NextInt(k);
                int n = sizes[clusters[j]];
                if (cases[j]?.Length != n) cases[j] = new int[n];
            }
            for (int j = 0; j < k; j++)
            {
                var c = cases[j];
                for (int i = 0; i < c.Length; i++) c[i] = random.NextInt(c.Length);
            }
            double s = statistic(draw);
            if (!double.IsNaN(s)) stats.Add(s);
        }
        return Interval(value, stats);
    }

    /// <summary>
    /// The mean over clusters of each cluster's mean (every cluster weighs the same: the cluster is the replication
    /// unit) with its <see cref="Hierarchical"/> interval, the per-cluster means and their standard deviation.
    /// </summary>
    public static ClusteredEstimate ClusteredMean(IReadOnlyList<IReadOnlyList<double>> clusters, int resamples = DefaultResamples,
        ulong seed = DefaultSeed)
    {
        double[][] v = [.. clusters.Select(c => c.ToArray())];
        var perCluster = v.Select(c => Descriptive.Mean(c)).ToArray();
        var pooled = Hierarchical(v.Select(c => c.Length).ToArray(), draw =>
        {
            double sum = 0;
            for (int j = 0; j < draw.Clusters.Length; j++) sum += Descriptive.MeanAt(v[draw.Clusters[j]], draw.Cases[j]);
            return sum / draw.Clusters.Length;
        }, resamples, seed);
        return new ClusteredEstimate(pooled, perCluster, perCluster.Length < 2 ? double.NaN : Math.Sqrt(Descriptive.Variance(perCluster)));
    }

    private static Estimate Interval(double value, List<double> stats)
    {
        stats.Sort();
        return new Estimate(value, Quantile(stats, 0.025), Quantile(stats, 0.975));
    }
}
