using KeyValueLab.Statistics;
using static KeyValueLab.Study.Report.ColumnKind;

namespace KeyValueLab.Study.Report;

/// <summary>
/// The machine-readable tables (tables/*.csv, tables/*.json). Metric tables hold no timings, so two runs of the same
/// study with the same seeds give identical metric tables; times and memory are in the costs tables.
/// </summary>
public static class ReportTables
{
    public static ReportTable EditingSummary(EditingResults r)
    {
        var metricKeys = MetricKeys(r);
        var columns = new List<TableColumn> { new("method", Text), new("side", Text), new("layers", Text), new("mode", Text), new("cases", Integer), new("seeds", Integer) };
        foreach (string k in metricKeys)
            columns.AddRange([new(k, Score), new(k + "_low", Score), new(k + "_high", Score)]);
        foreach (string k in metricKeys) columns.Add(new("pre_" + k, Score));
        var table = new ReportTable("editing_summary", "Post-edit metrics per condition (mean over cases, 95% bootstrap interval) and the unedited model's means", columns);
        foreach (var row in r.Summary)
        {
            var cells = new List<object?> { row.Condition.Method, row.Condition.Side, row.Condition.Layers, row.Condition.Mode, row.Cases, row.Seeds };
            foreach (string k in metricKeys)
            {
                var e = row.Post.TryGetValue(k, out var v) ? v : (Estimate?)null;
                cells.AddRange([e?.Value, e?.Low, e?.High]);
            }
            foreach (string k in metricKeys) cells.Add(row.Pre.TryGetValue(k, out double pre) ? pre : null);
            table.Add([.. cells]);
        }
        return table;
    }

    /// <summary>Metric keys in table order: the headline three, Score, then the rest.</summary>
    public static IReadOnlyList<string> MetricKeys(EditingResults r)
    {
        var headline = r.Headline.Three.Where(r.Metrics.Contains).Select(m => m.Key).ToList();
        if (r.Headline.HasScore) headline.Add("score");
        return [.. headline, .. r.Metrics.Select(m => m.Key).Where(k => !headline.Contains(k))];
    }

    public static ReportTable EditingDifferences(EditingResults r)
    {
        var table = new ReportTable("editing_differences", "keys − values on the same method family (Key-ROME with ROME), layers, seed and case",
        [
            new("method", Text), new("layers", Text), new("mode", Text), new("keys_side", Text), new("values_method", Text), new("values_side", Text), new("metric", Text),
            new("pairs", Integer), new("keys_mean", Score), new("values_mean", Score), new("difference", Score),
            new("difference_low", Score), new("difference_high", Score), new("test", Text), new("statistic", Score), new("p", P),
        ]);
        foreach (var d in r.Differences)
            table.Add(d.Keys.Method, d.Keys.Layers, d.Keys.Mode, d.Keys.Side, d.Values.Method, d.Values.Side, d.Metric, d.Pairs, d.KeysMean, d.ValuesMean,
                d.Difference.Value, d.Difference.Low, d.Difference.High, d.Test.Test, d.Test.Statistic, d.Test.P);
        return table;
    }

    public static ReportTable TuningTasks(TuningResults r)
    {
        var table = new ReportTable("tuning_tasks", "Accuracy per target set and task (×100; each example once, averaged over seeds) beside the task's majority-class and chance rates",
        [
            new("label", Text), new("task", Text), new("seeds", Integer), new("examples", Integer), new("accuracy", Score),
            new("accuracy_low", Score), new("accuracy_high", Score), new("interval", Text), new("majority_class", Score), new("chance", Score),
            new("runs", Integer), new("constant_runs", Integer), new("at_baseline", Text), new("macro_f1", Score), new("label_likelihood_accuracy", Score),
        ]);
        foreach (var t in r.PerTask)
            table.Add(t.Label, t.Task, t.Seeds, t.Examples, t.Accuracy.Value, t.Accuracy.Low, t.Accuracy.High, t.Interval, t.Majority, t.Chance,
                t.Runs, t.ConstantRuns, t.AtBaseline, t.MacroF1, t.LabelLikelihoodAccuracy);
        return table;
    }

    public static ReportTable TuningPairs(TuningResults r)
    {
        var table = new ReportTable("tuning_pairs", "Target set A − B on the same examples, paired by seed (accuracy ×100; pairs = distinct examples, a/b_only over seed × example)",
        [
            new("a", Text), new("b", Text), new("task", Text), new("pairs", Integer), new("seeds", Integer), new("accuracy_a", Score), new("accuracy_b", Score),
            new("difference", Score), new("difference_low", Score), new("difference_high", Score), new("a_only_correct", Integer),
            new("b_only_correct", Integer), new("test", Text), new("p", P), new("not_testable", Text),
        ]);
        foreach (var p in r.Pairs)
            table.Add(p.A, p.B, p.Task, p.Pairs, p.Seeds, p.AccuracyA, p.AccuracyB, p.Difference.Value, p.Difference.Low, p.Difference.High,
                p.AOnly, p.BOnly, p.Test.Test, p.Test.P, p.NotTestable);
        return table;
    }

    public static ReportTable EditingCosts(EditingResults r)
    {
        var table = new ReportTable("costs_editing", "Wall seconds per edit (mean, 95% bootstrap interval) and weights changed per condition",
        [
            new("method", Text), new("side", Text), new("layers", Text), new("mode", Text), new("edits", Integer), new("seconds_per_edit", Measured),
            new("seconds_low", Measured), new("seconds_high", Measured), new("parameters_changed", Integer),
        ]);
        foreach (var c in r.Costs)
            table.Add(c.Condition.Method, c.Condition.Side, c.Condition.Layers, c.Condition.Mode, c.Edits, c.SecondsPerEdit.Value,
                c.SecondsPerEdit.Low, c.SecondsPerEdit.High, c.ParametersChanged);
        return table;
    }

    public static ReportTable TuningCosts(TuningResults r)
    {
        var table = new ReportTable("costs_tuning", "Parameters, training time and memory per target set (means over seeds; peak RSS is the largest)",
        [
            new("label", Text), new("seeds", Integer), new("four_bit", Text), new("trainable_parameters", Integer), new("all_parameters", Integer),
            new("train_seconds", Measured), new("tokens_per_second", Measured), new("peak_resident_bytes", Integer),
            new("base_bytes_fp32", Integer), new("base_bytes_stored", Integer),
        ]);
        foreach (var c in r.Costs)
            table.Add(c.Label, c.Seeds, c.FourBit, c.TrainableParameters, c.AllParameters, c.TrainSeconds, c.TokensPerSecond,
                c.PeakResidentBytes, c.BaseBytesFp32, c.BaseBytesStored);
        return table;
    }

    public static ReportTable CostDifferences(EditingResults? editing, TuningResults? tuning)
    {
        var table = new ReportTable("cost_differences", "Seconds of A − B: per edit (paired by seed and case) and per training run (paired by seed)",
        [
            new("kind", Text), new("a", Text), new("b", Text), new("pairs", Integer), new("mean_a", Measured), new("mean_b", Measured),
            new("difference", Measured), new("difference_low", Measured), new("difference_high", Measured), new("test", Text), new("p", P),
        ]);
        foreach (var d in editing?.SecondsDifferences ?? [])
            table.Add("seconds per edit", d.Keys.ToString(), d.Values.ToString(), d.Pairs, d.KeysMean, d.ValuesMean,
                d.Difference.Value, d.Difference.Low, d.Difference.High, d.Test.Test, d.Test.P);
        foreach (var d in tuning?.SecondsDifferences ?? [])
            table.Add("training seconds", d.A, d.B, d.Seeds, d.MeanA, d.MeanB, d.Difference.Value, d.Difference.Low, d.Difference.High, d.Test.Test, d.Test.P);
        return table;
    }
}
