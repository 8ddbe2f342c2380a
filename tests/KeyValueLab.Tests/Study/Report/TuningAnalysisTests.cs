using KeyValueLab.Statistics;
using KeyValueLab.Study;
using KeyValueLab.Study.Report;

namespace KeyValueLab.Tests.Study.Report;

/// <summary>The tuning half's statistics: baselines beside accuracies, constant adapters, seeds paired and examples counted once.</summary>
public class TuningAnalysisTests
{
    private static readonly ReportOptions Fast = StudyReportTests.Fast;

    /// <summary>One task outcome from gold labels and generations (correct = equal), as the study stores it.</summary>
    private static TaskOutcome Outcome(string task, IReadOnlyList<string> gold, IReadOnlyList<string> predicted)
    {
        bool[] correct = [.. gold.Zip(predicted, (g, p) => g == p)];
        return new TaskOutcome(task, gold.Count, correct.Count(c => c) / (double)gold.Count, 0.5, null, correct) { Gold = gold, Predicted = predicted };
    }

    private static TuneUnitResult Run(string label, int seed, params TaskOutcome[] tasks) =>
        new() { Label = label, Targets = ["q_proj"], Seed = seed, Tasks = tasks };

    /// <summary>60 "true" then 40 "false": the majority class is 60%.</summary>
    private static readonly string[] Gold = [.. Enumerable.Repeat("true", 60), .. Enumerable.Repeat("false", 40)];

    [Fact]
    public void AdaptersWithDifferentConstantAnswersAreNotTestable()
    {
        // +keys:up always says "true" (70% right), +values always "false" (30%): every example differs, the difference is
        // +40 points with McNemar's p ≈ 7e-5, and yet neither adapter learned anything.
        string[] gold = [.. Enumerable.Repeat("true", 70), .. Enumerable.Repeat("false", 30)];
        var tunes = new[]
        {
            Run("+keys:up", 1, Outcome("boolq", gold, [.. gold.Select(_ => "true")])),
            Run("+values", 1, Outcome("boolq", gold, [.. gold.Select(_ => "false")])),
        };
        var tuning = TuningAnalysis.Analyze(tunes, Fast);
        var keys = tuning.PerTask.Single(r => r.Label == "+keys:up");
        Assert.Equal(70, keys.Majority, 9);
        Assert.Equal(50, keys.Chance, 9);
        Assert.Equal(1, keys.ConstantRuns);
        Assert.Equal("it gives one constant answer", keys.AtBaseline);
        var pair = tuning.Pairs.Single();
        Assert.Equal(100, pair.AOnly + pair.BOnly);
        Assert.Equal(40, pair.Difference.Value, 9);
        Assert.True(pair.Difference.Low > 0 && pair.Test.P < 0.05, $"{pair.Difference} p={pair.Test.P}");
        var claim = PaperClaims.Judge(null, tuning, Fast)[3];
        Assert.Equal(Verdict.NotTestable, claim.Verdict);
        Assert.Equal("not testable (both sides sit at their baselines on boolq: every run gives one constant answer)", claim.VerdictText);

        // The same pair where +keys:up learned the task (90% right, varied answers) is testable again.
        string[] learned = [.. gold.Select((g, i) => i % 10 == 0 ? (g == "true" ? "false" : "true") : g)];
        var better = TuningAnalysis.Analyze([Run("+keys:up", 1, Outcome("boolq", gold, learned)), tunes[1]], Fast);
        Assert.Equal("", better.PerTask.Single(r => r.Label == "+keys:up").AtBaseline);
        Assert.Equal("", better.Pairs.Single().NotTestable);
        Assert.Equal(Verdict.Held, PaperClaims.Judge(null, better, Fast)[3].Verdict);
    }

    [Fact]
    public void AnAccuracyThatDoesNotRiseAboveTheMajorityClassIsAtBaseline()
    {
        // Varied answers (40 "true", 60 "false"), 62 of 100 right on a task whose majority class is 60%: Wilson's interval reaches below 60.
        string[] predicted = [.. Enumerable.Range(0, 100).Select(i => i < 31 || i >= 91 ? "true" : "false")];
        var row = TuningAnalysis.Analyze([Run("q,v", 1, Outcome("boolq", Gold, predicted))], Fast).PerTask.Single();
        Assert.Equal(0, row.ConstantRuns);
        Assert.Equal(62, row.Accuracy.Value, 9);
        Assert.Equal(100 * Descriptive.Wilson(62, 100).Low, row.Accuracy.Low, 9);
        Assert.StartsWith("its accuracy (", row.AtBaseline);
        Assert.EndsWith("does not rise above the majority class (60.0)", row.AtBaseline);
    }

    [Fact]
    public void SeedsScoringTheSameExamplesAreAveragedPerExampleNotCountedTwice()
    {
        string[] gold = [.. Enumerable.Range(0, 50).Select(i => i % 2 == 0 ? "true" : "false")];
        string[] seed1 = [.. gold.Select((g, i) => i % 5 == 0 ? (g == "true" ? "false" : "true") : g)];   // 40 of 50 right
        string[] seed2 = [.. gold.Select((g, i) => i % 5 <= 1 ? (g == "true" ? "false" : "true") : g)];   // 30 of 50 right
        var tuning = TuningAnalysis.Analyze([Run("q,v", 1, Outcome("boolq", gold, seed1)), Run("q,v", 2, Outcome("boolq", gold, seed2))], Fast);
        var row = tuning.PerTask.Single();
        Assert.Equal(50, row.Examples);
        Assert.Equal(2, row.Seeds);
        Assert.Equal([80.0, 60.0], row.PerSeed);
        // Independent computation: each example's mean over the two seeds, bootstrapped over the 50 examples.
        double[] perExample = [.. Enumerable.Range(0, 50).Select(i => 50.0 * ((seed1[i] == gold[i] ? 1 : 0) + (seed2[i] == gold[i] ? 1 : 0)))];
        var expected = Bootstrap.Mean(perExample, Fast.Resamples, Fast.Seed);
        Assert.Equal(70, row.Accuracy.Value, 9);
        Assert.Equal(expected.Low, row.Accuracy.Low, 9);
        Assert.Equal(expected.High, row.Accuracy.High, 9);
        Assert.Equal("bootstrap over examples", row.Interval);

        // A second seed that repeats the first exactly adds no information: the interval is the one-seed bootstrap over the
        // same 50 examples, wider than a Wilson interval over 100 "examples" would be.
        var twice = TuningAnalysis.Analyze([Run("q,v", 1, Outcome("boolq", gold, seed1)), Run("q,v", 2, Outcome("boolq", gold, seed1))], Fast).PerTask.Single();
        var once = Bootstrap.Mean([.. seed1.Select((p, i) => p == gold[i] ? 100.0 : 0.0)], Fast.Resamples, Fast.Seed);
        Assert.Equal(once.Low, twice.Accuracy.Low, 9);
        Assert.Equal(once.High, twice.Accuracy.High, 9);
        var (wl, wh) = Descriptive.Wilson(80, 100);
        Assert.True(twice.Accuracy.High - twice.Accuracy.Low > 100 * (wh - wl) * 1.2, $"{twice.Accuracy} vs Wilson over 100 [{wl}, {wh}]");
    }

    [Fact]
    public void ARepeatedSeedGivesThePValueOfOneSeed()
    {
        // A right on 12 examples B gets wrong, B on 2 that A gets wrong, both right on the rest.
        string[] gold = [.. Enumerable.Range(0, 40).Select(i => i % 2 == 0 ? "true" : "false")];
        string Flip(string g) => g == "true" ? "false" : "true";
        string[] a = [.. gold.Select((g, i) => i is 12 or 13 ? Flip(g) : g)];
        string[] b = [.. gold.Select((g, i) => i < 12 ? Flip(g) : g)];
        TuneUnitResult[] Runs(int seeds) => [.. Enumerable.Range(1, seeds).SelectMany(s => new[]
            { Run("+keys:up", s, Outcome("boolq", gold, a)), Run("+values", s, Outcome("boolq", gold, b)) })];
        var one = TuningAnalysis.Analyze(Runs(1), Fast).Pairs.Single();
        var two = TuningAnalysis.Analyze(Runs(2), Fast).Pairs.Single();
        Assert.Equal("exact McNemar", one.Test.Test);
        Assert.Equal(PairedTests.McNemarExact(12, 2).P, one.Test.P, 12);
        // Two identical seeds: the same 40 examples, 14 of which differ; the exact sign-flip test is the same two-sided sign test.
        Assert.Equal("exact paired permutation", two.Test.Test);
        Assert.Equal(one.Test.P, two.Test.P, 12);
        Assert.Equal(40, two.Pairs);
        Assert.Equal(one.Difference.Value, two.Difference.Value, 9);
        Assert.Equal(one.Difference.Low, two.Difference.Low, 9);
        Assert.True(PairedTests.McNemarExact(24, 4).P < one.Test.P / 10);  // what counting the 80 seed × example pairs would claim
    }

    [Fact]
    public void ChanceComesFromTheTaskLabelSetAndMajorityFromTheGoldLabels()
    {
        Assert.Equal(100.0 / 3, TuningAnalysis.ChanceRate("cb", []), 9);
        Assert.Equal(50, TuningAnalysis.ChanceRate("copa", []), 9);
        var generic = Outcome("mytask", ["a", "b", "c", "d", "a"], ["a", "a", "a", "a", "a"]);
        Assert.Equal(25, TuningAnalysis.ChanceRate("mytask", [generic]), 9);
        Assert.Equal(40, TuningAnalysis.MajorityRate([generic]), 9);
        Assert.True(TuningAnalysis.IsConstant(generic));
        Assert.False(TuningAnalysis.IsConstant(Outcome("mytask", ["a", "b"], ["a", "b"])));
        Assert.True(double.IsNaN(TuningAnalysis.MajorityRate([new TaskOutcome("x", 2, 0.5, 0.5, null, [true, false])])));  // an old store: unknown
    }

    [Fact]
    public void TheReportPutsMajorityAndChanceBesideEveryAccuracy()
    {
        using var dir = new TempDir();
        string[] learned = [.. Gold.Select((g, i) => i % 10 == 0 ? (g == "true" ? "false" : "true") : g)];
        var tunes = new[]
        {
            Run("q,v", 1, Outcome("boolq", Gold, learned)),
            Run("+values", 1, Outcome("boolq", Gold, [.. Gold.Select(_ => "false")])),
        };
        var files = StudyReport.Write(new StudyResults(SyntheticStudy.Info(tunes.Length), [], tunes), dir.Path, Fast);
        string md = File.ReadAllText(files.Markdown);
        Assert.Contains("| Task | Majority | Chance | q,v | +values |", md);
        Assert.Matches(@"\| boolq \| 60\.0 \| 50\.0 \| 90\.0 \[[\d.]+, [\d.]+\] \| 40\.0 \[[\d.]+, [\d.]+\] \(baseline\) 1/1 constant \|", md);
        string csv = File.ReadAllText(Path.Combine(dir.Path, "tables", "tuning_tasks.csv"));
        Assert.Contains("majority_class,chance,runs,constant_runs,at_baseline", csv);
    }
}
