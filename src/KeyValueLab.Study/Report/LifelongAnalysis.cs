using KeyValueLab.Statistics;

namespace KeyValueLab.Study.Report;

/// <summary>One lifelong condition: the sequences that share method (with its variant), side, layers, mode, chunk size and arm.</summary>
public sealed record LifelongCondition(string Method, string Side, string Layers, string Mode, int Chunk, string Arm)
{
    public override string ToString() => $"{Method} {Side} L{Layers} ({Mode}, B={Chunk})";
}

/// <summary>A per-case score of a lifelong unit: the teacher-forced ES/PS/NS and the generation-based gen_es/gen_ps/gen_ns.</summary>
public sealed record LifelongMetric(string Key, string Name, Func<LifelongCaseResult, double?> Post, Func<LifelongCaseResult, double?>? Pre)
{
    public static readonly IReadOnlyList<LifelongMetric> All =
    [
        new("es", "ES", c => c.Post.ES, c => c.Pre.ES),
        new("ps", "PS", c => c.Post.PS, c => c.Pre.PS),
        new("ns", "NS", c => c.Post.NS, c => c.Pre.NS),
        new("gen_es", "gen_es", c => c.Generation?.GenES, null),
        new("gen_ps", "gen_ps", c => c.Generation?.GenPS, null),
        new("gen_ns", "gen_ns", c => c.Generation?.GenNS, null),
    ];
}

/// <summary>Final-model means with hierarchical intervals (organisms, then cases), each organism's mean, the unedited model's
/// means on the same cases, and the editor's seconds per edit (mean over sequences).</summary>
public sealed record LifelongSummaryRow(LifelongCondition Condition, int Sequences, int Cases, int EditsPerSequence,
    IReadOnlyDictionary<string, Estimate> Final, IReadOnlyDictionary<string, ClusteredEstimate> ByOrganism, IReadOnlyDictionary<string, double> Pre,
    double SecondsPerEdit)
{
    public IReadOnlyList<string> Organisms { get; init; } = [];
}

/// <summary>One point of a curve: after <see cref="Edits"/> edits, the mean over organisms of each organism's mean over its
/// sequences' checkpoint means (every case edited so far), by metric key.</summary>
public sealed record LifelongCurvePoint(int Edits, int Sequences, IReadOnlyDictionary<string, double> Means);

public sealed record LifelongCurve(LifelongCondition Condition, IReadOnlyList<LifelongCurvePoint> Points);

/// <summary>How a lifelong keys − values comparison came out: keys better, values better, inconclusive, or not testable (no pair differs).</summary>
public enum LifelongVerdict { KeysBetter, ValuesBetter, Inconclusive, NotTestable }

/// <summary>
/// keys − values at the final model on the same organism, seed and case, for one metric: the mean over organisms with its
/// hierarchical interval, the two-sided Wilcoxon signed-rank test over all pairs, its Holm-adjusted p among every lifelong
/// comparison of the study, and the verdict by the single-edit rules (interval excludes 0, adjusted p &lt; alpha, every
/// organism the same way; not testable when no pair differs).
/// </summary>
public sealed record LifelongDifference(LifelongCondition Keys, LifelongCondition Values, string Metric, int Pairs, double KeysMean, double ValuesMean,
    Estimate Difference, TestResult Test)
{
    public IReadOnlyList<string> Organisms { get; init; } = [];
    public IReadOnlyList<double> PerOrganism { get; init; } = [];
    public int Differing { get; init; }
    public double AdjustedP { get; init; } = double.NaN;
    public LifelongVerdict Verdict { get; init; } = LifelongVerdict.Inconclusive;
    public string Reason { get; init; } = "";
}

public sealed record LifelongResults(IReadOnlyList<LifelongMetric> Metrics, IReadOnlyList<LifelongSummaryRow> Summary, IReadOnlyList<LifelongCurve> Curves,
    IReadOnlyList<LifelongDifference> Differences);

/// <summary>Groups lifelong units into conditions, summarises their final models, draws their curves and pairs keys with values.</summary>
public static class LifelongAnalysis
{
    /// <summary>The editor family that pairs keys with values: Key-MEMIT with MEMIT, Key-AlphaEdit with AlphaEdit, Key-ROME with ROME,
    /// FT-type editors with themselves (on both sides).</summary>
    public static string Family(string method) => method switch
    {
        "KeyMEMIT" => "MEMIT",
        "KeyAlphaEdit" => "AlphaEdit",
        "KeyROME" or "Key-ROME" => "ROME",
        _ => method,
    };

    public static LifelongResults Analyze(IReadOnlyList<LifelongUnitResult> units, ReportOptions options)
    {
        var metrics = LifelongMetric.All.Where(m => units.Any(u => u.Cases.Any(c => m.Post(c) is not null))).ToList();
        var groups = units
            .GroupBy(u => new LifelongCondition(u.Variant.Length == 0 ? u.Method : $"{u.Method} [{u.Variant}]", u.Side, u.Layers, u.Mode, u.Chunk, u.Arm))
            .OrderBy(g => g.Key.Arm, StringComparer.Ordinal)
            .ThenBy(g => Family(g.Key.Method), StringComparer.Ordinal)
            .ThenBy(g => g.Key.Layers, StringComparer.Ordinal)
            .ThenBy(g => g.Key.Mode, StringComparer.Ordinal)
            .ThenBy(g => g.Key.Chunk)
            .ThenBy(g => EditingAnalysis.SideOrder(g.Key.Side)).ThenBy(g => g.Key.Method, StringComparer.Ordinal)
            .Select(g => (Condition: g.Key, Units: g.OrderBy(u => u.Organism, StringComparer.Ordinal).ThenBy(u => u.Seed).ToList()))
            .ToList();

        var summary = groups.Select(g => Summarise(g.Condition, g.Units, metrics, options)).ToList();
        var curves = groups.Select(g => Curve(g.Condition, g.Units, metrics)).ToList();
        var differences = new List<LifelongDifference>();
        foreach (var family in groups.GroupBy(g => (Family(FamilyMethod(g.Condition.Method)), Variant(g.Condition.Method), g.Condition.Layers, g.Condition.Mode, g.Condition.Chunk, g.Condition.Arm)))
        {
            var values = family.FirstOrDefault(g => g.Condition.Side == "values");
            if (values.Units is null) continue;
            foreach (var keys in family.Where(g => EditingAnalysis.IsKeysSide(g.Condition.Side)))
            {
                var pairs = Pair(keys.Units, values.Units);
                foreach (var metric in metrics)
                    if (Difference(keys.Condition, values.Condition, metric, pairs, options) is { } d) differences.Add(d);
            }
        }
        return new LifelongResults(metrics, summary, curves, Judge(differences, options));
    }

    /// <summary>"MEMIT [set]" → "MEMIT" and "[set]": the variant must match for two sides to pair.</summary>
    private static string FamilyMethod(string label) => label.Split(" [")[0];

    private static string Variant(string label) => label.Contains(" [", StringComparison.Ordinal) ? label[label.IndexOf(" [", StringComparison.Ordinal)..] : "";

    private static LifelongSummaryRow Summarise(LifelongCondition condition, IReadOnlyList<LifelongUnitResult> units, IReadOnlyList<LifelongMetric> metrics, ReportOptions options)
    {
        var organisms = EditingAnalysis.Organisms(units.Select(u => u.Organism));
        var clusters = organisms.Select(o => units.Where(u => u.Organism == o).SelectMany(u => u.Cases).ToList()).ToList();
        var final = new Dictionary<string, Estimate>();
        var byOrganism = new Dictionary<string, ClusteredEstimate>();
        var pre = new Dictionary<string, double>();
        foreach (var metric in metrics)
        {
            var values = clusters.Select(c => (IReadOnlyList<double>)[.. c.Select(metric.Post).OfType<double>()]).Where(c => c.Count > 0).ToList();
            if (values.Count > 0)
            {
                var clustered = Bootstrap.ClusteredMean(values, options.Resamples, options.Seed);
                final[metric.Key] = clustered.Pooled;
                byOrganism[metric.Key] = clustered;
            }
            if (metric.Pre is { } select && units.SelectMany(u => u.Cases).Select(select).OfType<double>().ToList() is { Count: > 0 } preValues)
                pre[metric.Key] = Descriptive.Mean(preValues);
        }
        int cases = units.Sum(u => u.Cases.Count);
        return new LifelongSummaryRow(condition, units.Count, cases, units.Max(u => u.Cases.Count), final, byOrganism, pre, units.Sum(u => u.Seconds) / Math.Max(1, cases))
        {
            Organisms = organisms,
        };
    }

    /// <summary>At each checkpoint's number of edits: per organism the mean over its sequences, then the mean over organisms.</summary>
    private static LifelongCurve Curve(LifelongCondition condition, IReadOnlyList<LifelongUnitResult> units, IReadOnlyList<LifelongMetric> metrics)
    {
        var points = new List<LifelongCurvePoint>();
        foreach (int edits in units.SelectMany(u => u.Checkpoints.Select(c => c.Edits)).Distinct().Order())
        {
            var at = units.Select(u => (u.Organism, Checkpoint: u.Checkpoints.FirstOrDefault(c => c.Edits == edits))).Where(x => x.Checkpoint is not null).ToList();
            var means = new SortedDictionary<string, double>(StringComparer.Ordinal);
            foreach (var metric in metrics)
            {
                var perOrganism = at.Where(x => x.Checkpoint!.Means.ContainsKey(metric.Key)).GroupBy(x => x.Organism)
                    .Select(g => g.Average(x => x.Checkpoint!.Means[metric.Key])).ToList();
                if (perOrganism.Count > 0) means[metric.Key] = perOrganism.Average();
            }
            points.Add(new LifelongCurvePoint(edits, at.Count, means));
        }
        return new LifelongCurve(condition, points);
    }

    /// <summary>Cases of the two sides' sequences that share organism, seed and case id, in a fixed order (organism first).</summary>
    private static List<(string Organism, LifelongCaseResult Keys, LifelongCaseResult Values)> Pair(IReadOnlyList<LifelongUnitResult> keys, IReadOnlyList<LifelongUnitResult> values)
    {
        var byCase = new Dictionary<(string, int, string), LifelongCaseResult>();
        foreach (var v in values)
            foreach (var c in v.Cases) byCase.TryAdd((v.Organism, v.Seed, c.CaseId), c);
        var pairs = new List<(string, LifelongCaseResult, LifelongCaseResult)>();
        var seen = new HashSet<(string, int, string)>();
        foreach (var k in keys)
            foreach (var c in k.Cases)
                if (seen.Add((k.Organism, k.Seed, c.CaseId)) && byCase.TryGetValue((k.Organism, k.Seed, c.CaseId), out var v))
                    pairs.Add((k.Organism, c, v));
        return pairs;
    }

    private static LifelongDifference? Difference(LifelongCondition keys, LifelongCondition values, LifelongMetric metric,
        IReadOnlyList<(string Organism, LifelongCaseResult Keys, LifelongCaseResult Values)> pairs, ReportOptions options)
    {
        var rows = pairs.Where(p => metric.Post(p.Keys) is not null && metric.Post(p.Values) is not null)
            .Select(p => (p.Organism, K: metric.Post(p.Keys)!.Value, V: metric.Post(p.Values)!.Value)).ToList();
        if (rows.Count == 0) return null;
        var organisms = EditingAnalysis.Organisms(rows.Select(r => r.Organism));
        var clusters = organisms.Select(o => rows.Where(r => r.Organism == o).ToList()).ToList();
        var d = clusters.Select(c => (IReadOnlyList<double>)[.. c.Select(r => r.K - r.V)]).ToList();
        var clustered = Bootstrap.ClusteredMean(d, options.Resamples, options.Seed);
        return new LifelongDifference(keys, values, metric.Name, rows.Count, clusters.Average(c => c.Average(r => r.K)), clusters.Average(c => c.Average(r => r.V)),
            clustered.Pooled, PairedTests.WilcoxonSignedRank([.. d.SelectMany(x => x)]))
        {
            Organisms = organisms,
            PerOrganism = clustered.PerCluster,
            Differing = rows.Count(r => r.K != r.V),
        };
    }

    /// <summary>Holm among the lifelong comparisons (those in which some pair differs), then each comparison's verdict.</summary>
    private static List<LifelongDifference> Judge(IReadOnlyList<LifelongDifference> differences, ReportOptions options)
    {
        var adjusted = MultipleTesting.Holm([.. differences.Select(d => d.Differing == 0 ? double.NaN : d.Test.P)]);
        return [.. differences.Select((d, i) =>
        {
            int sign = d.Difference.Low > 0 ? 1 : d.Difference.High < 0 ? -1 : 0;
            (LifelongVerdict verdict, string reason) = d.Differing == 0
                ? (LifelongVerdict.NotTestable, $"no pair differs: both sides give the same result on all {d.Pairs} paired cases")
                : sign == 0 ? (LifelongVerdict.Inconclusive, "interval includes 0")
                : !(adjusted[i] < options.Alpha) ? (LifelongVerdict.Inconclusive, "test not significant after Holm correction")
                : d.PerOrganism.Count >= 2 && !d.PerOrganism.All(x => Math.Sign(x) == sign)
                    ? (LifelongVerdict.Inconclusive, $"organisms disagree: {d.PerOrganism.Count(x => Math.Sign(x) != sign)} of {d.PerOrganism.Count} point the other way")
                : (sign > 0 ? LifelongVerdict.KeysBetter : LifelongVerdict.ValuesBetter, "");
            return d with { AdjustedP = adjusted[i], Verdict = verdict, Reason = reason };
        })];
    }
}
