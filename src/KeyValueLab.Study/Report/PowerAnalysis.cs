using KeyValueLab.Statistics;

namespace KeyValueLab.Study.Report;

/// <summary>
/// The smallest keys − values difference a comparison detects with 80% power at α = 0.05, from the study's own
/// variances (within and between organisms), at the study's own size; for editing also the cases per organism that
/// would bring it down to <see cref="PowerAnalysis.TargetPoints"/> (null when more organisms are needed instead).
/// </summary>
public sealed record DetectableDifference(string Comparison, string Metric, int Organisms, int CasesPerOrganism,
    double Minimum, bool BetweenKnown, int? CasesForTarget);

public static class PowerAnalysis
{
    /// <summary>The difference a full study should be able to detect, in points (issue 10: at most 5 for ES, PS, NS).</summary>
    public const double TargetPoints = 5;

    /// <summary>ES, PS, NS (or the zsRE three) of every keys − values editing comparison.</summary>
    public static IReadOnlyList<DetectableDifference> Editing(EditingResults editing)
    {
        var names = editing.Headline.Three.Select(m => m.Name).ToHashSet();
        var rows = new List<DetectableDifference>();
        foreach (var d in editing.Differences.Where(d => names.Contains(d.Metric) && d.Components is not null))
        {
            var c = d.Components!;
            int k = Math.Max(1, c.Clusters), m = Math.Max(1, (int)Math.Round(c.CasesPerCluster));
            double minimum = Power.MinimumDetectableDifference(c, k, m);
            rows.Add(new DetectableDifference(Describe(d), d.Metric, k, m, minimum, !double.IsNaN(c.Between), CasesFor(c, k)));
        }
        return rows;
    }

    /// <summary>Mean accuracy over tasks of every tuning comparison: SE² = Σ_t SE_t² / T² over the tasks' own variances.</summary>
    public static IReadOnlyList<DetectableDifference> Tuning(TuningResults tuning)
    {
        var rows = new List<DetectableDifference>();
        foreach (var group in tuning.Pairs.Where(p => p.Task != TuningResults.MeanOverTasks && p.Components is not null).GroupBy(p => (p.A, p.B)))
        {
            var tasks = group.ToList();
            double sum = 0;
            foreach (var t in tasks)
            {
                var c = t.Components!;
                double se = Power.StandardError(c, Math.Max(1, c.Clusters), Math.Max(1, (int)Math.Round(c.CasesPerCluster)));
                sum += se * se;
            }
            var first = tasks[0].Components!;
            rows.Add(new DetectableDifference($"{group.Key.A} vs {group.Key.B}", TuningResults.MeanOverTasks, Math.Max(1, first.Clusters),
                (int)Math.Round(tasks.Average(t => t.Components!.CasesPerCluster)), Power.MinimumDetectableDifference(Math.Sqrt(sum) / tasks.Count),
                tasks.All(t => !double.IsNaN(t.Components!.Between)), null));
        }
        return rows;
    }

    /// <summary>Smallest m with MDD(K, m) ≤ the target, or null when the between-organism part alone exceeds it.</summary>
    private static int? CasesFor(VarianceComponents c, int organisms)
    {
        double z = Normal.Quantile(0.975) + Normal.Quantile(0.8);
        double room = TargetPoints / z * (TargetPoints / z) - (double.IsNaN(c.Between) ? 0 : c.Between) / organisms;
        if (room <= 0) return null;
        return Math.Max(1, (int)Math.Ceiling(c.Within / (organisms * room)));
    }

    private static string Describe(PairedDifference d) =>
        (d.Keys.Method == d.Values.Method ? $"{d.Keys.Method} {d.Keys.Side} vs {d.Values.Side}" : $"{d.Keys.Method} {d.Keys.Side} vs {d.Values.Method} {d.Values.Side}")
        + $", L{d.Keys.Layers}" + (d.Keys.Mode == "single" ? "" : $" ({d.Keys.Mode})");
}
