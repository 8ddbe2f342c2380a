namespace KeyValueLab.Statistics;

/// <summary>One hierarchical resample: <see cref="Clusters"/>[j] is the j-th drawn cluster and <see cref="Cases"/>[j]
/// the case indices drawn inside it (each a multiset of 0..size−1).</summary>
public readonly record struct ClusterDraw(int[] Clusters, int[][] Cases);

/// <summary>One hierarchical resample with strata inside clusters: <see cref="Cases"/>[j][s] are the indices drawn
/// inside stratum s of the j-th drawn cluster, <see cref="Clusters"/>[j].</summary>
public readonly record struct StratifiedClusterDraw(int[] Clusters, int[][][] Cases);

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
        int resamples = DefaultResamples, ulong seed = DefaultSeed) =>
        HierarchicalStratified([sizes], draw => statistic(draw.Cases[0]), resamples, seed);

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
        var flat = new int[sizes.Count][];
        return HierarchicalStratified([.. sizes.Select(n => (IReadOnlyList<int>)[n])], draw =>
        {
            for (int j = 0; j < flat.Length; j++) flat[j] = draw.Cases[j][0];
            return statistic(new ClusterDraw(draw.Clusters, flat));
        }, resamples, seed);
    }

    /// <summary>
    /// The general form of <see cref="Hierarchical"/> and <see cref="Stratified"/>: clusters drawn with replacement
    /// (skipped with one cluster), then inside each drawn cluster every stratum resampled on its own.
    /// <paramref name="sizes"/>[c][s] is the size of stratum s of cluster c.
    /// </summary>
    public static Estimate HierarchicalStratified(IReadOnlyList<IReadOnlyList<int>> sizes, Func<StratifiedClusterDraw, double> statistic,
        int resamples = DefaultResamples, ulong seed = DefaultSeed)
    {
        int k = sizes.Count;
        if (k == 0 || sizes.Any(c => c.Count == 0 || c.Any(n => n <= 0))) return new Estimate(double.NaN, double.NaN, double.NaN);
        var identity = new StratifiedClusterDraw([.. Enumerable.Range(0, k)],
            [.. sizes.Select(c => c.Select(n => Enumerable.Range(0, n).ToArray()).ToArray())]);
        double value = statistic(identity);
        var random = new SplitMix64(seed);
        var clusters = new int[k];
        var cases = new int[k][][];
        var draw = new StratifiedClusterDraw(clusters, cases);
        var stats = new List<double>(resamples);
        for (int r = 0; r < resamples; r++)
        {
            for (int j = 0; j < k; j++) clusters[j] = k == 1 ? 0 : random.NextInt(k);
            for (int j = 0; j < k; j++)
            {
                var strata = sizes[clusters[j]];
                if (!Fits(cases[j], strata)) cases[j] = [.. strata.Select(n => new int[n])];
                foreach (var c in cases[j])
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

    /// <summary>Whether the buffers of a draw slot already have the strata sizes of the cluster drawn into it.</summary>
    private static bool Fits(int[][]? buffers, IReadOnlyList<int> strata)
    {
        if (buffers is null || buffers.Length != strata.Count) return false;
        for (int s = 0; s < strata.Count; s++) if (buffers[s].Length != strata[s]) return false;
        return true;
    }

    private static Estimate Interval(double value, List<double> stats)
    {
        stats.Sort();
        return new Estimate(value, Quantile(stats, 0.025), Quantile(stats, 0.975));
    }
}
