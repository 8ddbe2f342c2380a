using KeyValueLab.Statistics;
using static KeyValueLab.Study.Report.ColumnKind;
using static KeyValueLab.Study.Report.ReportFormat;

namespace KeyValueLab.Study.Report;

/// <summary>The lifelong section's machine-readable tables (no timings in the metric tables, as elsewhere).</summary>
public static class LifelongTables
{
    private static IEnumerable<TableColumn> ConditionColumns() =>
        [new("arm", Text), new("method", Text), new("side", Text), new("layers", Text), new("mode", Text), new("chunk", Integer)];

    private static object?[] ConditionCells(LifelongCondition c) => [c.Arm, c.Method, c.Side, c.Layers, c.Mode, c.Chunk];

    public static ReportTable Summary(LifelongResults r)
    {
        var columns = new List<TableColumn>(ConditionColumns()) { new("sequences", Integer), new("cases", Integer), new("edits_per_sequence", Integer) };
        foreach (var m in r.Metrics) columns.AddRange([new(m.Key, ColumnKind.Score), new(m.Key + "_low", ColumnKind.Score), new(m.Key + "_high", ColumnKind.Score)]);
        foreach (var m in r.Metrics.Where(m => m.Pre is not null)) columns.Add(new("pre_" + m.Key, ColumnKind.Score));
        var table = new ReportTable("lifelong_summary", "Final-model means per lifelong condition (organisms, then cases; 95% hierarchical bootstrap interval) and the unedited model's means", columns);
        foreach (var row in r.Summary)
        {
            var cells = new List<object?>(ConditionCells(row.Condition)) { row.Sequences, row.Cases, row.EditsPerSequence };
            foreach (var m in r.Metrics)
            {
                var e = row.Final.TryGetValue(m.Key, out var v) ? v : (Estimate?)null;
                cells.AddRange([e?.Value, e?.Low, e?.High]);
            }
            foreach (var m in r.Metrics.Where(m => m.Pre is not null)) cells.Add(row.Pre.TryGetValue(m.Key, out double pre) ? pre : null);
            table.Add([.. cells]);
        }
        return table;
    }

    public static ReportTable Differences(LifelongResults r)
    {
        var table = new ReportTable("lifelong_differences", "keys − values at the final model, paired by organism, seed and case, with Holm among the lifelong comparisons",
        [
            .. ConditionColumns(), new("keys_method", Text), new("keys_side", Text), new("metric", Text), new("pairs", Integer), new("differing", Integer),
            new("keys_mean", ColumnKind.Score), new("values_mean", ColumnKind.Score), new("difference", ColumnKind.Score), new("difference_low", ColumnKind.Score), new("difference_high", ColumnKind.Score),
            new("test", Text), new("statistic", ColumnKind.Score), new("p", ColumnKind.P), new("p_holm", ColumnKind.P), new("verdict", Text),
        ]);
        foreach (var d in r.Differences)
            table.Add([.. ConditionCells(d.Values), d.Keys.Method, d.Keys.Side, d.Metric, d.Pairs, d.Differing, d.KeysMean, d.ValuesMean,
                d.Difference.Value, d.Difference.Low, d.Difference.High, d.Test.Test, d.Test.Statistic, d.Test.P, d.AdjustedP, VerdictName(d.Verdict)]);
        return table;
    }

    public static ReportTable Curves(LifelongResults r)
    {
        var table = new ReportTable("lifelong_curves", "Means over every case edited so far after each checkpoint (mean over organisms of each organism's mean)",
            [.. ConditionColumns(), new("edits", Integer), new("sequences", Integer), .. r.Metrics.Select(m => new TableColumn(m.Key, ColumnKind.Score))]);
        foreach (var curve in r.Curves)
            foreach (var p in curve.Points)
                table.Add([.. ConditionCells(curve.Condition), p.Edits, p.Sequences, .. r.Metrics.Select(m => p.Means.TryGetValue(m.Key, out double v) ? (object?)v : null)]);
        return table;
    }

    public static ReportTable Costs(LifelongResults r)
    {
        var table = new ReportTable("costs_lifelong", "Editor seconds per edit (all chunks of all sequences / edits) per lifelong condition",
            [.. ConditionColumns(), new("edits", Integer), new("seconds_per_edit", Measured)]);
        foreach (var row in r.Summary) table.Add([.. ConditionCells(row.Condition), row.Cases, row.SecondsPerEdit]);
        return table;
    }

    public static string VerdictName(LifelongVerdict v) => v switch
    {
        LifelongVerdict.KeysBetter => "keys better",
        LifelongVerdict.ValuesBetter => "values better",
        LifelongVerdict.NotTestable => "not testable",
        _ => "inconclusive",
    };
}

public static partial class StudyReport
{
    private sealed partial class Builder
    {
        /// <summary>The lifelong section: final scores, keys − values at the final model, curves against the number of edits, costs.</summary>
        private void Lifelong(LifelongResults? lifelong, StudyResults results, ReportOptions options)
        {
            if (lifelong is null) return;
            _doc.Heading(2, "Lifelong editing: many edits on one model");
            var units = results.Lifelong;
            int organisms = units.Select(u => u.Organism).Distinct().Count();
            var arms = units.Select(u => u.Arm).Distinct().ToList();
            _doc.Paragraph($"{Count(units.Count)} sequence{(units.Count == 1 ? "" : "s")} of edits, each one editor on one side of one "
                + (organisms > 1 ? "organism" : "model") + ", never restored in between. **sequential-final** is the published protocol (AlphaEdit's): "
                + "the N cases are edited in chunks of B requests per editor call, then every case is scored once on the final model; "
                + "**sequential-immediate** scores each case right after its own edit. "
                + (arms.Contains("lifelong") ? "The lifelong arm's cases are drawn after the single-edit cases of the same permutation, so no case is in both. " : "")
                + "ES, PS and NS are teacher-forced as for single edits; **gen_es**/**gen_ps** are the shares of rewrite/paraphrase prompts whose greedy "
                + "continuation starts with the new object, **gen_ns** the share of neighbourhood prompts whose greedy continuation the sequence left unchanged. "
                + (organisms > 1 ? "Means are means of the organisms' means with hierarchical bootstrap intervals (organisms, then cases). "
                    : "With one model the intervals resample its cases only. ")
                + $"95% intervals, {Count(options.Resamples)} resamples.");
            var metrics = lifelong.Metrics;
            Tables.Add(LifelongTables.Summary(lifelong));
            IReadOnlyList<string> headers = ["Method", "Side", "Layers", "Mode", "B"];
            IReadOnlyList<string> Cells(LifelongCondition c) => [c.Method, c.Side, c.Layers, c.Mode, c.Chunk.ToString(System.Globalization.CultureInfo.InvariantCulture)];
            _doc.Add(Table("Final-model means [95% CI] per lifelong condition; \"unedited\" is the model before the sequence on the same cases. Source: tables/lifelong_summary.csv.",
                [.. headers, "Edits × sequences", .. metrics.Select(m => m.Name), "Unedited ES / PS / NS"],
                [.. lifelong.Summary.Select(r => (IReadOnlyList<string>)[.. Cells(r.Condition), $"{Count(r.EditsPerSequence)} × {Count(r.Sequences)}",
                    .. metrics.Select(m => r.Final.TryGetValue(m.Key, out var e) ? WithInterval(e) : Missing),
                    string.Join(" / ", ((string[])["es", "ps", "ns"]).Select(k => r.Pre.TryGetValue(k, out double v) ? Score(v) : Missing))])], headers.Count));
            if (organisms > 1)
                _doc.Add(Table("Per organism: each organism's final-model mean.",
                    [.. headers, "Metric", "Per organism", "Between-organism SD"],
                    [.. lifelong.Summary.SelectMany(r => metrics.Where(m => r.ByOrganism.ContainsKey(m.Key)).Select(m => (IReadOnlyList<string>)[.. Cells(r.Condition), m.Name,
                        string.Join(", ", r.ByOrganism[m.Key].PerCluster.Select(Score)), Score(r.ByOrganism[m.Key].BetweenClusterSd)]))],
                    headers.Count + 1, [headers.Count + 1]));

            _doc.Heading(3, "Keys against values at the final model");
            if (lifelong.Differences.Count == 0)
                Note("No lifelong condition has both a keys side and a values side of the same editor family, layers, mode and chunk size, so there are no lifelong paired differences.");
            else
            {
                Tables.Add(LifelongTables.Differences(lifelong));
                _doc.Paragraph("Each keys side is paired with the values side of the same editor family (Key-MEMIT with MEMIT, Key-AlphaEdit with AlphaEdit, "
                    + "FT-BF with FT-BF), layers, mode and chunk size, case by case on the same organism and seed. keys − values in points (positive favours keys), "
                    + "95% hierarchical bootstrap interval, two-sided **Wilcoxon signed-rank** test over all pairs, **Holm**-corrected among the lifelong comparisons "
                    + "(those in which some pair differs). A difference counts as keys or values better when its interval excludes 0, its corrected p < "
                    + $"{options.Alpha.ToString(System.Globalization.CultureInfo.InvariantCulture)} and every organism points the same way; **not testable** when no pair differs.");
                _doc.Add(Table("keys − values at the final model. Source: tables/lifelong_differences.csv.",
                    ["Comparison", "Metric", "Pairs", "Keys", "Values", "Keys − values [95% CI]", "p (Holm)", "Verdict"],
                    [.. lifelong.Differences.Select(d => (IReadOnlyList<string>)[Comparison(d), d.Metric, Count(d.Pairs), Score(d.KeysMean), Score(d.ValuesMean),
                        SignedWithInterval(d.Difference), $"{P(d.Test.P)} ({(double.IsNaN(d.AdjustedP) ? Missing : P(d.AdjustedP))})",
                        LifelongTables.VerdictName(d.Verdict) + (d.Reason.Length > 0 ? $" ({d.Reason})" : "")])], 2, [6, 7]));
                if (organisms > 1)
                    _doc.Add(Table("keys − values per organism.", ["Comparison", "Metric", "Per organism"],
                        [.. lifelong.Differences.Select(d => (IReadOnlyList<string>)[Comparison(d), d.Metric, string.Join(", ", d.PerOrganism.Select(Signed))])], 2, [2]));
            }

            _doc.Heading(3, "Scores against the number of edits");
            Tables.Add(LifelongTables.Curves(lifelong));
            // Keys and values of one family (same variant, layers, mode, chunk and arm) share a style.
            static string Style(LifelongCondition c)
            {
                string method = c.Method.Split(" [")[0];
                return LifelongAnalysis.Family(method) + c.Method[method.Length..] + $" L{c.Layers} {c.Mode} B{c.Chunk} {c.Arm}";
            }
            var families = lifelong.Curves.Select(c => Style(c.Condition)).Distinct().ToList();
            foreach (var metric in metrics)
            {
                bool any = lifelong.Curves.Any(c => c.Points.Any(p => p.Means.ContainsKey(metric.Key)));
                Figure($"lifelong_{metric.Key}", any, () =>
                {
                    var series = lifelong.Curves.Select(c => new CurveSeries($"{c.Condition.Method} {c.Condition.Side}",
                        [.. c.Points.Where(p => p.Means.ContainsKey(metric.Key)).Select(p => (double)p.Edits)],
                        [.. c.Points.Where(p => p.Means.ContainsKey(metric.Key)).Select(p => p.Means[metric.Key])],
                        c.Condition.Side,
                        families.IndexOf(Style(c.Condition)))).ToList();
                    return ReportFigures.Curves($"{metric.Name} against the number of edits", "edits so far", $"{metric.Name} (×100, cases edited so far)", series,
                        options.FigureWidth, options.FigureHeight);
                }, $"{metric.Name} of the cases edited so far against the number of edits, one line per editor and side",
                $"{metric.Name} (mean over the cases edited so far, mean over organisms) after each checkpoint of every lifelong sequence; the last point is the final model. "
                + "Keys and values of one editor family share a line style and marker; colour is the side (keys blue, gate green, values orange) where it can be.");
            }

            Tables.Add(LifelongTables.Costs(lifelong));
            _doc.Add(Table("Editor seconds per edit (all editor calls of all sequences / edits; scoring not included). Source: tables/costs_lifelong.csv.",
                [.. headers, "Edits", "Seconds per edit"],
                [.. lifelong.Summary.Select(r => (IReadOnlyList<string>)[.. Cells(r.Condition), Count(r.Cases), Seconds(r.SecondsPerEdit)])], headers.Count));

            static string Comparison(LifelongDifference d) =>
                $"{d.Keys.Method} {d.Keys.Side} vs {d.Values.Method} {d.Values.Side}, L{d.Keys.Layers}, {d.Keys.Mode} B={d.Keys.Chunk}";
        }
    }
}
