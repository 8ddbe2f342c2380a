namespace KeyValueLab.Statistics;

/// <summary>
/// Variance components of clustered values (one-way random-effects model x = μ + u_cluster + e, by the method of
/// moments of the one-way ANOVA): the within-cluster variance σ²_w (pooled), the between-cluster variance σ²_b
/// (floored at 0; unknown, NaN, with one cluster) and the mean cluster size.
/// </summary>
public sealed record VarianceComponents(int Clusters, int Cases, double Within, double Between)
{
    public double CasesPerCluster => Clusters == 0 ? double.NaN : (double)Cases / Clusters;

    public static VarianceComponents Of(IReadOnlyList<IReadOnlyList<double>> clusters)
    {
        var groups = clusters.Where(c => c.Count > 0).ToList();
        int k = groups.Count, total = groups.Sum(c => c.Count);
        if (k == 0) return new VarianceComponents(0, 0, double.NaN, double.NaN);
        double grand = groups.SelectMany(c => c).Average();
        double within = 0, between = 0, sumSquares = 0;
        foreach (var c in groups)
        {
            double mean = Descriptive.Mean(c);
            foreach (double x in c) within += (x - mean) * (x - mean);
            between += c.Count * (mean - grand) * (mean - grand);
            sumSquares += (double)c.Count * c.Count;
        }
        double withinVariance = total > k ? within / (total - k) : double.NaN;
        if (k < 2) return new VarianceComponents(k, total, withinVariance, double.NaN);
        double meanSquareBetween = between / (k - 1);
        double n0 = (total - sumSquares / total) / (k - 1);  // effective cluster size for unequal sizes
        double betweenVariance = double.IsNaN(withinVariance) ? meanSquareBetween : Math.Max(0, (meanSquareBetween - withinVariance) / n0);
        return new VarianceComponents(k, total, withinVariance, betweenVariance);
    }
}

/// <summary>Power of the mean paired difference over clusters (organisms) and their cases.</summary>
public static class Power
{
    /// <summary>
    /// The smallest true mean difference that a two-sided test at level <paramref name="alpha"/> detects with
    /// probability <paramref name="power"/> when the mean over <paramref name="clusters"/> clusters of
    /// <paramref name="casesPerCluster"/> cases each is compared with 0: (z₁₋α/₂ + z_power)·SE, with
    /// SE = √(σ²_b/K + σ²_w/(K·m)), the normal approximation (with few clusters a t-test needs somewhat more). An
    /// unknown between-cluster variance (one cluster observed) counts as 0, so the answer is then a lower bound.
    /// </summary>
    public static double MinimumDetectableDifference(VarianceComponents components, int clusters, int casesPerCluster,
        double alpha = 0.05, double power = 0.8) =>
        MinimumDetectableDifference(StandardError(components, clusters, casesPerCluster), alpha, power);

    /// <summary>(z₁₋α/₂ + z_power)·SE: the smallest difference a two-sided z-test detects with the given power.</summary>
    public static double MinimumDetectableDifference(double standardError, double alpha = 0.05, double power = 0.8) =>
        (Normal.Quantile(1 - alpha / 2) + Normal.Quantile(power)) * standardError;

    /// <summary>Standard error of the mean over K clusters of m cases: √(σ²_b/K + σ²_w/(K·m)); σ²_b unknown counts as 0.</summary>
    public static double StandardError(VarianceComponents components, int clusters, int casesPerCluster)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(clusters, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(casesPerCluster, 1);
        double between = double.IsNaN(components.Between) ? 0 : components.Between;
        return Math.Sqrt(between / clusters + components.Within / ((double)clusters * casesPerCluster));
    }
}
