using KeyValueLab.Evaluation;
using KeyValueLab.Statistics;

namespace KeyValueLab.Study.Report;

/// <summary>One editing condition: the units that share method, side, layers and mode (all seeds together).</summary>
public sealed record EditCondition(string Method, string Side, string Layers, string Mode)
{
    public override string ToString() => $"{Method} {Side} L{Layers}";
}

/// <summary>A case-level metric of SPEC §3 as the report names it.</summary>
public sealed record EditMetric(string Key, string Name, Func<CaseMetrics, double?> Select)
{
    public static readonly EditMetric ES = new("es", "ES", m => m.ES);
    public static readonly EditMetric PS = new("ps", "PS", m => m.PS);
    public static readonly EditMetric NS = new("ns", "NS", m => m.NS);
    public static readonly EditMetric ZsreEfficacy = new("zsre_efficacy", "zsRE efficacy", m => m.ZsreEfficacy);
    public static readonly EditMetric ZsreParaphrase = new("zsre_paraphrase", "zsRE paraphrase", m => m.ZsreParaphrase);
    public static readonly EditMetric ZsreSpecificity = new("zsre_specificity", "zsRE specificity", m => m.ZsreSpecificity);

    /// <summary>Every metric the report knows, in the order of its tables.</summary>
    public static readonly IReadOnlyList<EditMetric> All =
    [
        ES, PS, NS,
        new("em", "EM", m => m.EM), new("pm", "PM", m => m.PM), new("nm", "NM", m => m.NM),
        new("exact_rewrite", "Exact rewrite", m => m.RewriteExact),
        new("exact_paraphrase", "Exact paraphrase", m => m.ParaphraseExact),
        new("exact_neighborhood", "Exact neighbourhood", m => m.NeighborhoodExact),
        new("ge", "GE", m => m.GE),
        ZsreEfficacy, ZsreParaphrase, ZsreSpecificity,
    ];
}

/// <summary>Which three metrics stand for efficacy, generalisation and locality: ES/PS/NS on CounterFact, the token
/// accuracies on zsRE. Score (their harmonic mean) exists only for CounterFact, as in ROME and MEMIT.</summary>
public sealed record HeadlineMetrics(EditMetric Efficacy, EditMetric Generalization, EditMetric Locality, bool HasScore)
{
    public IReadOnlyList<EditMetric> Three => [Efficacy, Generalization, Locality];

    public static HeadlineMetrics For(IReadOnlyList<EditUnitResult> edits) =>
        edits.Any(e => e.Post.ES is not null) || !edits.Any(e => e.Post.ZsreEfficacy is not null)
            ? new(EditMetric.ES, EditMetric.PS, EditMetric.NS, true)
            : new(EditMetric.ZsreEfficacy, EditMetric.ZsreParaphrase, EditMetric.ZsreSpecificity, false);
}

/// <summary>Post-edit means with intervals (hierarchical bootstrap: organisms, then cases), and the unedited model's
/// means on the same cases. <see cref="ByOrganism"/> holds, per metric key, each organism's mean and their spread.</summary>
public sealed record EditSummaryRow(EditCondition Condition, int Cases, int Seeds,
    IReadOnlyDictionary<string, Estimate> Post, IReadOnlyDictionary<string, double> Pre)
{
    public IReadOnlyList<string> Organisms { get; init; } = [];
    public IReadOnlyDictionary<string, ClusteredEstimate> ByOrganism { get; init; } = new Dictionary<string, ClusteredEstimate>();
}

/// <summary>
/// keys − values on the same organism, method, layers, mode, seed and case, for one metric (or Score, or seconds).
/// <see cref="Difference"/> is the mean over organisms with its hierarchical interval; <see cref="PerOrganism"/> each
/// organism's mean difference (in <see cref="Organisms"/>' order); <see cref="Differing"/> the pairs whose two sides
/// differ at all; <see cref="Components"/> the variance of the differences within and between organisms.
/// </summary>
public sealed record PairedDifference(EditCondition Keys, EditCondition Values, string Metric, int Pairs,
    double KeysMean, double ValuesMean, Estimate Difference, TestResult Test)
{
    public IReadOnlyList<string> Organisms { get; init; } = [];
    public IReadOnlyList<double> PerOrganism { get; init; } = [];
    public double BetweenOrganismSd { get; init; } = double.NaN;
    public int Differing { get; init; }
    public VarianceComponents? Components { get; init; }
}

/// <summary>Mean seconds per edit of one condition with its bootstrap interval, and the weights it changed.</summary>
public sealed record EditCostRow(EditCondition Condition, int Edits, Estimate SecondsPerEdit, double ParametersChanged);

/// <summary>Everything the report says about editing.</summary>
public sealed record EditingResults(HeadlineMetrics Headline, IReadOnlyList<EditMetric> Metrics, IReadOnlyList<EditSummaryRow> Summary,
    IReadOnlyList<PairedDifference> Differences, IReadOnlyList<EditCostRow> Costs, IReadOnlyList<PairedDifference> SecondsDifferences)
{
    public const string Score = "Score";
    public const string Seconds = "Seconds per edit";
    public const string CpuLogRatio = "log CPU-seconds ratio";

    /// <summary>Per pair of cases, ln(keys' CPU seconds / values' CPU seconds) of the edit, with its hierarchical interval:
    /// the timing claim's endpoint. A ratio of two timings on one machine and thread count is, to first order, the same on
    /// any machine (a faster CPU divides both), where a difference of seconds is not. Empty for stores without CPU times.</summary>
    public IReadOnlyList<PairedDifference> CpuRatios { get; init; } = [];
}

/// <summary>Groups editing units into conditions, summarises them and pairs keys with values case by case.</summary>
public static class EditingAnalysis
{
    public static bool IsKeysSide(string side) => side == "keys" || side.StartsWith("keys:", StringComparison.Ordinal);

    /// <summary>Sides in the paper's order: keys (GPT-2/GPT-J), keys:up, keys:gate (Llama), values, then anything else.</summary>
    public static int SideOrder(string side) => side switch
    {
        "keys" => 0, "keys:up" => 1, "keys:gate" => 2, "values" => 3, _ => 4,
    };

    public static EditingResults Analyze(IReadOnlyList<EditUnitResult> edits, ReportOptions options)
    {
        var headline = HeadlineMetrics.For(edits);
        var metrics = EditMetric.All.Where(m => edits.Any(e => m.Select(e.Post) is not null)).ToList();
        var groups = edits
            .GroupBy(e => new EditCondition(MethodLabel(e), e.Side, e.Layers, e.Mode))
            .OrderBy(g => g.Key.Method, StringComparer.Ordinal)
            .ThenBy(g => g.Key.Layers, StringComparer.Ordinal)
            .ThenBy(g => g.Key.Mode, StringComparer.Ordinal)
            .ThenBy(g => SideOrder(g.Key.Side)).ThenBy(g => g.Key.Side, StringComparer.Ordinal)
            .Select(g => (Condition: g.Key, Units: g.OrderBy(u => u.Organism, StringComparer.Ordinal).ThenBy(u => u.Seed)
                .ThenBy(u => u.CaseId, StringComparer.Ordinal).ToList()))
            .ToList();

        var summary = groups.Select(g => Summarise(g.Condition, g.Units, metrics, headline, options)).ToList();
        var costs = groups.Select(g => new EditCostRow(g.Condition, g.Units.Count,
            Bootstrap.Mean(g.Units.Select(u => u.Seconds).ToArray(), options.Resamples, options.Seed),
            g.Units.Average(u => (double)u.ParametersChanged))).ToList();

        var differences = new List<PairedDifference>();
        var seconds = new List<PairedDifference>();
        var ratios = new List<PairedDifference>();
        // Keys and values are paired within a method family: FT-type editors with themselves, Key-ROME with ROME
        // (the paper's closed-form editor on the values and its key-side counterpart).
        foreach (var family in groups.GroupBy(g => (Family(g.Condition.Method), g.Condition.Layers, g.Condition.Mode)))
        {
            var values = family.FirstOrDefault(g => g.Condition.Side == "values");
            if (values.Units is null) continue;
            foreach (var keys in family.Where(g => IsKeysSide(g.Condition.Side)))
            {
                var pairs = Pair(keys.Units, values.Units);
                if (pairs.Count == 0) continue;
                foreach (var metric in metrics)
                    if (Difference(keys.Condition, values.Condition, metric.Name, pairs, u => metric.Select(u.Post), options) is { } d)
                        differences.Add(d);
                if (headline.HasScore)
                    differences.Add(ScoreDifference(keys.Condition, values.Condition, pairs, headline, options));
                if (Difference(keys.Condition, values.Condition, EditingResults.Seconds, pairs, u => u.Seconds, options) is { } s)
                    seconds.Add(s);
                if (Difference(keys.Condition, values.Condition, EditingResults.CpuLogRatio, pairs, u => u.CpuSeconds is > 0 and double c ? Math.Log(c) : null, options) is { } r)
                    ratios.Add(r);
            }
        }
        return new EditingResults(headline, metrics, summary, differences, costs, seconds) { CpuRatios = ratios };
    }

    /// <summary>The method as the report names a condition: with its variant when it has one ("FT [lr=5e-3]", a second
    /// FT budget), so that each budget is its own condition and keys are paired with values at the same budget.</summary>
    public static string MethodLabel(EditUnitResult e) => e.Variant.Length == 0 ? e.Method : $"{e.Method} [{e.Variant}]";

    /// <summary>The editor family used to pair keys with values: KeyROME pairs with ROME, every other method with itself.</summary>
    public static string Family(string method) => method is "KeyROME" or "Key-ROME" ? "ROME" : method;

    private static EditSummaryRow Summarise(EditCondition condition, IReadOnlyList<EditUnitResult> units,
        IReadOnlyList<EditMetric> metrics, HeadlineMetrics headline, ReportOptions options)
    {
        var post = new Dictionary<string, Estimate>();
        var pre = new Dictionary<string, double>();
        var byOrganism = new Dictionary<string, ClusteredEstimate>();
        var organisms = Organisms(units.Select(u => u.Organism));
        var clusters = organisms.Select(o => units.Where(u => u.Organism == o).ToList()).ToList();
        foreach (var metric in metrics)
        {
            var postValues = clusters.Select(c => c.Select(u => metric.Select(u.Post)).OfType<double>().ToArray()).Where(c => c.Length > 0).ToList();
            if (postValues.Count > 0)
            {
                var clustered = Bootstrap.ClusteredMean(postValues, options.Resamples, options.Seed);
                post[metric.Key] = clustered.Pooled;
                byOrganism[metric.Key] = clustered;
            }
            var preValues = units.Select(u => metric.Select(u.Pre)).OfType<double>().ToArray();
            if (preValues.Length > 0) pre[metric.Key] = Descriptive.Mean(preValues);
        }
        if (headline.HasScore)
        {
            var columns = clusters.Select(c => headline.Three.Select(m => c.Select(u => ValueOf(m, u.Post)).ToArray()).ToArray()).ToArray();
            var score = Bootstrap.Hierarchical([.. clusters.Select(c => c.Count)],
                draw => MeanOverDrawnClusters(draw, (c, idx) => ScoreAt(columns[c], idx)), options.Resamples, options.Seed);
            var perOrganism = columns.Select(c => ScoreAt(c, [.. Enumerable.Range(0, c[0].Length)])).ToArray();
            post["score"] = score;
            byOrganism["score"] = new ClusteredEstimate(score, perOrganism, perOrganism.Length < 2 ? double.NaN : Math.Sqrt(Descriptive.Variance(perOrganism)));
            var preColumns = headline.Three.Select(m => units.Select(u => ValueOf(m, u.Pre)).ToArray()).ToArray();
            var all = Enumerable.Range(0, units.Count).ToArray();
            double preScore = ScoreAt(preColumns, all);
            if (!double.IsNaN(preScore)) pre["score"] = preScore;
        }
        return new EditSummaryRow(condition, units.Count, units.Select(u => u.Seed).Distinct().Count(), post, pre)
        {
            Organisms = organisms,
            ByOrganism = byOrganism,
        };

        static double ValueOf(EditMetric m, CaseMetrics c) => m.Select(c) ?? double.NaN;
    }

    /// <summary>The distinct organisms in a fixed order; "" stands for the one model of a study without organisms.</summary>
    public static IReadOnlyList<string> Organisms(IEnumerable<string> organisms) =>
        [.. organisms.Distinct().Order(StringComparer.Ordinal)];

    /// <summary>Mean over the drawn clusters of a per-cluster statistic (the cluster's index and its drawn cases).</summary>
    public static double MeanOverDrawnClusters(ClusterDraw draw, Func<int, int[], double> statistic)
    {
        double sum = 0;
        for (int j = 0; j < draw.Clusters.Length; j++) sum += statistic(draw.Clusters[j], draw.Cases[j]);
        return sum / draw.Clusters.Length;
    }

    /// <summary>Harmonic mean of the three case-averaged headline metrics over the given cases (NaN entries skipped).</summary>
    public static double ScoreAt(double[][] columns, int[] indices)
    {
        double es = MeanSkippingNaN(columns[0], indices), ps = MeanSkippingNaN(columns[1], indices), ns = MeanSkippingNaN(columns[2], indices);
        return double.IsNaN(es) || double.IsNaN(ps) || double.IsNaN(ns) ? double.NaN : Descriptive.HarmonicMean(es, ps, ns);
    }

    private static double MeanSkippingNaN(double[] values, int[] indices)
    {
        double sum = 0;
        int count = 0;
        foreach (int i in indices)
        {
            double v = values[i];
            if (double.IsNaN(v)) continue;
            sum += v;
            count++;
        }
        return count == 0 ? double.NaN : sum / count;
    }

    /// <summary>Units of the two sides that share organism, seed and case id, in a fixed order (organism first).</summary>
    private static List<(EditUnitResult Keys, EditUnitResult Values)> Pair(IReadOnlyList<EditUnitResult> keys, IReadOnlyList<EditUnitResult> values)
    {
        var byCase = new Dictionary<(string, int, string), EditUnitResult>();
        foreach (var v in values) byCase.TryAdd((v.Organism, v.Seed, v.CaseId), v);
        var pairs = new List<(EditUnitResult, EditUnitResult)>();
        var seen = new HashSet<(string, int, string)>();
        foreach (var k in keys)
            if (seen.Add((k.Organism, k.Seed, k.CaseId)) && byCase.TryGetValue((k.Organism, k.Seed, k.CaseId), out var v))
                pairs.Add((k, v));
        return pairs;
    }

    private static PairedDifference? Difference(EditCondition keys, EditCondition values, string name,
        IReadOnlyList<(EditUnitResult Keys, EditUnitResult Values)> pairs, Func<EditUnitResult, double?> select, ReportOptions options)
    {
        var rows = new List<(string Organism, double K, double V)>();
        foreach (var (a, b) in pairs)
            if (select(a) is double x && select(b) is double y) rows.Add((a.Organism, x, y));
        if (rows.Count == 0) return null;
        var organisms = Organisms(rows.Select(r => r.Organism));
        var clusters = organisms.Select(o => rows.Where(r => r.Organism == o).ToList()).ToList();
        var d = clusters.Select(c => (IReadOnlyList<double>)[.. c.Select(r => r.K - r.V)]).ToList();
        var clustered = Bootstrap.ClusteredMean(d, options.Resamples, options.Seed);
        double keysMean = clusters.Average(c => c.Average(r => r.K)), valuesMean = clusters.Average(c => c.Average(r => r.V));
        return new PairedDifference(keys, values, name, rows.Count, keysMean, valuesMean, clustered.Pooled,
            PairedTests.WilcoxonSignedRank([.. d.SelectMany(x => x)]))
        {
            Organisms = organisms,
            PerOrganism = clustered.PerCluster,
            BetweenOrganismSd = clustered.BetweenClusterSd,
            Differing = rows.Count(r => r.K != r.V),
            Components = VarianceComponents.Of(d),
        };
    }

    /// <summary>Score is not a per-case number: resample organisms and their pairs of cases and recompute both harmonic
    /// means per organism; the test swaps keys and values inside random pairs.</summary>
    private static PairedDifference ScoreDifference(EditCondition keys, EditCondition values,
        IReadOnlyList<(EditUnitResult Keys, EditUnitResult Values)> pairs, HeadlineMetrics headline, ReportOptions options)
    {
        var organisms = Organisms(pairs.Select(p => p.Keys.Organism));
        var clusters = organisms.Select(o => pairs.Where(p => p.Keys.Organism == o).ToList()).ToList();
        var k = clusters.Select(c => headline.Three.Select(m => c.Select(p => m.Select(p.Keys.Post) ?? double.NaN).ToArray()).ToArray()).ToArray();
        var v = clusters.Select(c => headline.Three.Select(m => c.Select(p => m.Select(p.Values.Post) ?? double.NaN).ToArray()).ToArray()).ToArray();
        var all = clusters.Select(c => Enumerable.Range(0, c.Count).ToArray()).ToArray();
        var perOrganism = Enumerable.Range(0, clusters.Count).Select(c => ScoreAt(k[c], all[c]) - ScoreAt(v[c], all[c])).ToArray();
        double keysScore = Enumerable.Range(0, clusters.Count).Average(c => ScoreAt(k[c], all[c]));
        double valuesScore = Enumerable.Range(0, clusters.Count).Average(c => ScoreAt(v[c], all[c]));
        var estimate = Bootstrap.Hierarchical([.. clusters.Select(c => c.Count)],
            draw => MeanOverDrawnClusters(draw, (c, idx) => ScoreAt(k[c], idx) - ScoreAt(v[c], idx)), options.Resamples, options.Seed);
        // Swap flags run over all pairs, organism by organism.
        var offsets = new int[clusters.Count];
        for (int c = 1; c < clusters.Count; c++) offsets[c] = offsets[c - 1] + clusters[c - 1].Count;
        var swappedK = k.Select(c => c.Select(m => new double[m.Length]).ToArray()).ToArray();
        var swappedV = v.Select(c => c.Select(m => new double[m.Length]).ToArray()).ToArray();
        var test = PairedTests.PairedPermutation(pairs.Count, swap =>
        {
            double sum = 0;
            for (int c = 0; c < clusters.Count; c++)
            {
                for (int m = 0; m < 3; m++)
                    for (int i = 0; i < clusters[c].Count; i++)
                        (swappedK[c][m][i], swappedV[c][m][i]) = swap[offsets[c] + i] ? (v[c][m][i], k[c][m][i]) : (k[c][m][i], v[c][m][i]);
                sum += ScoreAt(swappedK[c], all[c]) - ScoreAt(swappedV[c], all[c]);
            }
            return sum / clusters.Count;
        }, options.Permutations, options.Seed);
        int differing = pairs.Count(p => headline.Three.Any(m => m.Select(p.Keys.Post) != m.Select(p.Values.Post)));
        return new PairedDifference(keys, values, EditingResults.Score, pairs.Count, keysScore, valuesScore, estimate, test)
        {
            Organisms = organisms,
            PerOrganism = perOrganism,
            BetweenOrganismSd = perOrganism.Length < 2 ? double.NaN : Math.Sqrt(Descriptive.Variance(perOrganism)),
            Differing = differing,
        };
    }
}
