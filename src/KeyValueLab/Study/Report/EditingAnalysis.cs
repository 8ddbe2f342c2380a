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

/// <summary>Post-edit means with intervals, and the unedited model's means on the same cases.</summary>
public sealed record EditSummaryRow(EditCondition Condition, int Cases, int Seeds,
    IReadOnlyDictionary<string, Estimate> Post, IReadOnlyDictionary<string, double> Pre);

/// <summary>keys − values on the same method, layers, mode, seed and case, for one metric (or Score, or seconds).</summary>
public sealed record PairedDifference(EditCondition Keys, EditCondition Values, string Metric, int Pairs,
    double KeysMean, double ValuesMean, Estimate Difference, TestResult Test);

/// <summary>Mean seconds per edit of one condition with its bootstrap interval, and the weights it changed.</summary>
public sealed record EditCostRow(EditCondition Condition, int Edits, Estimate SecondsPerEdit, double ParametersChanged);

/// <summary>Everything the report says about editing.</summary>
public sealed record EditingResults(HeadlineMetrics Headline, IReadOnlyList<EditMetric> Metrics, IReadOnlyList<EditSummaryRow> Summary,
    IReadOnlyList<PairedDifference> Differences, IReadOnlyList<EditCostRow> Costs, IReadOnlyList<PairedDifference> SecondsDifferences)
{
    public const string Score = "Score";
    public const string Seconds = "Seconds per edit";
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
            .GroupBy(e => new EditCondition(e.Method, e.Side, e.Layers, e.Mode))
            .OrderBy(g => g.Key.Method, StringComparer.Ordinal)
            .ThenBy(g => g.Key.Layers, StringComparer.Ordinal)
            .ThenBy(g => g.Key.Mode, StringComparer.Ordinal)
            .ThenBy(g => SideOrder(g.Key.Side)).ThenBy(g => g.Key.Side, StringComparer.Ordinal)
            .Select(g => (Condition: g.Key, Units: g.OrderBy(u => u.Seed).ThenBy(u => u.CaseId, StringComparer.Ordinal).ToList()))
            .ToList();

        var summary = groups.Select(g => Summarise(g.Condition, g.Units, metrics, headline, options)).ToList();
        var costs = groups.Select(g => new EditCostRow(g.Condition, g.Units.Count,
            Bootstrap.Mean(g.Units.Select(u => u.Seconds).ToArray(), options.Resamples, options.Seed),
            g.Units.Average(u => (double)u.ParametersChanged))).ToList();

        var differences = new List<PairedDifference>();
        var seconds = new List<PairedDifference>();
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
            }
        }
        return new EditingResults(headline, metrics, summary, differences, costs, seconds);
    }

    /// <summary>The editor family used to pair keys with values: KeyROME pairs with ROME, every other method with itself.</summary>
    public static string Family(string method) => method is "KeyROME" or "Key-ROME" ? "ROME" : method;

    private static EditSummaryRow Summarise(EditCondition condition, IReadOnlyList<EditUnitResult> units,
        IReadOnlyList<EditMetric> metrics, HeadlineMetrics headline, ReportOptions options)
    {
        var post = new Dictionary<string, Estimate>();
        var pre = new Dictionary<string, double>();
        foreach (var metric in metrics)
        {
            var postValues = units.Select(u => metric.Select(u.Post)).OfType<double>().ToArray();
            if (postValues.Length > 0) post[metric.Key] = Bootstrap.Mean(postValues, options.Resamples, options.Seed);
            var preValues = units.Select(u => metric.Select(u.Pre)).OfType<double>().ToArray();
            if (preValues.Length > 0) pre[metric.Key] = Descriptive.Mean(preValues);
        }
        if (headline.HasScore)
        {
            var columns = headline.Three.Select(m => units.Select(u => ValueOf(m, u.Post)).ToArray()).ToArray();
            post["score"] = Bootstrap.Percentile(units.Count, idx => ScoreAt(columns, idx), options.Resamples, options.Seed);
            var preColumns = headline.Three.Select(m => units.Select(u => ValueOf(m, u.Pre)).ToArray()).ToArray();
            var all = Enumerable.Range(0, units.Count).ToArray();
            double preScore = ScoreAt(preColumns, all);
            if (!double.IsNaN(preScore)) pre["score"] = preScore;
        }
        return new EditSummaryRow(condition, units.Count, units.Select(u => u.Seed).Distinct().Count(), post, pre);

        static double ValueOf(EditMetric m, CaseMetrics c) => m.Select(c) ?? double.NaN;
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

    /// <summary>Units of the two sides that share seed and case id, in a fixed order.</summary>
    private static List<(EditUnitResult Keys, EditUnitResult Values)> Pair(IReadOnlyList<EditUnitResult> keys, IReadOnlyList<EditUnitResult> values)
    {
        var byCase = new Dictionary<(int, string), EditUnitResult>();
        foreach (var v in values) byCase.TryAdd((v.Seed, v.CaseId), v);
        var pairs = new List<(EditUnitResult, EditUnitResult)>();
        var seen = new HashSet<(int, string)>();
        foreach (var k in keys)
            if (seen.Add((k.Seed, k.CaseId)) && byCase.TryGetValue((k.Seed, k.CaseId), out var v))
                pairs.Add((k, v));
        return pairs;
    }

    private static PairedDifference? Difference(EditCondition keys, EditCondition values, string name,
        IReadOnlyList<(EditUnitResult Keys, EditUnitResult Values)> pairs, Func<EditUnitResult, double?> select, ReportOptions options)
    {
        var k = new List<double>();
        var v = new List<double>();
        foreach (var (a, b) in pairs)
            if (select(a) is double x && select(b) is double y) { k.Add(x); v.Add(y); }
        if (k.Count == 0) return null;
        var d = k.Zip(v, (x, y) => x - y).ToArray();
        return new PairedDifference(keys, values, name, d.Length, Descriptive.Mean(k), Descriptive.Mean(v),
            Bootstrap.Mean(d, options.Resamples, options.Seed), PairedTests.WilcoxonSignedRank(d));
    }

    /// <summary>Score is not a per-case number: resample pairs of cases and recompute both harmonic means; the test
    /// swaps keys and values inside random pairs.</summary>
    private static PairedDifference ScoreDifference(EditCondition keys, EditCondition values,
        IReadOnlyList<(EditUnitResult Keys, EditUnitResult Values)> pairs, HeadlineMetrics headline, ReportOptions options)
    {
        var k = headline.Three.Select(m => pairs.Select(p => m.Select(p.Keys.Post) ?? double.NaN).ToArray()).ToArray();
        var v = headline.Three.Select(m => pairs.Select(p => m.Select(p.Values.Post) ?? double.NaN).ToArray()).ToArray();
        var all = Enumerable.Range(0, pairs.Count).ToArray();
        double keysScore = ScoreAt(k, all), valuesScore = ScoreAt(v, all);
        var estimate = Bootstrap.Percentile(pairs.Count, idx => ScoreAt(k, idx) - ScoreAt(v, idx), options.Resamples, options.Seed);
        var swappedK = k.Select(c => new double[c.Length]).ToArray();
        var swappedV = v.Select(c => new double[c.Length]).ToArray();
        var test = PairedTests.PairedPermutation(pairs.Count, swap =>
        {
            for (int m = 0; m < 3; m++)
                for (int i = 0; i < pairs.Count; i++)
                    (swappedK[m][i], swappedV[m][i]) = swap[i] ? (v[m][i], k[m][i]) : (k[m][i], v[m][i]);
            return ScoreAt(swappedK, all) - ScoreAt(swappedV, all);
        }, options.Permutations, options.Seed);
        return new PairedDifference(keys, values, EditingResults.Score, pairs.Count, keysScore, valuesScore, estimate, test);
    }
}
