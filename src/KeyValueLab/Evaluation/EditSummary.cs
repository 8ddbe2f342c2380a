using System.Globalization;
using System.Text;
using KeyValueLab.Editing;
using KeyValueLab.Statistics;

namespace KeyValueLab.Evaluation;

/// <summary>A metric's mean over cases with a 95% percentile-bootstrap interval.</summary>
public sealed record MetricSummary(string Name, double Mean, double Low, double High, int Cases);

/// <summary>
/// The summary of a run: every case-level metric before and after the edit averaged over cases, with 95%
/// percentile-bootstrap intervals from <see cref="Bootstrap"/> (the study report's resamples and seed, so both give
/// the same interval for the same cases); Score = harmonic mean of the case-averaged ES, PS and NS, bootstrapped the
/// same way; the generation-based gen_es/gen_ps/gen_ns (<see cref="GenerationScorer"/>, post-edit only: gen_ns compares with the
/// model before the edit); EasyEdit-style numbers as their own section; cost of the edits.
/// </summary>
public sealed record EditSummary(int Cases, IReadOnlyList<MetricSummary> Pre, IReadOnlyList<MetricSummary> Post,
    IReadOnlyList<MetricSummary> EasyEditStyle, IReadOnlyList<MetricSummary> Cost)
{
    public static EditSummary From(IReadOnlyList<CaseResult> results, EditDatasetFormat format)
    {
        var pre = Section(results.Select(r => r.PreMetrics).ToList(), format);
        var post = Section(results.Select(r => r.PostMetrics).ToList(), format);
        Add(post, "gen_es", results.Select(r => r.Generation?.GenES));
        Add(post, "gen_ps", results.Select(r => r.Generation?.GenPS));
        Add(post, "gen_ns", results.Select(r => r.Generation?.GenNS));
        var easy = new List<MetricSummary>();
        Add(easy, "Reliability (token acc.)", results.Select(r => (double?)r.EasyEdit.Reliability));
        Add(easy, "Generalization (token acc.)", results.Select(r => r.EasyEdit.Generalization));
        Add(easy, "Locality (argmax unchanged)", results.Select(r => r.EasyEdit.Locality));
        var cost = new List<MetricSummary>();
        Add(cost, "Seconds per edit", results.Select(r => (double?)r.Edit.Seconds));
        Add(cost, "Parameters changed", results.Select(r => (double?)r.Edit.ParametersChanged));
        Add(cost, "Optimisation steps", results.Select(r => (double?)r.Edit.Steps));
        return new EditSummary(results.Count, pre, post, easy, cost);
    }

    private static List<MetricSummary> Section(IReadOnlyList<CaseMetrics> m, EditDatasetFormat format)
    {
        var list = new List<MetricSummary>();
        if (format != EditDatasetFormat.Zsre)
        {
            Add(list, "ES", m.Select(x => x.ES));
            Add(list, "PS", m.Select(x => x.PS));
            Add(list, "NS", m.Select(x => x.NS));
            if (m.All(x => x.ES is not null && x.PS is not null && x.NS is not null) && m.Count > 0)
            {
                double[] es = [.. m.Select(x => x.ES!.Value)], ps = [.. m.Select(x => x.PS!.Value)], ns = [.. m.Select(x => x.NS!.Value)];
                list.Add(Summary("Score", m.Count, Bootstrap.Percentile(m.Count, idx => Descriptive.HarmonicMean(
                    Descriptive.MeanAt(es, idx), Descriptive.MeanAt(ps, idx), Descriptive.MeanAt(ns, idx)))));
            }
            Add(list, "EM", m.Select(x => x.EM));
            Add(list, "PM", m.Select(x => x.PM));
            Add(list, "NM", m.Select(x => x.NM));
            Add(list, "Rewrite exact match", m.Select(x => x.RewriteExact));
            Add(list, "Paraphrase exact match", m.Select(x => x.ParaphraseExact));
            Add(list, "Neighborhood exact match", m.Select(x => x.NeighborhoodExact));
        }
        else
        {
            Add(list, "zsRE efficacy", m.Select(x => x.ZsreEfficacy));
            Add(list, "zsRE paraphrase", m.Select(x => x.ZsreParaphrase));
            Add(list, "zsRE specificity", m.Select(x => x.ZsreSpecificity));
            Add(list, "Rewrite exact match", m.Select(x => x.RewriteExact));
        }
        Add(list, "GE", m.Select(x => x.GE));
        return list;
    }

    private static void Add(List<MetricSummary> list, string name, IEnumerable<double?> values)
    {
        var v = values.Where(x => x is not null).Select(x => x!.Value).ToArray();
        if (v.Length == 0) return;
        list.Add(Summary(name, v.Length, Bootstrap.Mean(v)));
    }

    private static MetricSummary Summary(string name, int cases, Estimate e) => new(name, e.Value, e.Low, e.High, cases);

    /// <summary>A plain-text table: metric, pre-edit and post-edit mean [95% interval].</summary>
    public string ToTable()
    {
        var sb = new StringBuilder();
        static string F(MetricSummary? m) => m is null ? "" : string.Create(CultureInfo.InvariantCulture, $"{m.Mean,8:F2} [{m.Low:F2}, {m.High:F2}]");
        sb.AppendLine(CultureInfo.InvariantCulture, $"cases: {Cases}   (mean [95% bootstrap interval])");
        sb.AppendLine(CultureInfo.InvariantCulture, $"{"metric",-28} {"pre-edit",-28} {"post-edit",-28}");
        foreach (var post in Post)
            sb.AppendLine(CultureInfo.InvariantCulture, $"{post.Name,-28} {F(Pre.FirstOrDefault(p => p.Name == post.Name)),-28} {F(post),-28}");
        sb.AppendLine("Reference Score (RS): unavailable (needs ROME's attribute snippets)");
        sb.AppendLine("EasyEdit-style (post-edit):");
        foreach (var m in EasyEditStyle) sb.AppendLine(CultureInfo.InvariantCulture, $"  {m.Name,-30} {F(m)}");
        sb.AppendLine("Cost:");
        foreach (var m in Cost) sb.AppendLine(CultureInfo.InvariantCulture, $"  {m.Name,-30} {F(m)}");
        return sb.ToString();
    }
}
