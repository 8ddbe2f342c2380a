using System.Globalization;
using KeyValueLab.Statistics;

namespace KeyValueLab.Study.Report;

public enum Verdict { Held, Opposite, Inconclusive, NotTestable, NoData }

/// <summary>
/// One comparison behind a claim: what was compared, the difference (mean over organisms) with its interval, the test,
/// its Holm-adjusted p-value, each organism's difference, how many pairs differ at all, and its verdict.
/// <see cref="Primary"/> marks the claim's primary endpoint, the one comparison its verdict rests on.
/// </summary>
public sealed record ClaimEvidence(string Comparison, string Unit, int Pairs, string PairsNoun, Estimate Difference, TestResult Test, Verdict Verdict)
{
    public bool Primary { get; init; }
    public double AdjustedP { get; init; } = double.NaN;
    public IReadOnlyList<string> Organisms { get; init; } = [];
    public IReadOnlyList<double> PerOrganism { get; init; } = [];
    public int Differing { get; init; }
    /// <summary>Why the comparison is inconclusive or not testable; empty otherwise.</summary>
    public string Reason { get; init; } = "";
}

/// <summary>One of the paper's claims, judged on its primary endpoint; the other comparisons are secondary.</summary>
public sealed record ClaimResult(string Id, string Claim, string OppositeText, Verdict Verdict, IReadOnlyList<ClaimEvidence> Evidence)
{
    public ClaimEvidence? PrimaryEvidence => Evidence.FirstOrDefault(e => e.Primary);

    public string VerdictText => Verdict switch
    {
        Verdict.Held => "held",
        Verdict.Opposite => $"did not hold ({OppositeText})",
        Verdict.Inconclusive => $"inconclusive ({PrimaryEvidence?.Reason})",
        Verdict.NotTestable => $"not testable ({PrimaryEvidence?.Reason})",
        _ => "not tested (no data)",
    };
}

/// <summary>
/// The paper's five claims (SPEC §1) judged on the study: (a) keys beat values on efficacy, (b) on generalisation,
/// (c) on locality, (d) in LoRA tuning (mean accuracy over tasks), (e) values cost more time to update.
/// <para>Each claim has one primary endpoint, fixed before looking at the data: for (a)–(c) the FT comparison of the
/// first keys side (keys, or keys:up on Llama) with the values at the first layers, single edits (the paper edits by
/// gradient fine-tuning); for (d) the first keys target set (+keys or +keys:up) against +values on the mean over
/// tasks; for (e) the keys/values ratio of CPU seconds per edit of (a)'s FT comparison (its log, paired by case, with the
/// hierarchical interval; wall seconds for stores without CPU times), or training seconds when the study has no edits. The
/// claim's verdict is its primary endpoint's. The primary p-values are Holm-corrected across the claims; the
/// secondary comparisons, reported beside them, are Holm-corrected among themselves.</para>
/// <para>A comparison holds when its 95% interval excludes 0 in the claim's direction, its Holm-adjusted p &lt; alpha,
/// and, with several organisms, every organism's own difference points the claimed way; the opposite when all three
/// point the other way; it is not testable when no pair differs at all (both sides at the same floor or ceiling,
/// e.g. both always right, always wrong, or always giving the same label) or, in tuning, when both sides sit at their
/// baselines (each gives a constant answer, or no better than the majority class: see <see cref="TuningAnalysis.AtBaseline"/>),
/// even if their constants differ; otherwise inconclusive.</para>
/// </summary>
public static class PaperClaims
{
    /// <summary>The unit of a comparison made on ln(keys/values): its numbers are printed as the ratio.</summary>
    public const string Ratio = "ratio";

    /// <summary>
    /// How far a run's keys/values CPU-time ratio moves between machines and runs, as the SD of ln(ratio), measured on the
    /// default study's FT keys:up vs values units (3 shipped organisms × 30 cases) in 9 runs: three MKL kernel sets
    /// (AVX-512, AVX2, AVX: different float paths and kernel shapes, a stand-in for other CPUs) × three repeats
    /// (docs/report.md, "The timing claim on any machine", where the arithmetic is). <see cref="TimingMachineSd"/> is the SD
    /// of the study's pooled ln ratio, <see cref="TimingOrganismMachineSd"/> that of one organism's. The case bootstrap
    /// cannot see this spread (the same cases are timed in every run), so the timing claim folds it in: its interval is
    /// widened in quadrature by z₀.₉₇₅·<see cref="TimingMachineSd"/> (by z₀.₉₇₅·<see cref="TimingOrganismMachineSd"/> in a
    /// study of one organism or one model), and each organism counts as pointing one way only beyond
    /// z₀.₉₇₅·<see cref="TimingOrganismMachineSd"/>.
    /// </summary>
    public const double TimingMachineSd = 0.036, TimingOrganismMachineSd = 0.112;

    /// <summary>The timing claim's interval with the machine-to-machine spread folded in: each half-width h becomes
    /// √(h² + (z₀.₉₇₅·<paramref name="machineSd"/>)²) around the same point estimate.</summary>
    public static Estimate WithMachineSpread(Estimate e, double machineSd)
    {
        double m = Normal.Quantile(0.975) * machineSd;
        return new Estimate(e.Value, e.Value - Math.Sqrt(Math.Pow(e.Value - e.Low, 2) + m * m), e.Value + Math.Sqrt(Math.Pow(e.High - e.Value, 2) + m * m));
    }

    private sealed record Candidate(string Comparison, string Unit, int Pairs, string Noun, Estimate Difference, TestResult Test,
        int Direction, IReadOnlyList<string> Organisms, IReadOnlyList<double> PerOrganism, int Differing, bool PreferredPrimary)
    {
        /// <summary>Why the comparison is not testable although pairs differ (both sides at their baselines); "" when it is testable.</summary>
        public string NotTestable { get; init; } = "";
        /// <summary>How far from 0 an organism's own difference must lie to count as pointing one way (the timing claim's machine margin); 0 otherwise.</summary>
        public double OrganismMargin { get; init; }
    }

    public static IReadOnlyList<ClaimResult> Judge(EditingResults? editing, TuningResults? tuning, ReportOptions options)
    {
        var claims = new List<(string Id, string Text, string Opposite, List<Candidate> Candidates)>();
        var metricClaims = new (string Id, string Text, Func<HeadlineMetrics, EditMetric> Metric)[]
        {
            ("a", "Keys better than values on efficacy", h => h.Efficacy),
            ("b", "Keys better than values on generalisation", h => h.Generalization),
            ("c", "Keys better than values on locality", h => h.Locality),
        };
        foreach (var (id, text, metric) in metricClaims)
        {
            var candidates = new List<Candidate>();
            string name = editing is null ? "" : metric(editing.Headline).Name;
            if (editing is not null)
                foreach (var d in editing.Differences.Where(d => d.Metric == name))
                    candidates.Add(FromEdit(Describe(d), "points", d, +1));
            claims.Add((id, editing is null ? text : $"{text} ({name})", "values better", candidates));
        }

        var tuningCandidates = new List<Candidate>();
        if (tuning is not null)
            foreach (var p in tuning.Pairs.Where(p => TuningAnalysis.IsKeysLabel(p.A) && p.B == TuningResults.Values
                && (p.Task == TuningResults.MeanOverTasks || tuning.Tasks.Count == 1)))
                tuningCandidates.Add(new Candidate($"{p.A} vs {p.B}, {p.Task}", "points", p.Pairs, "paired examples", p.Difference, p.Test, +1,
                    p.Organisms, p.PerOrganism, p.AOnly + p.BOnly, PreferredPrimary: true) { NotTestable = p.NotTestable });
        claims.Add(("d", "Keys better than values in LoRA tuning (mean accuracy over tasks)", "values better", tuningCandidates));

        var timeCandidates = new List<Candidate>();
        if (editing is not null)
        {
            // The ratio of CPU seconds where the store has them (machine-independent to first order); wall seconds otherwise.
            if (editing.CpuRatios.Count > 0)
                foreach (var d in editing.CpuRatios)
                    timeCandidates.Add(FromEdit($"keys/values CPU seconds per edit, {Describe(d)}", Ratio, d, -1) with
                    {
                        // With one organism (or one given model) the pooled value is that organism's, so it moves as one organism's does.
                        Difference = WithMachineSpread(d.Difference, d.PerOrganism.Count < 2 ? TimingOrganismMachineSd : TimingMachineSd),
                        OrganismMargin = Normal.Quantile(0.975) * TimingOrganismMachineSd,
                    });
            else
                foreach (var d in editing.SecondsDifferences)
                    timeCandidates.Add(FromEdit($"seconds per edit, {Describe(d)}", "s", d, -1));
        }
        if (tuning is not null)
            foreach (var s in tuning.SecondsDifferences.Where(s => TuningAnalysis.IsKeysLabel(s.A) && s.B == TuningResults.Values))
                timeCandidates.Add(new Candidate($"training seconds, {s.A} vs {s.B}", "s", s.Seeds, "paired seeds", s.Difference, s.Test, -1,
                    [], [], s.Differing, PreferredPrimary: editing is null));
        claims.Add(("e", "Values cost more time to update than keys", "keys cost more", timeCandidates));

        // The primary endpoint: the first preferred candidate, else the first one.
        var primaryIndex = claims.Select(c => c.Candidates.FindIndex(x => x.PreferredPrimary) is int i && i >= 0 ? i : c.Candidates.Count > 0 ? 0 : -1).ToList();
        var all = claims.SelectMany((c, ci) => c.Candidates.Select((x, xi) => (Claim: ci, Index: xi, Candidate: x, Primary: xi == primaryIndex[ci]))).ToList();
        var adjusted = new Dictionary<(int, int), double>();
        foreach (bool primary in (bool[])[true, false])
        {
            var family = all.Where(x => x.Primary == primary).ToList();
            // A comparison in which no pair differs has nothing to test: it stays out of the family.
            var p = MultipleTesting.Holm([.. family.Select(x => x.Candidate.Differing == 0 || x.Candidate.NotTestable.Length > 0 ? double.NaN : x.Candidate.Test.P)]);
            for (int i = 0; i < family.Count; i++) adjusted[(family[i].Claim, family[i].Index)] = p[i];
        }

        var results = new List<ClaimResult>();
        for (int ci = 0; ci < claims.Count; ci++)
        {
            var (id, text, opposite, candidates) = claims[ci];
            var evidence = candidates.Select((x, xi) => Evidence(x, xi == primaryIndex[ci], adjusted[(ci, xi)], options)).ToList();
            var verdict = primaryIndex[ci] < 0 ? Verdict.NoData : evidence[primaryIndex[ci]].Verdict;
            results.Add(new ClaimResult(id, text, opposite, verdict, evidence));
        }
        return results;
    }

    private static Candidate FromEdit(string comparison, string unit, PairedDifference d, int direction) =>
        new(comparison, unit, d.Pairs, "paired cases", d.Difference, d.Test, direction, d.Organisms, d.PerOrganism, d.Differing,
            PreferredPrimary: d.Keys.Method == "FT" && d.Keys.Mode == "single");

    private static string Describe(PairedDifference d) =>
        (d.Keys.Method == d.Values.Method ? $"{d.Keys.Method} {d.Keys.Side} vs {d.Values.Side}" : $"{d.Keys.Method} {d.Keys.Side} vs {d.Values.Method} {d.Values.Side}") + $", layers {d.Keys.Layers}" + (d.Keys.Mode == "single" ? "" : $", {d.Keys.Mode}");

    /// <summary>direction +1: the claim predicts keys − values &gt; 0; −1: it predicts &lt; 0.</summary>
    private static ClaimEvidence Evidence(Candidate c, bool primary, double adjustedP, ReportOptions options)
    {
        var verdict = Verdict.Inconclusive;
        string reason;
        int sign = c.Difference.Low > 0 ? 1 : c.Difference.High < 0 ? -1 : 0;
        bool organismsAgree = c.PerOrganism.Count < 2 || (sign != 0 && c.PerOrganism.All(x => Math.Sign(x) == sign));
        int insideMargin = c.PerOrganism.Count(x => Math.Abs(x) <= c.OrganismMargin);
        if (c.Differing == 0)
        {
            verdict = Verdict.NotTestable;
            reason = $"no pair differs: both sides give the same result on all {c.Pairs} {c.Noun}";
        }
        else if (c.NotTestable.Length > 0)
        {
            verdict = Verdict.NotTestable;
            reason = c.NotTestable;
        }
        else if (sign == 0) reason = "interval includes 0";
        else if (!(adjustedP < options.Alpha)) reason = "test not significant after Holm correction";
        else if (!organismsAgree) reason = $"organisms disagree: {c.PerOrganism.Count(x => Math.Sign(x) != sign)} of {c.PerOrganism.Count} point the other way";
        else if (c.PerOrganism.Count >= 2 && insideMargin > 0)
            reason = string.Create(CultureInfo.InvariantCulture,
                $"{insideMargin} of {c.PerOrganism.Count} organisms within the machine-to-machine margin (ratio {Math.Exp(-c.OrganismMargin):F3}–{Math.Exp(c.OrganismMargin):F3})");
        else
        {
            verdict = sign == c.Direction ? Verdict.Held : Verdict.Opposite;
            reason = "";
        }
        return new ClaimEvidence(c.Comparison, c.Unit, c.Pairs, c.Noun, c.Difference, c.Test, verdict)
        {
            Primary = primary,
            AdjustedP = adjustedP,
            Organisms = c.Organisms,
            PerOrganism = c.PerOrganism,
            Differing = c.Differing,
            Reason = reason,
        };
    }

    /// <summary>"difference +12.3 points [95% CI 8.1, 16.0], Wilcoxon signed-rank p = 0.00123 (Holm 0.00369), 200 paired cases";
    /// with several organisms, each organism's difference after it.</summary>
    public static string Numbers(ClaimEvidence e)
    {
        var inv = CultureInfo.InvariantCulture;
        if (e.Unit == Ratio)
        {
            string organisms1 = e.PerOrganism.Count < 2 ? "" : "; per organism " + string.Join(", ", e.PerOrganism.Select(x => Math.Exp(x).ToString("F3", inv)));
            string holm1 = double.IsNaN(e.AdjustedP) ? "" : $" (Holm-adjusted {ReportFormat.P(e.AdjustedP)})";
            return string.Create(inv, $"keys/values ratio {Math.Exp(e.Difference.Value):F3} [95% CI {Math.Exp(e.Difference.Low):F3}, {Math.Exp(e.Difference.High):F3}, " +
                $"machine-to-machine spread included] (geometric mean over cases), " +
                $"{e.Test.Test} on the log ratio {ReportFormat.PClause(e.Test.P)}{holm1}, {e.Pairs} {e.PairsNoun}{organisms1}");
        }
        string value = e.Unit == "s" ? ReportFormat.SecondsWithInterval(e.Difference, signed: true) : ReportFormat.SignedWithInterval(e.Difference);
        int bracket = value.IndexOf(" [", StringComparison.Ordinal);
        string unit = e.Unit == "s" ? " s" : " points";
        string text = bracket < 0 ? value + unit : value[..bracket] + unit + " [95% CI " + value[(bracket + 2)..];
        string holm = double.IsNaN(e.AdjustedP) ? "" : $" (Holm-adjusted {ReportFormat.P(e.AdjustedP)})";
        string organisms = e.PerOrganism.Count < 2 ? ""
            : "; per organism " + string.Join(", ", e.PerOrganism.Select(x => e.Unit == "s" ? ReportFormat.Seconds(x, signed: true) : ReportFormat.Signed(x)));
        return string.Create(inv, $"difference {text}, {e.Test.Test} {ReportFormat.PClause(e.Test.P)}{holm}, {e.Pairs} {e.PairsNoun}{organisms}");
    }
}
