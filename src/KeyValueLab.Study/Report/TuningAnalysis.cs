using KeyValueLab.Statistics;

namespace KeyValueLab.Study.Report;

/// <summary>
/// One target set on one task, all seeds pooled (accuracy and its Wilson interval over seeds × examples; with the same
/// examples for every seed this equals the mean over seeds). The row with <see cref="TuningResults.MeanOverTasks"/> as
/// task holds the unweighted mean over tasks with a bootstrap interval (examples resampled within each task and seed).
/// Accuracy, macro-F1 and label-likelihood accuracy are ×100.
/// </summary>
public sealed record TuneTaskRow(string Label, string Task, int Seeds, int Examples, Estimate Accuracy, double? MacroF1,
    double? LabelLikelihoodAccuracy, string Interval);

/// <summary>Target set A against B on the same examples and seeds: accuracies, A − B with a bootstrap interval, the
/// discordant counts (A right only, B right only) and the test (exact McNemar per task, a paired permutation test
/// for the mean over tasks).</summary>
public sealed record TunePairRow(string A, string B, string Task, int Pairs, double AccuracyA, double AccuracyB,
    Estimate Difference, int AOnly, int BOnly, TestResult Test)
{
    /// <summary>The organisms (replication units) the pairs come from; "" for a study of one model.</summary>
    public IReadOnlyList<string> Organisms { get; init; } = [];
    /// <summary>A − B per organism, in <see cref="Organisms"/>' order.</summary>
    public IReadOnlyList<double> PerOrganism { get; init; } = [];
    /// <summary>Variance of the per-example differences within and between organisms (per task rows only).</summary>
    public VarianceComponents? Components { get; init; }
}

/// <summary>What one target set costs: parameters, training time and memory (mean over seeds; peak RSS is the largest).</summary>
public sealed record TuneCostRow(string Label, int Seeds, bool FourBit, long TrainableParameters, long AllParameters,
    double TrainSeconds, double TokensPerSecond, long PeakResidentBytes, long BaseBytesFp32, long BaseBytesStored,
    IReadOnlyList<double> TrainSecondsBySeed);

/// <summary>Training seconds of A − B, paired by seed.</summary>
public sealed record TuneSecondsDifference(string A, string B, int Seeds, double MeanA, double MeanB, Estimate Difference, TestResult Test)
{
    /// <summary>Seeds whose two training times differ at all.</summary>
    public int Differing { get; init; }
}

public sealed record TuningResults(IReadOnlyList<string> Labels, IReadOnlyList<string> Tasks, IReadOnlyList<TuneTaskRow> PerTask,
    IReadOnlyList<TunePairRow> Pairs, IReadOnlyList<TuneCostRow> Costs, IReadOnlyList<TuneSecondsDifference> SecondsDifferences,
    IReadOnlyList<string> Notes)
{
    public const string MeanOverTasks = "mean over tasks";
    public const string Baseline = "q,v";
    public const string Values = "+values";
}

/// <summary>Summarises LoRA runs per target set and task, and compares target sets example by example.</summary>
public static class TuningAnalysis
{
    public static bool IsKeysLabel(string label) => label == "+keys" || label.StartsWith("+keys:", StringComparison.Ordinal);

    /// <summary>Target sets in the paper's order: q,v, +keys (GPT-2), +keys:up, +keys:gate, +values, then others.</summary>
    public static int LabelOrder(string label) => label switch
    {
        TuningResults.Baseline => 0, "+keys" => 1, "+keys:up" => 2, "+keys:gate" => 3, TuningResults.Values => 4, _ => 5,
    };

    public static TuningResults Analyze(IReadOnlyList<TuneUnitResult> tunes, ReportOptions options)
    {
        var notes = new List<string>();
        var labels = tunes.Select(t => t.Label).Distinct().OrderBy(LabelOrder).ThenBy(l => l, StringComparer.Ordinal).ToList();
        var tasks = tunes.SelectMany(t => t.Tasks.Select(x => x.Task)).Distinct().ToList();
        // One run per (label, organism, seed): a repeated run is reported once, the first one.
        var runs = labels.ToDictionary(l => l, l => tunes.Where(t => t.Label == l).GroupBy(t => (t.Organism, t.Seed))
            .OrderBy(g => g.Key.Organism, StringComparer.Ordinal).ThenBy(g => g.Key.Seed).Select(g => g.First()).ToList());

        var perTask = new List<TuneTaskRow>();
        foreach (string label in labels)
        {
            var rows = tasks.Select(task => TaskRow(label, task, runs[label], options)).OfType<TuneTaskRow>().ToList();
            perTask.AddRange(rows);
            if (rows.Count > 1) perTask.Add(MeanRow(label, tasks, runs[label], rows, options));
        }

        var pairs = new List<TunePairRow>();
        var secondsDifferences = new List<TuneSecondsDifference>();
        foreach (var (a, b) in Comparisons(labels))
        {
            var perTaskPairs = new List<(string Task, bool[] A, bool[] B, string[] Organism)>();
            foreach (string task in tasks)
            {
                var (ca, cb, organism, mismatched) = PairedOutcomes(runs[a], runs[b], task);
                if (mismatched > 0)
                    notes.Add($"{a} vs {b} on {task}: {mismatched} seed(s) skipped, their example lists differ in length.");
                if (ca.Length == 0) continue;
                perTaskPairs.Add((task, ca, cb, organism));
                pairs.Add(TaskPair(a, b, task, ca, cb, organism, options));
            }
            if (perTaskPairs.Count > 1) pairs.Add(MeanPair(a, b, perTaskPairs, options));
            if (SecondsDifference(a, b, runs[a], runs[b], options) is { } s) secondsDifferences.Add(s);
        }

        var costs = labels.Select(l => runs[l]).Select(rs => new TuneCostRow(rs[0].Label, rs.Count, rs.Any(r => r.FourBit),
            rs[0].TrainableParameters, rs[0].AllParameters, rs.Average(r => r.TrainSeconds), rs.Average(r => r.TokensPerSecond),
            rs.Max(r => r.PeakResidentBytes), rs[0].BaseBytesFp32, rs[0].BaseBytesStored, [.. rs.Select(r => r.TrainSeconds)])).ToList();
        return new TuningResults(labels, tasks, perTask, pairs, costs, secondsDifferences, notes);
    }

    /// <summary>Each FFN variant against +values and against q,v, and +values against q,v.</summary>
    public static IEnumerable<(string A, string B)> Comparisons(IReadOnlyList<string> labels)
    {
        var keys = labels.Where(IsKeysLabel).ToList();
        if (labels.Contains(TuningResults.Values))
            foreach (string k in keys) yield return (k, TuningResults.Values);
        if (labels.Contains(TuningResults.Baseline))
        {
            foreach (string k in keys) yield return (k, TuningResults.Baseline);
            if (labels.Contains(TuningResults.Values)) yield return (TuningResults.Values, TuningResults.Baseline);
        }
    }

    /// <summary>Correct flags of one run on one task; when a store kept only the accuracy, the count it implies.</summary>
    private static (int Correct, int Count, IReadOnlyList<bool>? Flags) Outcome(TaskOutcome t) =>
        t.Correct.Count > 0 ? (t.Correct.Count(c => c), t.Correct.Count, t.Correct) : ((int)Math.Round(t.Accuracy * t.Count), t.Count, null);

    private static TuneTaskRow? TaskRow(string label, string task, IReadOnlyList<TuneUnitResult> runs, ReportOptions options)
    {
        var outcomes = runs.Select(r => r.Tasks.FirstOrDefault(t => t.Task == task)).OfType<TaskOutcome>().ToList();
        if (outcomes.Count == 0) return null;
        int correct = 0, count = 0;
        foreach (var o in outcomes)
        {
            var (c, n, _) = Outcome(o);
            correct += c;
            count += n;
        }
        var likelihood = outcomes.Select(o => o.LabelLikelihoodAccuracy).OfType<double>().ToList();
        double? likelihoodAccuracy = likelihood.Count == outcomes.Count ? 100 * likelihood.Average() : null;
        // Several organisms: the mean of the organisms' accuracies with its hierarchical interval (Wilson counts
        // examples as the only randomness, which only holds for one model).
        var organisms = EditingAnalysis.Organisms(runs.Select(r => r.Organism));
        if (organisms.Count > 1 && runs.All(r => r.Tasks.FirstOrDefault(t => t.Task == task) is not { Correct.Count: 0 }))
        {
            var clusters = organisms.Select(o => (IReadOnlyList<double>)[.. runs.Where(r => r.Organism == o)
                .SelectMany(r => r.Tasks.FirstOrDefault(t => t.Task == task)?.Correct ?? []).Select(c => c ? 100.0 : 0.0)]).Where(c => c.Count > 0).ToList();
            var clustered = Bootstrap.ClusteredMean(clusters, options.Resamples, options.Seed);
            return new TuneTaskRow(label, task, outcomes.Count, count, clustered.Pooled, 100 * outcomes.Average(o => o.MacroF1), likelihoodAccuracy,
                "hierarchical bootstrap");
        }
        var (low, high) = Descriptive.Wilson(correct, count);
        double accuracy = count == 0 ? double.NaN : 100.0 * correct / count;
        return new TuneTaskRow(label, task, outcomes.Count, count, new Estimate(accuracy, 100 * low, 100 * high),
            100 * outcomes.Average(o => o.MacroF1), likelihoodAccuracy, "Wilson");
    }

    private static TuneTaskRow MeanRow(string label, IReadOnlyList<string> tasks, IReadOnlyList<TuneUnitResult> runs,
        IReadOnlyList<TuneTaskRow> taskRows, ReportOptions options)
    {
        double mean = taskRows.Average(r => r.Accuracy.Value);
        // Clusters are organisms; inside each, one stratum per (task, seed); a task's accuracy pools its strata.
        var organisms = EditingAnalysis.Organisms(runs.Select(r => r.Organism));
        var strata = organisms.Select(org =>
        {
            var list = new List<(int Task, bool[] Flags)>();
            for (int t = 0; t < tasks.Count; t++)
                foreach (var run in runs.Where(r => r.Organism == org))
                    if (run.Tasks.FirstOrDefault(x => x.Task == tasks[t]) is { Correct.Count: > 0 } o)
                        list.Add((t, [.. o.Correct]));
            return list;
        }).ToList();
        var present = strata.SelectMany(c => c.Select(s => s.Task)).Distinct().ToList();
        // The interval needs every task's per-example outcomes; without them the row keeps the mean alone.
        bool complete = present.Count == taskRows.Count
            && runs.All(r => r.Tasks.All(x => x.Correct.Count > 0 || !tasks.Contains(x.Task)));
        var estimate = !complete ? new Estimate(mean, double.NaN, double.NaN) : Bootstrap.HierarchicalStratified(
            [.. strata.Select(c => (IReadOnlyList<int>)[.. c.Select(s => s.Flags.Length)])], draw =>
        {
            double total = 0;
            for (int j = 0; j < draw.Clusters.Length; j++)
            {
                var cluster = strata[draw.Clusters[j]];
                var idx = draw.Cases[j];
                double sum = 0;
                int tasksSeen = 0;
                foreach (int task in present)
                {
                    int correct = 0, count = 0;
                    for (int s = 0; s < cluster.Count; s++)
                    {
                        if (cluster[s].Task != task) continue;
                        var flags = cluster[s].Flags;
                        foreach (int i in idx[s]) if (flags[i]) correct++;
                        count += idx[s].Length;
                    }
                    if (count == 0) continue;
                    sum += 100.0 * correct / count;
                    tasksSeen++;
                }
                total += sum / tasksSeen;
            }
            return total / draw.Clusters.Length;
        }, options.Resamples, options.Seed);
        var rows = runs.SelectMany(r => r.Tasks).ToList();
        var likelihood = rows.Select(o => o.LabelLikelihoodAccuracy).OfType<double>().ToList();
        return new TuneTaskRow(label, TuningResults.MeanOverTasks, runs.Count, strata.Sum(c => c.Sum(s => s.Flags.Length)),
            estimate with { Value = mean },
            100 * rows.Average(o => o.MacroF1), likelihood.Count == rows.Count ? 100 * likelihood.Average() : null, "bootstrap");
    }

    /// <summary>Correct flags of A and B on one task, concatenated over the (organism, seed) runs both have, with
    /// equal-length lists, and the organism of every example.</summary>
    private static (bool[] A, bool[] B, string[] Organism, int Mismatched) PairedOutcomes(IReadOnlyList<TuneUnitResult> a,
        IReadOnlyList<TuneUnitResult> b, string task)
    {
        var ca = new List<bool>();
        var cb = new List<bool>();
        var organism = new List<string>();
        int mismatched = 0;
        foreach (var runA in a)
        {
            var runB = b.FirstOrDefault(r => r.Seed == runA.Seed && r.Organism == runA.Organism);
            var oa = runA.Tasks.FirstOrDefault(t => t.Task == task);
            var ob = runB?.Tasks.FirstOrDefault(t => t.Task == task);
            if (oa is null || ob is null || oa.Correct.Count == 0 || ob.Correct.Count == 0) continue;
            if (oa.Correct.Count != ob.Correct.Count) { mismatched++; continue; }
            ca.AddRange(oa.Correct);
            cb.AddRange(ob.Correct);
            organism.AddRange(Enumerable.Repeat(runA.Organism, oa.Correct.Count));
        }
        return ([.. ca], [.. cb], [.. organism], mismatched);
    }

    private static TunePairRow TaskPair(string a, string b, string task, bool[] ca, bool[] cb, string[] organism, ReportOptions options)
    {
        var d = ca.Zip(cb, (x, y) => 100.0 * ((x ? 1 : 0) - (y ? 1 : 0))).ToArray();
        int aOnly = ca.Zip(cb).Count(p => p.First && !p.Second), bOnly = ca.Zip(cb).Count(p => !p.First && p.Second);
        var organisms = EditingAnalysis.Organisms(organism);
        var byOrganism = organisms.Select(o => (IReadOnlyList<double>)[.. d.Where((_, i) => organism[i] == o)]).ToList();
        var clustered = Bootstrap.ClusteredMean(byOrganism, options.Resamples, options.Seed);
        return new TunePairRow(a, b, task, d.Length, 100.0 * ca.Count(x => x) / ca.Length, 100.0 * cb.Count(x => x) / cb.Length,
            clustered.Pooled, aOnly, bOnly, PairedTests.McNemarExact(aOnly, bOnly))
        {
            Organisms = organisms,
            PerOrganism = clustered.PerCluster,
            Components = VarianceComponents.Of(byOrganism),
        };
    }

    /// <summary>
    /// Unweighted mean over tasks of the per-task differences. Interval: resample examples within each task. Test: swap
    /// A's and B's outcome on random examples; only discordant examples change the statistic, each weighing 1/(T·n_task).
    /// </summary>
    private static TunePairRow MeanPair(string a, string b, IReadOnlyList<(string Task, bool[] A, bool[] B, string[] Organism)> perTask, ReportOptions options)
    {
        int tasks = perTask.Count;
        var diffs = perTask.Select(t => t.A.Zip(t.B, (x, y) => 100.0 * ((x ? 1 : 0) - (y ? 1 : 0))).ToArray()).ToArray();
        // Clusters are organisms; inside each, one stratum per task with that organism's examples.
        var organisms = EditingAnalysis.Organisms(perTask.SelectMany(t => t.Organism));
        var strata = organisms.Select(o => perTask.Select((t, ti) => diffs[ti].Where((_, i) => t.Organism[i] == o).ToArray())
            .Where(d => d.Length > 0).ToArray()).ToArray();
        var estimate = Bootstrap.HierarchicalStratified([.. strata.Select(c => (IReadOnlyList<int>)[.. c.Select(d => d.Length)])],
            draw => Enumerable.Range(0, draw.Clusters.Length).Average(j =>
            {
                var cluster = strata[draw.Clusters[j]];
                return Enumerable.Range(0, cluster.Length).Average(s => Descriptive.MeanAt(cluster[s], draw.Cases[j][s]));
            }), options.Resamples, options.Seed);
        var weighted = new List<double>();
        for (int t = 0; t < tasks; t++)
            foreach (double d in diffs[t])
                if (d != 0) weighted.Add(d / (tasks * diffs[t].Length));
        var test = PairedTests.PairedPermutation(weighted.Count, swap =>
        {
            double s = 0;
            for (int i = 0; i < weighted.Count; i++) s += swap[i] ? -weighted[i] : weighted[i];
            return s;
        }, options.Permutations, options.Seed);
        int aOnly = perTask.Sum(t => t.A.Zip(t.B).Count(p => p.First && !p.Second));
        int bOnly = perTask.Sum(t => t.A.Zip(t.B).Count(p => !p.First && p.Second));
        // Per organism: the mean over tasks of that organism's differences (its own examples only).
        var perOrganism = organisms.Select(o => Enumerable.Range(0, tasks)
            .Select(t => diffs[t].Where((_, i) => perTask[t].Organism[i] == o).DefaultIfEmpty(double.NaN).Average())
            .Where(x => !double.IsNaN(x)).DefaultIfEmpty(double.NaN).Average()).ToArray();
        return new TunePairRow(a, b, TuningResults.MeanOverTasks, perTask.Sum(t => t.A.Length),
            perTask.Average(t => 100.0 * t.A.Count(x => x) / t.A.Length), perTask.Average(t => 100.0 * t.B.Count(x => x) / t.B.Length),
            estimate, aOnly, bOnly, test)
        {
            Organisms = organisms,
            PerOrganism = perOrganism,
        };
    }

    private static TuneSecondsDifference? SecondsDifference(string a, string b, IReadOnlyList<TuneUnitResult> runsA,
        IReadOnlyList<TuneUnitResult> runsB, ReportOptions options)
    {
        var pairs = runsA.Select(r => (A: r, B: runsB.FirstOrDefault(x => x.Seed == r.Seed && x.Organism == r.Organism))).Where(p => p.B is not null)
            .Select(p => (p.A.TrainSeconds, p.B!.TrainSeconds)).ToList();
        if (pairs.Count == 0) return null;
        var d = pairs.Select(p => p.Item1 - p.Item2).ToArray();
        return new TuneSecondsDifference(a, b, pairs.Count, pairs.Average(p => p.Item1), pairs.Average(p => p.Item2),
            Bootstrap.Mean(d, options.Resamples, options.Seed), PairedTests.WilcoxonSignedRank(d))
        {
            Differing = d.Count(x => x != 0),
        };
    }
}
