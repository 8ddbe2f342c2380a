using System.Globalization;
using KeyValueLab.Statistics;

namespace KeyValueLab.Study.Report;

public enum Verdict { Held, Opposite, Inconclusive, Mixed, NoData }

/// <summary>One comparison behind a claim: what was compared, the difference, its interval, the test and its verdict.</summary>
public sealed record ClaimEvidence(string Comparison, string Unit, int Pairs, string PairsNoun, Estimate Difference, TestResult Test, Verdict Verdict);

/// <summary>One of the paper's claims, judged over every comparison the study has for it.</summary>
public sealed record ClaimResult(string Id, string Claim, string OppositeText, Verdict Verdict, IReadOnlyList<ClaimEvidence> Evidence)
{
    public string VerdictText => Verdict switch
    {
        Verdict.Held => "held",
        Verdict.Opposite => $"did not hold ({OppositeText})",
        Verdict.Inconclusive => Evidence.Any(e => !e.Difference.ExcludesZero) ? "inconclusive (interval includes 0)" : "inconclusive (test not significant)",
        Verdict.Mixed => $"mixed (held in {Evidence.Count(e => e.Verdict == Verdict.Held)} of {Evidence.Count} comparisons, "
            + $"{OppositeText} in {Evidence.Count(e => e.Verdict == Verdict.Opposite)})",
        _ => "not tested (no data)",
    };
}

/// <summary>
/// The paper's five claims (SPEC §1) judged on the study: (a) keys beat values on efficacy, (b) on generalisation,
/// (c) on locality, (d) in LoRA tuning (mean accuracy over tasks), (e) values cost more time to update. A comparison
/// holds when its 95% interval excludes 0 in the claim's direction and its test gives p &lt; alpha; the opposite when
/// both point the other way; otherwise it is inconclusive.
/// </summary>
public static class PaperClaims
{
    public static IReadOnlyList<ClaimResult> Judge(EditingResults? editing, TuningResults? tuning, ReportOptions options)
    {
        var claims = new List<ClaimResult>();
        var metricClaims = new (string Id, string Text, Func<HeadlineMetrics, EditMetric> Metric)[]
        {
            ("a", "Keys better than values on efficacy", h => h.Efficacy),
            ("b", "Keys better than values on generalisation", h => h.Generalization),
            ("c", "Keys better than values on locality", h => h.Locality),
        };
        foreach (var (id, text, metric) in metricClaims)
        {
            var evidence = new List<ClaimEvidence>();
            string name = editing is null ? "" : metric(editing.Headline).Name;
            if (editing is not null)
                foreach (var d in editing.Differences.Where(d => d.Metric == name))
                    evidence.Add(Evidence(Describe(d), "points", d.Pairs, "paired cases", d.Difference, d.Test, +1, options));
            claims.Add(Combine(id, editing is null ? text : $"{text} ({name})", "values better", evidence));
        }

        var tuningEvidence = new List<ClaimEvidence>();
        if (tuning is not null)
            foreach (var p in tuning.Pairs.Where(p => TuningAnalysis.IsKeysLabel(p.A) && p.B == TuningResults.Values
                && (p.Task == TuningResults.MeanOverTasks || tuning.Tasks.Count == 1)))
                tuningEvidence.Add(Evidence($"{p.A} vs {p.B}, {p.Task}", "points", p.Pairs, "paired examples", p.Difference, p.Test, +1, options));
        claims.Add(Combine("d", "Keys better than values in LoRA tuning (mean accuracy over tasks)", "values better", tuningEvidence));

        var timeEvidence = new List<ClaimEvidence>();
        if (editing is not null)
            foreach (var d in editing.SecondsDifferences)
                timeEvidence.Add(Evidence($"seconds per edit, {Describe(d)}", "s", d.Pairs, "paired cases", d.Difference, d.Test, -1, options));
        if (tuning is not null)
            foreach (var s in tuning.SecondsDifferences.Where(s => TuningAnalysis.IsKeysLabel(s.A) && s.B == TuningResults.Values))
                timeEvidence.Add(Evidence($"training seconds, {s.A} vs {s.B}", "s", s.Seeds, "paired seeds", s.Difference, s.Test, -1, options));
        claims.Add(Combine("e", "Values cost more time to update than keys", "keys cost more", timeEvidence));
        return claims;
    }

    private static string Describe(PairedDifference d) =>
        (d.Keys.Method == d.Values.Method ? $"{d.Keys.Method} {d.Keys.Side} vs {d.Values.Side}" : $"{d.Keys.Method} {d.Keys.Side} vs {d.Values.Method} {d.Values.Side}") + $", layers {d.Keys.Layers}" + (d.Keys.Mode == "single" ? "" : $", {d.Keys.Mode}");

    /// <summary>direction +1: the claim predicts keys − values &gt; 0; −1: it predicts &lt; 0.</summary>
    private static ClaimEvidence Evidence(string comparison, string unit, int pairs, string noun, Estimate difference, TestResult test,
        int direction, ReportOptions options)
    {
        var verdict = Verdict.Inconclusive;
        if (difference.ExcludesZero && test.P < options.Alpha)
            verdict = (difference.Low > 0 ? 1 : -1) == direction ? Verdict.Held : Verdict.Opposite;
        return new ClaimEvidence(comparison, unit, pairs, noun, difference, test, verdict);
    }

    private static ClaimResult Combine(string id, string claim, string opposite, IReadOnlyList<ClaimEvidence> evidence)
    {
        var verdict = evidence.Count == 0 ? Verdict.NoData
            : evidence.All(e => e.Verdict == evidence[0].Verdict) ? evidence[0].Verdict
            : evidence.Any(e => e.Verdict != Verdict.Inconclusive) ? Verdict.Mixed : Verdict.Inconclusive;
        return new ClaimResult(id, claim, opposite, verdict, evidence);
    }

    /// <summary>"keys − values = +12.3 points [95% CI 8.1, 16.0], Wilcoxon signed-rank p = 0.00123, 200 paired cases".</summary>
    public static string Numbers(ClaimEvidence e)
    {
        var inv = CultureInfo.InvariantCulture;
        string value = e.Unit == "s" ? ReportFormat.SecondsWithInterval(e.Difference, signed: true) : ReportFormat.SignedWithInterval(e.Difference);
        int bracket = value.IndexOf(" [", StringComparison.Ordinal);
        string unit = e.Unit == "s" ? " s" : " points";
        string text = bracket < 0 ? value + unit : value[..bracket] + unit + " [95% CI " + value[(bracket + 2)..];
        return string.Create(inv, $"difference {text}, {e.Test.Test} {ReportFormat.PClause(e.Test.P)}, {e.Pairs} {e.PairsNoun}");
    }
}
