using KeyValueLab.Statistics;

namespace KeyValueLab.Study.Report;

/// <summary>
/// One target set on one task. Every example counts once: with several seeds, an example's outcome is its mean over the
/// seeds (seeds are paired, they score the same examples), and the interval resamples examples (within organisms, when there
/// are several: organisms, then examples). One run: Wilson's interval. The row with <see cref="TuningResults.MeanOverTasks"/>
/// as task holds the unweighted mean over tasks. Accuracy, macro-F1, label-likelihood accuracy and the baselines are ×100.
/// <c>Examples</c> counts distinct evaluation examples (over organisms), not examples × seeds.
/// </summary>
public sealed record TuneTaskRow(string Label, string Task, int Seeds, int Examples, Estimate Accuracy, double? MacroF1,
    double? LabelLikelihoodAccuracy, string Interval)
{
    /// <summary>Share of the evaluation examples in their most common gold label (pooled over organisms); NaN when the store has no gold labels.</summary>
    public double Majority { get; init; } = double.NaN;
    /// <summary>100 / the number of labels the task has.</summary>
    public double Chance { get; init; } = double.NaN;
    /// <summary>Accuracy of each seed (mean over organisms), in seed order: the spread between training runs.</summary>
    public IReadOnlyList<double> PerSeed { get; init; } = [];
    /// <summary>Runs (organism × seed) whose generations were one answer on at least <see cref="TuningAnalysis.ConstantShare"/> of the examples.</summary>
    public int ConstantRuns { get; init; }
    /// <summary>Runs behind the row.</summary>
    public int Runs { get; init; }
    /// <summary>Why this target set did not learn the task beyond its baseline ("" when it did, or when that cannot be told).</summary>
    public string AtBaseline { get; init; } = "";
}

/// <summary>Target set A against B on the same examples, paired by organism and seed: accuracies, A − B (each example's
/// difference averaged over the seeds, so an example counts once) with a bootstrap interval, the discordant counts over
/// seed × example pairs (A right only, B right only) and the test: exact McNemar per task with one seed, otherwise a
/// sign-flip permutation test over examples (A and B swapped on all seeds of an example at once); for the mean over tasks
/// a paired permutation test of the same kind. <c>Pairs</c> counts distinct examples (over organisms), not examples × seeds.</summary>
public sealed record TunePairRow(string A, string B, string Task, int Pairs, double AccuracyA, double AccuracyB,
    Estimate Difference, int AOnly, int BOnly, TestResult Test)
{
    /// <summary>The organisms (replication units) the pairs come from; "" for a study of one model.</summary>
    public IReadOnlyList<string> Organisms { get; init; } = [];
    /// <summary>A − B per organism, in <see cref="Organisms"/>' order.</summary>
    public IReadOnlyList<double> PerOrganism { get; init; } = [];
    /// <summary>Variance of the per-example differences within and between organisms (per task rows only).</summary>
    public VarianceComponents? Components { get; init; }
    /// <summary>Seeds paired in the comparison (each example's difference is its mean over them).</summary>
    public int Seeds { get; init; } = 1;
    /// <summary>Why the comparison cannot test anything although some pairs differ: both sides sit at their baselines
    /// (e.g. two adapters that each give one constant answer); "" otherwise.</summary>
    public string NotTestable { get; init; } = "";
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
    /// <summary>A run whose generations are one answer on at least this share of a task's examples gives a constant label.</summary>
    public const double ConstantShare = 0.95;

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
            var rows = tasks.Select(task => TaskRow(label, task, runs[label], options, notes)).OfType<TuneTaskRow>().ToList();
            perTask.AddRange(rows);
            if (rows.Count > 1) perTask.Add(MeanRow(label, tasks, runs[label], rows, options));
        }

        var pairs = new List<TunePairRow>();
        var secondsDifferences = new List<TuneSecondsDifference>();
        foreach (var (a, b) in Comparisons(labels))
        {
            var perTaskPairs = new List<PairedTask>();
            foreach (string task in tasks)
            {
                var (paired, mismatched) = PairedOutcomes(runs[a], runs[b], task);
                if (mismatched > 0)
                    notes.Add($"{a} vs {b} on {task}: {mismatched} run(s) skipped, their example lists differ from their pair's or their seeds'.");
                if (paired is null) continue;
                perTaskPairs.Add(paired);
                string baseline = BothAtBaseline(perTask, a, b, [task]);
                pairs.Add(TaskPair(a, b, paired, options) with { NotTestable = baseline });
            }
            if (perTaskPairs.Count > 1)
                pairs.Add(MeanPair(a, b, perTaskPairs, options) with { NotTestable = BothAtBaseline(perTask, a, b, [.. perTaskPairs.Select(p => p.Task)]) });
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

    /// <summary>Share (×100) of the examples in their most common gold label, pooled over one run per organism; NaN without gold labels.</summary>
    public static double MajorityRate(IEnumerable<TaskOutcome> onePerOrganism)
    {
        var gold = onePerOrganism.SelectMany(o => o.Gold).ToList();
        return gold.Count == 0 ? double.NaN : 100.0 * gold.GroupBy(g => g, StringComparer.Ordinal).Max(g => g.Count()) / gold.Count;
    }

    /// <summary>100 / the task's number of labels: its known label set (BoolQ 2, CB 3, …), else the distinct gold labels.</summary>
    public static double ChanceRate(string task, IEnumerable<TaskOutcome> outcomes)
    {
        IReadOnlyList<string> known = [];
        try { known = KeyValueLab.Tuning.TaskLoader.LabelsOf(task); }
        catch (ArgumentException) { }  // a task name the loader does not know: count its gold labels
        int labels = known.Count > 0 ? known.Count : outcomes.SelectMany(o => o.Gold).Distinct(StringComparer.Ordinal).Count();
        return labels == 0 ? double.NaN : 100.0 / labels;
    }

    /// <summary>Whether one run's generations are a single answer on at least <see cref="ConstantShare"/> of the examples (false when they were not stored).</summary>
    public static bool IsConstant(TaskOutcome o) =>
        o.Predicted.Count > 0 && o.Predicted.GroupBy(p => p, StringComparer.Ordinal).Max(g => g.Count()) >= ConstantShare * o.Predicted.Count;

    /// <summary>
    /// Each organism's per-example outcomes (×100) averaged over its seeds, or null when a run lacks per-example flags.
    /// Runs whose example list differs in length or gold labels from the organism's first run are left out and counted.
    /// </summary>
    private static (List<double[]>? Clusters, int Skipped) SeedAveraged(IReadOnlyList<(string Organism, TaskOutcome Outcome)> outcomes,
        IReadOnlyList<string> organisms)
    {
        if (outcomes.Any(o => o.Outcome.Correct.Count == 0)) return (null, 0);
        var clusters = new List<double[]>();
        int skipped = 0;
        foreach (string org in organisms)
        {
            var mine = outcomes.Where(o => o.Organism == org).Select(o => o.Outcome).ToList();
            if (mine.Count == 0) continue;
            var usable = mine.Where(o => SameExamples(o, mine[0])).ToList();
            skipped += mine.Count - usable.Count;
            int n = mine[0].Correct.Count;
            var mean = new double[n];
            foreach (var o in usable)
                for (int i = 0; i < n; i++) mean[i] += o.Correct[i] ? 100.0 / usable.Count : 0;
            clusters.Add(mean);
        }
        return (clusters, skipped);
    }

    /// <summary>Two runs scored the same examples: equal counts and, where both kept them, equal gold labels in order.</summary>
    private static bool SameExamples(TaskOutcome x, TaskOutcome y) =>
        x.Correct.Count == y.Correct.Count && (x.Gold.Count == 0 || y.Gold.Count == 0 || x.Gold.SequenceEqual(y.Gold, StringComparer.Ordinal));

    private static TuneTaskRow? TaskRow(string label, string task, IReadOnlyList<TuneUnitResult> runs, ReportOptions options, List<string> notes)
    {
        var outcomes = runs.Select(r => (r.Organism, r.Seed, Outcome: r.Tasks.FirstOrDefault(t => t.Task == task)))
            .Where(x => x.Outcome is not null).Select(x => (x.Organism, x.Seed, Outcome: x.Outcome!)).ToList();
        if (outcomes.Count == 0) return null;
        var organisms = EditingAnalysis.Organisms(outcomes.Select(o => o.Organism));
        var seeds = outcomes.Select(o => o.Seed).Distinct().Order().ToList();
        var likelihood = outcomes.Select(o => o.Outcome.LabelLikelihoodAccuracy).OfType<double>().ToList();
        double? likelihoodAccuracy = likelihood.Count == outcomes.Count ? 100 * likelihood.Average() : null;
        var firstPerOrganism = organisms.Select(org => outcomes.First(o => o.Organism == org).Outcome).ToList();
        double majority = MajorityRate(firstPerOrganism);
        double chance = ChanceRate(task, outcomes.Select(o => o.Outcome));
        var perSeed = seeds.Select(s => outcomes.Where(o => o.Seed == s).Average(o => 100 * o.Outcome.Accuracy)).ToList();
        int constant = outcomes.Count(o => IsConstant(o.Outcome));

        var (clusters, skipped) = SeedAveraged([.. outcomes.Select(o => (o.Organism, o.Outcome))], organisms);
        if (skipped > 0) notes.Add($"{label} on {task}: {skipped} run(s) left out of the accuracy, their examples differ from their organism's other seeds'.");
        Estimate accuracy;
        string interval;
        int examples;
        if (clusters is null)
        {
            // A store that kept accuracies only: the mean over runs, with Wilson's interval over one run's worth of examples.
            examples = firstPerOrganism.Sum(o => o.Count);
            double mean = outcomes.Average(o => o.Outcome.Accuracy);
            var (low, high) = Descriptive.Wilson((int)Math.Round(mean * examples), examples);
            (accuracy, interval) = (new Estimate(100 * mean, 100 * low, 100 * high), "Wilson (accuracies only)");
        }
        else
        {
            examples = clusters.Sum(c => c.Length);
            if (clusters.Count > 1)
                (accuracy, interval) = (Bootstrap.ClusteredMean([.. clusters], options.Resamples, options.Seed).Pooled, "hierarchical bootstrap");
            else if (outcomes.Count == 1)
            {
                int correct = outcomes[0].Outcome.Correct.Count(c => c), n = outcomes[0].Outcome.Correct.Count;
                var (low, high) = Descriptive.Wilson(correct, n);
                (accuracy, interval) = (new Estimate(n == 0 ? double.NaN : 100.0 * correct / n, 100 * low, 100 * high), "Wilson");
            }
            else (accuracy, interval) = (Bootstrap.Mean(clusters[0], options.Resamples, options.Seed), "bootstrap over examples");
        }
        return new TuneTaskRow(label, task, seeds.Count, examples, accuracy, 100 * outcomes.Average(o => o.Outcome.MacroF1), likelihoodAccuracy, interval)
        {
            Majority = majority,
            Chance = chance,
            PerSeed = perSeed,
            ConstantRuns = constant,
            Runs = outcomes.Count,
            AtBaseline = AtBaseline(constant, outcomes.Count, accuracy, majority, chance),
        };
    }

    /// <summary>
    /// Why a target set shows no learning on a task: every run gives a constant answer, or the accuracy's 95% interval does
    /// not rise above the better of the majority-class and chance rates. "" when it learned, or when the store cannot tell.
    /// </summary>
    public static string AtBaseline(int constantRuns, int runs, Estimate accuracy, double majority, double chance)
    {
        if (runs > 0 && constantRuns == runs) return runs == 1 ? "it gives one constant answer" : $"all {runs} runs give one constant answer";
        double floor = double.IsNaN(majority) ? chance : double.IsNaN(chance) ? majority : Math.Max(majority, chance);
        if (double.IsNaN(floor) || double.IsNaN(majority) || double.IsNaN(accuracy.Low)) return "";
        return accuracy.Low <= floor ? $"its accuracy ({ReportFormat.Score(accuracy.Value)}, 95% CI from {ReportFormat.Score(accuracy.Low)}) does not rise above the majority class ({ReportFormat.Score(majority)})" : "";
    }

    /// <summary>"" unless both target sets sit at their baselines on every one of the tasks; then why.</summary>
    private static string BothAtBaseline(IReadOnlyList<TuneTaskRow> rows, string a, string b, IReadOnlyList<string> tasks)
    {
        var reasons = new List<string>();
        foreach (string label in (string[])[a, b])
            foreach (string task in tasks)
            {
                var row = rows.FirstOrDefault(r => r.Label == label && r.Task == task);
                if (row is null || row.AtBaseline.Length == 0) return "";
                reasons.Add(row.AtBaseline);
            }
        string scope = tasks.Count == 1 ? $"on {tasks[0]}" : "on every task";
        int constant = rows.Where(r => (r.Label == a || r.Label == b) && tasks.Contains(r.Task)).Count(r => r.ConstantRuns == r.Runs);
        return constant == 2 * tasks.Count
            ? $"both sides sit at their baselines {scope}: every run gives one constant answer"
            : $"both sides sit at their baselines {scope} (constant answers or accuracy not above the majority class)";
    }

    private static TuneTaskRow MeanRow(string label, IReadOnlyList<string> tasks, IReadOnlyList<TuneUnitResult> runs,
        IReadOnlyList<TuneTaskRow> taskRows, ReportOptions options)
    {
        double mean = taskRows.Average(r => r.Accuracy.Value);
        // Clusters are organisms; inside each, one stratum per task holding its examples' seed-averaged outcomes.
        var organisms = EditingAnalysis.Organisms(runs.Select(r => r.Organism));
        var strata = organisms.Select(org => tasks.Select(task =>
        {
            var outcomes = runs.Where(r => r.Organism == org).Select(r => r.Tasks.FirstOrDefault(t => t.Task == task)).OfType<TaskOutcome>()
                .Select(o => (org, o)).ToList();
            return outcomes.Count == 0 ? [] : SeedAveraged(outcomes, [org]).Clusters?.FirstOrDefault() ?? [];
        }).Where(s => s.Length > 0).ToArray()).ToArray();
        // The interval needs every task's per-example outcomes on every organism; without them the row keeps the mean alone.
        bool complete = strata.All(c => c.Length == taskRows.Count)
            && runs.All(r => r.Tasks.All(x => x.Correct.Count > 0 || !tasks.Contains(x.Task)));
        var estimate = !complete ? new Estimate(mean, double.NaN, double.NaN) : Bootstrap.HierarchicalStratified(
            [.. strata.Select(c => (IReadOnlyList<int>)[.. c.Select(s => s.Length)])],
            draw => Enumerable.Range(0, draw.Clusters.Length).Average(j =>
            {
                var cluster = strata[draw.Clusters[j]];
                return Enumerable.Range(0, cluster.Length).Average(s => Descriptive.MeanAt(cluster[s], draw.Cases[j][s]));
            }), options.Resamples, options.Seed);
        var outcomesAll = runs.SelectMany(r => r.Tasks).ToList();
        var likelihood = outcomesAll.Select(o => o.LabelLikelihoodAccuracy).OfType<double>().ToList();
        var seeds = runs.Select(r => r.Seed).Distinct().Order().ToList();
        int constant = taskRows.Sum(r => r.ConstantRuns), runCount = taskRows.Sum(r => r.Runs);
        return new TuneTaskRow(label, TuningResults.MeanOverTasks, seeds.Count, taskRows.Sum(r => r.Examples),
            estimate with { Value = mean },
            100 * outcomesAll.Average(o => o.MacroF1), likelihood.Count == outcomesAll.Count ? 100 * likelihood.Average() : null, "bootstrap")
        {
            Majority = taskRows.Average(r => r.Majority),
            Chance = taskRows.Average(r => r.Chance),
            PerSeed = [.. seeds.Select(s => taskRows.All(r => r.PerSeed.Count == seeds.Count) ? taskRows.Average(r => r.PerSeed[seeds.IndexOf(s)]) : double.NaN)],
            ConstantRuns = constant,
            Runs = runCount,
            AtBaseline = taskRows.All(r => r.AtBaseline.Length > 0) ? "it sits at its baseline on every task" : "",
        };
    }

    /// <summary>One task's paired outcomes: per organism, each example's A − B (×100) averaged over the seeds both have,
    /// and the discordant counts over seed × example pairs.</summary>
    private sealed record PairedTask(string Task, IReadOnlyList<string> Organisms, double[][] Differences, double AccuracyA, double AccuracyB,
        int AOnly, int BOnly, int Seeds);

    /// <summary>A's and B's outcomes on one task, paired by organism and seed; runs without a partner, without per-example
    /// flags, or whose examples differ from their partner's or from their organism's first seed's are skipped (and counted).</summary>
    private static (PairedTask? Paired, int Mismatched) PairedOutcomes(IReadOnlyList<TuneUnitResult> a, IReadOnlyList<TuneUnitResult> b, string task)
    {
        int mismatched = 0, aOnly = 0, bOnly = 0, correctA = 0, correctB = 0, scored = 0;
        var organisms = new List<string>();
        var differences = new List<double[]>();
        var seeds = new HashSet<int>();
        foreach (string org in EditingAnalysis.Organisms(a.Select(r => r.Organism)))
        {
            var pairs = new List<(TaskOutcome A, TaskOutcome B)>();
            foreach (var runA in a.Where(r => r.Organism == org))
            {
                var runB = b.FirstOrDefault(r => r.Seed == runA.Seed && r.Organism == org);
                var oa = runA.Tasks.FirstOrDefault(t => t.Task == task);
                var ob = runB?.Tasks.FirstOrDefault(t => t.Task == task);
                if (oa is null || ob is null || oa.Correct.Count == 0 || ob.Correct.Count == 0) continue;
                if (!SameExamples(oa, ob) || (pairs.Count > 0 && !SameExamples(oa, pairs[0].A))) { mismatched++; continue; }
                pairs.Add((oa, ob));
                seeds.Add(runA.Seed);
            }
            if (pairs.Count == 0) continue;
            int n = pairs[0].A.Correct.Count;
            var d = new double[n];
            foreach (var (oa, ob) in pairs)
                for (int i = 0; i < n; i++)
                {
                    bool x = oa.Correct[i], y = ob.Correct[i];
                    d[i] += 100.0 * ((x ? 1 : 0) - (y ? 1 : 0)) / pairs.Count;
                    if (x && !y) aOnly++;
                    if (!x && y) bOnly++;
                    if (x) correctA++;
                    if (y) correctB++;
                    scored++;
                }
            organisms.Add(org);
            differences.Add(d);
        }
        if (organisms.Count == 0) return (null, mismatched);
        return (new PairedTask(task, organisms, [.. differences], 100.0 * correctA / scored, 100.0 * correctB / scored, aOnly, bOnly, seeds.Count), mismatched);
    }

    private static TunePairRow TaskPair(string a, string b, PairedTask t, ReportOptions options)
    {
        var byOrganism = t.Differences.Select(d => (IReadOnlyList<double>)d).ToList();
        var clustered = Bootstrap.ClusteredMean(byOrganism, options.Resamples, options.Seed);
        var all = t.Differences.SelectMany(d => d).ToArray();
        // One seed: each example is a discordant pair or not, and McNemar's exact test counts them once. Several seeds: an
        // example's seed-averaged difference is one paired observation; under H0 its sign is as likely either way.
        var test = t.Seeds == 1 ? PairedTests.McNemarExact(t.AOnly, t.BOnly) : SignFlip([.. all.Where(x => x != 0)], options);
        return new TunePairRow(a, b, t.Task, all.Length, t.AccuracyA, t.AccuracyB, clustered.Pooled, t.AOnly, t.BOnly, test)
        {
            Organisms = t.Organisms,
            PerOrganism = clustered.PerCluster,
            Components = VarianceComponents.Of(byOrganism),
            Seeds = t.Seeds,
        };
    }

    /// <summary>Paired permutation test of the sum of <paramref name="weighted"/> under random sign flips.</summary>
    private static TestResult SignFlip(double[] weighted, ReportOptions options) =>
        PairedTests.PairedPermutation(weighted.Length, swap =>
        {
            double s = 0;
            for (int i = 0; i < weighted.Length; i++) s += swap[i] ? -weighted[i] : weighted[i];
            return s;
        }, options.Permutations, options.Seed);

    /// <summary>
    /// Unweighted mean over tasks of the per-task differences. Interval: organisms, then examples within each task. Test:
    /// flip the sign of random examples' (seed-averaged) differences; each weighs 1/(T·n_task).
    /// </summary>
    private static TunePairRow MeanPair(string a, string b, IReadOnlyList<PairedTask> perTask, ReportOptions options)
    {
        int tasks = perTask.Count;
        var organisms = EditingAnalysis.Organisms(perTask.SelectMany(t => t.Organisms));
        // Clusters are organisms; inside each, one stratum per task with that organism's examples.
        var strata = organisms.Select(o => perTask.Select(t => t.Organisms.ToList().IndexOf(o) is int k && k >= 0 ? t.Differences[k] : [])
            .Where(d => d.Length > 0).ToArray()).ToArray();
        var estimate = Bootstrap.HierarchicalStratified([.. strata.Select(c => (IReadOnlyList<int>)[.. c.Select(d => d.Length)])],
            draw => Enumerable.Range(0, draw.Clusters.Length).Average(j =>
            {
                var cluster = strata[draw.Clusters[j]];
                return Enumerable.Range(0, cluster.Length).Average(s => Descriptive.MeanAt(cluster[s], draw.Cases[j][s]));
            }), options.Resamples, options.Seed);
        var weighted = new List<double>();
        foreach (var t in perTask)
        {
            int n = t.Differences.Sum(d => d.Length);
            foreach (double d in t.Differences.SelectMany(x => x))
                if (d != 0) weighted.Add(d / (tasks * n));
        }
        var test = SignFlip([.. weighted], options);
        // Per organism: the mean over tasks of that organism's differences (its own examples only).
        var perOrganism = strata.Select(c => c.Length == 0 ? double.NaN : c.Average(d => d.Average())).ToArray();
        return new TunePairRow(a, b, TuningResults.MeanOverTasks, perTask.Sum(t => t.Differences.Sum(d => d.Length)),
            perTask.Average(t => t.AccuracyA), perTask.Average(t => t.AccuracyB), estimate, perTask.Sum(t => t.AOnly), perTask.Sum(t => t.BOnly), test)
        {
            Organisms = organisms,
            PerOrganism = perOrganism,
            Seeds = perTask.Max(t => t.Seeds),
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
