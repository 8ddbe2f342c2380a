using System.Globalization;
using KeyValueLab.Evaluation;
using KeyValueLab.Statistics;
using KeyValueLab.Study;
using KeyValueLab.Study.Report;

namespace KeyValueLab.Tests.Study.Report;

/// <summary>How claims are judged: organisms as replicates, Holm across the claims, not testable versus inconclusive.</summary>
public class PaperClaimsTests
{
    private static readonly ReportOptions Fast = StudyReportTests.Fast;

    /// <summary>FT keys:up and values on <paramref name="organisms"/> organisms × 40 cases. ES per case is 0/100; keys
    /// succeed on <c>keysRate(k)</c> of organism k's cases, values on <c>valuesRate(k)</c>.</summary>
    private static List<EditUnitResult> Edits(int organisms, Func<int, double> keysRate, Func<int, double> valuesRate)
    {
        var units = new List<EditUnitResult>();
        for (int k = 0; k < organisms; k++)
            for (int i = 0; i < 40; i++)
                foreach (var (side, rate) in new[] { ("keys:up", keysRate(k)), ("values", valuesRate(k)) })
                {
                    // A fixed, organism-specific spread of successes over the cases.
                    bool success = (i * 17 + k * 5 + (side == "values" ? 3 : 0)) % 40 < rate * 40;
                    var metrics = new CaseMetrics { ES = success ? 100 : 0, PS = success ? 100 : 0, NS = success ? 100 : 0 };
                    units.Add(new EditUnitResult
                    {
                        Method = "FT", Side = side, Layers = "1", Seed = 1, Mode = "single", CaseId = $"case{i:D2}", Organism = $"org{k}",
                        Pre = new CaseMetrics(), Post = metrics, Seconds = 1,
                    });
                }
        return units;
    }

    [Fact]
    public void AClaimThatOneOrganismContradictsIsNotHeld()
    {
        // Four organisms: keys 100% vs values 50% (+50 points); the fifth: keys 60% vs values 70% (−10 points).
        // The pooled difference, +38, has a hierarchical interval that excludes 0 (even three draws of the fifth
        // organism out of five average +14) and the pooled test is far below 0.05, yet one organism points the other way.
        var contradicted = EditingAnalysis.Analyze(Edits(5, k => k < 4 ? 1.0 : 0.6, k => k < 4 ? 0.5 : 0.7), Fast);
        var es = contradicted.Differences.Single(d => d.Metric == "ES");
        Assert.Equal(["org0", "org1", "org2", "org3", "org4"], es.Organisms);
        Assert.Equal([50, 50, 50, 50, -10], es.PerOrganism.Select(x => Math.Round(x, 9)));
        Assert.Equal(38, es.Difference.Value, 9);
        Assert.True(es.Difference.Low > 0, $"pooled interval {es.Difference}");
        Assert.True(es.Test.P < 1e-6);
        var claim = PaperClaims.Judge(contradicted, null, Fast)[0];
        Assert.Equal(Verdict.Inconclusive, claim.Verdict);
        Assert.Equal("inconclusive (organisms disagree: 1 of 5 point the other way)", claim.VerdictText);
        Assert.NotEqual(double.NaN, es.BetweenOrganismSd);
        Assert.Equal(Math.Sqrt(new double[] { 50, 50, 50, 50, -10 }.Select(x => (x - 38) * (x - 38)).Sum() / 4), es.BetweenOrganismSd, 9);

        // The control: all five organisms agree, so the same rule lets the claim hold.
        var agreed = EditingAnalysis.Analyze(Edits(5, _ => 1.0, _ => 0.5), Fast);
        Assert.Equal(Verdict.Held, PaperClaims.Judge(agreed, null, Fast)[0].Verdict);
    }

    [Fact]
    public void TheReportShowsEveryOrganismBesideThePooledInterval()
    {
        using var dir = new TempDir();
        var edits = Edits(5, k => k < 4 ? 1.0 : 0.6, k => k < 4 ? 0.5 : 0.7);
        var files = StudyReport.Write(new StudyResults(SyntheticStudy.Info(edits.Count), edits, []), dir.Path, Fast);
        string md = File.ReadAllText(files.Markdown);
        Assert.Contains("It covers **5 organisms** of `organism:0123abcd`", md);
        Assert.Contains("**(a) Keys better than values on efficacy (ES): inconclusive (organisms disagree: 1 of 5 point the other way).**", md);
        Assert.Contains("; per organism +50.0, +50.0, +50.0, +50.0, −10.0.", md);
        Assert.Contains("| FT keys:up vs values, L1 | ES | +50.0, +50.0, +50.0, +50.0, −10.0 | 26.8 |", md);  // SD of the five: √(4·12² + 48²)/2
        Assert.Contains("hierarchical bootstrap", md);
    }

    /// <summary>+keys:up and +values on five organisms, two tasks of 60 examples: +keys:up right on
    /// <c>keysTenths(k)</c>/10 of organism k's examples, +values on half.</summary>
    private static List<TuneUnitResult> Tunes(Func<int, int> keysTenths)
    {
        var units = new List<TuneUnitResult>();
        for (int k = 0; k < 5; k++)
            foreach (string label in (string[])["+keys:up", "+values"])
            {
                int tenths = label == "+keys:up" ? keysTenths(k) : 5;
                var tasks = ((string[])["tf", "mc"]).Select(task =>
                {
                    bool[] correct = [.. Enumerable.Range(0, 60).Select(i => (i + k) % 10 < tenths)];
                    return new TaskOutcome(task, 60, correct.Count(c => c) / 60.0, 0.5, null, correct);
                }).ToList();
                units.Add(new TuneUnitResult { Label = label, Targets = ["q_proj"], Seed = 1, Organism = $"org{k}", Tasks = tasks });
            }
        return units;
    }

    [Fact]
    public void ATuningClaimThatOneOrganismContradictsIsNotHeld()
    {
        var contradicted = TuningAnalysis.Analyze(Tunes(k => k < 4 ? 9 : 4), Fast);
        var mean = contradicted.Pairs.Single(p => p.A == "+keys:up" && p.B == "+values" && p.Task == TuningResults.MeanOverTasks);
        Assert.Equal([40, 40, 40, 40, -10], mean.PerOrganism.Select(x => Math.Round(x, 9)));
        Assert.Equal(30, mean.Difference.Value, 9);
        var claim = PaperClaims.Judge(null, contradicted, Fast)[3];
        Assert.Equal("inconclusive (organisms disagree: 1 of 5 point the other way)", claim.VerdictText);
        Assert.Equal("hierarchical bootstrap", contradicted.PerTask.First(r => r.Task == "tf").Interval);

        var agreed = TuningAnalysis.Analyze(Tunes(_ => 9), Fast);
        Assert.Equal(Verdict.Held, PaperClaims.Judge(null, agreed, Fast)[3].Verdict);
    }

    [Fact]
    public void ClusteredIntervalIsWiderThanTheCaseInterval()
    {
        // Organisms whose effects differ (+10 … +70 points) give an interval over organisms far wider than the one
        // that treats the 200 pairs as independent cases.
        var edits = Edits(5, k => 0.3 + 0.15 * k, _ => 0.2);
        var analysis = EditingAnalysis.Analyze(edits, Fast);
        var es = analysis.Differences.Single(d => d.Metric == "ES");
        Assert.True(es.PerOrganism.Max() - es.PerOrganism.Min() > 40, string.Join(", ", es.PerOrganism));
        var keys = edits.Where(u => u.Side == "keys:up").ToDictionary(u => (u.Organism, u.CaseId), u => u.Post.ES!.Value);
        double[] pairs = [.. edits.Where(u => u.Side == "values").Select(u => keys[(u.Organism, u.CaseId)] - u.Post.ES!.Value)];
        var naive = Bootstrap.Mean(pairs, Fast.Resamples, Fast.Seed);
        Assert.Equal(naive.Value, es.Difference.Value, 9);  // equal organism sizes: the same point estimate
        Assert.True(es.Difference.High - es.Difference.Low > 1.5 * (naive.High - naive.Low), $"clustered {es.Difference}, naive {naive}");
        var row = analysis.Summary.Single(r => r.Condition.Side == "keys:up");
        Assert.Equal(5, row.ByOrganism["es"].PerCluster.Count);
        Assert.True(row.ByOrganism["es"].BetweenClusterSd > 10);
    }

    [Fact]
    public void HolmCorrectionAcrossClaimsTurnsMarginalResultsInconclusive()
    {
        // Three primary endpoints at raw p = 0.02, 0.03, 0.04, each interval excluding 0 in the claimed direction.
        // Uncorrected, all three would hold; Holm over the family of three: 0.06, 0.06, 0.06 — none holds.
        var ft = new KeyValueLab.Study.Report.EditCondition("FT", "keys:up", "1", "single");
        var values = new KeyValueLab.Study.Report.EditCondition("FT", "values", "1", "single");
        PairedDifference D(string metric, double p) => new(ft, values, metric, 80, 60, 50, new Estimate(10, 2, 18), new TestResult("Wilcoxon signed-rank", 0, p))
        {
            Organisms = [""], PerOrganism = [10], Differing = 30,
        };
        var headline = new HeadlineMetrics(EditMetric.ES, EditMetric.PS, EditMetric.NS, true);
        var editing = new EditingResults(headline, headline.Three, [], [D("ES", 0.02), D("PS", 0.03), D("NS", 0.04)], [], []);
        var claims = PaperClaims.Judge(editing, null, Fast);
        Assert.All(claims.Take(3), c => Assert.Equal(Verdict.Inconclusive, c.Verdict));
        Assert.All(claims.Take(3), c => Assert.Equal(0.06, c.PrimaryEvidence!.AdjustedP, 12));
        Assert.Equal("inconclusive (test not significant after Holm correction)", claims[0].VerdictText);
        // With one strong endpoint the others are corrected less: 0.001·3, then 0.03·2 = 0.06, then 0.06.
        editing = editing with { Differences = [D("ES", 0.001), D("PS", 0.03), D("NS", 0.04)] };
        claims = PaperClaims.Judge(editing, null, Fast);
        Assert.Equal([Verdict.Held, Verdict.Inconclusive, Verdict.Inconclusive], claims.Take(3).Select(c => c.Verdict));
    }

    [Fact]
    public void OneSideAtCeilingAndOneBelowIsTestableButBothAtCeilingIsNot()
    {
        // Key-ROME and ROME both at ES 100 on every case: no pair differs, not testable.
        var both = EditingAnalysis.Analyze(Edits(1, _ => 1.0, _ => 1.0), Fast);
        Assert.Equal(Verdict.NotTestable, PaperClaims.Judge(both, null, Fast)[0].Verdict);
        // Values at 95%: two pairs differ, so the comparison is testable (and, with so few, inconclusive).
        var nearly = EditingAnalysis.Analyze(Edits(1, _ => 1.0, _ => 0.95), Fast);
        var claim = PaperClaims.Judge(nearly, null, Fast)[0];
        Assert.Equal(Verdict.Inconclusive, claim.Verdict);
        Assert.Equal(2, claim.PrimaryEvidence!.Differing);
        Assert.Equal(PairedTests.ExactWilcoxon, claim.PrimaryEvidence.Test.Test);
        Assert.Equal(0.5, claim.PrimaryEvidence.Test.P, 12);  // two differences of the same sign: 2 of 4 sign patterns as extreme
    }

    /// <summary>FT keys:up and values on three organisms × 30 cases, every case of organism k run at speed factor
    /// <c>speed(k)</c> (a slower machine or a busier core multiplies both sides' CPU seconds); values take
    /// <c>slower(k) × (1 ± a few %)</c> of the keys' time (default 1.6 on every organism, beyond the machine margin);
    /// wall seconds are noise that favours values.</summary>
    private static List<EditUnitResult> Timed(Func<int, double> speed, bool withCpu = true, Func<int, double>? slower = null)
    {
        var units = new List<EditUnitResult>();
        for (int k = 0; k < 3; k++)
            for (int i = 0; i < 30; i++)
            {
                double keys = speed(k) * (0.5 + 0.01 * i), values = keys * (slower?.Invoke(k) ?? 1.6) * (1 + 0.02 * ((i * 7 + k) % 5 - 2));
                foreach (var (side, cpu) in new[] { ("keys:up", keys), ("values", values) })
                    units.Add(new EditUnitResult
                    {
                        Method = "FT", Side = side, Layers = "1", Seed = 1, Mode = "single", CaseId = $"case{i:D2}", Organism = $"org{k}",
                        Pre = new CaseMetrics(), Post = new CaseMetrics { ES = 100, PS = 100, NS = 100 },
                        Seconds = side == "values" ? 1 : 1 + 0.1 * ((i + k) % 3), CpuSeconds = withCpu ? cpu : null,
                    });
            }
        return units;
    }

    [Fact]
    public void TheTimingClaimRestsOnTheRatioOfCpuSecondsWhichAMachinesSpeedDoesNotChange()
    {
        var here = EditingAnalysis.Analyze(Timed(k => 1.0 + k), Fast);
        var ratio = here.CpuRatios.Single();
        Assert.Equal(EditingResults.CpuLogRatio, ratio.Metric);
        // Per case ln(keys/values) = −ln 1.6 − ln(1 + 0.02·m), m in −2..2; the mean of the m over an organism's 30 cases is 0
        // only approximately, so compare with the mean of the exact per-case values.
        double expected = Enumerable.Range(0, 3).SelectMany(k => Enumerable.Range(0, 30).Select(i => -Math.Log(1.6 * (1 + 0.02 * ((i * 7 + k) % 5 - 2))))).Average();
        Assert.Equal(expected, ratio.Difference.Value, 1e-9);
        Assert.True(ratio.Difference.High < 0, $"interval {ratio.Difference}");
        var claim = PaperClaims.Judge(here, null, Fast)[4];
        Assert.Equal("e", claim.Id);
        Assert.Equal(Verdict.Held, claim.Verdict);
        Assert.Equal(PaperClaims.Ratio, claim.PrimaryEvidence!.Unit);
        Assert.StartsWith("keys/values ratio 0.6", PaperClaims.Numbers(claim.PrimaryEvidence));

        // The same study on a machine three to nine times slower, its organisms at other relative speeds: the same ratio
        // and interval (to rounding), where a difference of seconds would scale with the machine.
        var slower = EditingAnalysis.Analyze(Timed(k => 3.0 * (3 - k)), Fast);
        var again = slower.CpuRatios.Single();
        Assert.Equal(ratio.Difference.Value, again.Difference.Value, 1e-12);
        Assert.Equal(ratio.Difference.Low, again.Difference.Low, 1e-12);
        Assert.Equal(ratio.Difference.High, again.Difference.High, 1e-12);
        Assert.Equal(Verdict.Held, PaperClaims.Judge(slower, null, Fast)[4].Verdict);

        // A store without CPU times: the claim falls back on the wall seconds (here noise in which values are faster).
        var old = EditingAnalysis.Analyze(Timed(k => 1.0, withCpu: false), Fast);
        Assert.Empty(old.CpuRatios);
        var fallback = PaperClaims.Judge(old, null, Fast)[4];
        Assert.Equal("s", fallback.PrimaryEvidence!.Unit);
        Assert.NotEqual(Verdict.Held, fallback.Verdict);
    }

    /// <summary>The rule's two constants are the spread of the committed measurement (tools/timing-spread/ratios.csv: 9 runs
    /// under three MKL kernel sets × 3 organisms), recomputed here: the SD over runs of the mean over organisms, and the
    /// root mean square over organisms of each organism's SD over runs, both rounded to three decimals.</summary>
    [Fact]
    public void TheTimingConstantsAreTheSpreadOfTheCommittedMeasurement()
    {
        string root = AppContext.BaseDirectory;
        while (!File.Exists(Path.Combine(root, "KeyValueLab.slnx"))) root = Path.GetDirectoryName(root) ?? throw new DirectoryNotFoundException("KeyValueLab.slnx");
        var rows = File.ReadAllLines(Path.Combine(root, "tools", "timing-spread", "ratios.csv")).Skip(1).Select(l => l.Split(','))
            .Select(f => (Run: f[0], Organism: f[3], Cases: int.Parse(f[4], CultureInfo.InvariantCulture), LnRatio: double.Parse(f[5], CultureInfo.InvariantCulture))).ToList();
        Assert.Equal(27, rows.Count);
        Assert.All(rows, r => Assert.Equal(30, r.Cases));
        Assert.Equal(["AVX", "AVX2", "native"], rows.Select(r => r.Run.Split('-')[0]).Distinct().Order(StringComparer.Ordinal));
        var pooled = rows.GroupBy(r => r.Run).Select(g => g.Average(r => r.LnRatio)).ToArray();
        double perOrganism = Math.Sqrt(rows.GroupBy(r => r.Organism).Average(g => Descriptive.Variance([.. g.Select(r => r.LnRatio)])));
        Assert.Equal(PaperClaims.TimingMachineSd, Math.Round(Math.Sqrt(Descriptive.Variance(pooled)), 3));
        Assert.Equal(PaperClaims.TimingOrganismMachineSd, Math.Round(perOrganism, 3));
    }

    /// <summary>
    /// Issue 10 item 3: the timing claim's verdict must survive a change of machine. Its interval carries the measured
    /// machine-to-machine SD of the pooled ln ratio (folded in quadrature), and an organism points one way only beyond
    /// z₀.₉₇₅ × the per-organism SD; a keys/values ratio that the case bootstrap alone would call held but that machines
    /// move by as much is inconclusive.
    /// </summary>
    [Fact]
    public void TheTimingClaimIsHeldOnlyBeyondTheSpreadMeasuredBetweenMachines()
    {
        // Values 5% slower on every case: the cases' own interval excludes 1, and keys are faster on every organism.
        var small = EditingAnalysis.Analyze(Timed(_ => 1.0, slower: _ => 1.05), Fast);
        var cases = small.CpuRatios.Single().Difference;
        Assert.True(cases.High < 0, $"case-level interval {cases}");
        Assert.All(small.CpuRatios.Single().PerOrganism, x => Assert.True(x < 0));
        var claim = PaperClaims.Judge(small, null, Fast)[4];
        Assert.Equal(Verdict.Inconclusive, claim.Verdict);
        Assert.Equal("interval includes 0", claim.PrimaryEvidence!.Reason);
        // The printed interval is the cases' one widened by z·SD in quadrature, around the same estimate.
        double m = 1.959963984540054 * PaperClaims.TimingMachineSd;
        var widened = claim.PrimaryEvidence.Difference;
        Assert.Equal(cases.Value, widened.Value, 12);
        Assert.Equal(cases.Value + Math.Sqrt(Math.Pow(cases.High - cases.Value, 2) + m * m), widened.High, 9);
        Assert.Equal(cases.Value - Math.Sqrt(Math.Pow(cases.Value - cases.Low, 2) + m * m), widened.Low, 9);

        // Two organisms at ratio 0.5, one at 0.88: the widened interval still excludes 1, but the third organism's ratio
        // lies inside the margin a change of machine can move one organism's ratio by, so it does not count as pointing one way.
        var oneNear = EditingAnalysis.Analyze(Timed(_ => 1.0, slower: k => k == 2 ? 1 / 0.88 : 2.0), Fast);
        var near = PaperClaims.Judge(oneNear, null, Fast)[4];
        Assert.True(near.PrimaryEvidence!.Difference.High < 0, $"widened interval {near.PrimaryEvidence.Difference}");
        Assert.Equal(Verdict.Inconclusive, near.Verdict);
        Assert.StartsWith("1 of 3 organisms within the machine-to-machine margin", near.PrimaryEvidence.Reason);
        // The same with the third organism at 0.5 too: held.
        Assert.Equal(Verdict.Held, PaperClaims.Judge(EditingAnalysis.Analyze(Timed(_ => 1.0, slower: _ => 2.0), Fast), null, Fast)[4].Verdict);
        // One organism alone at ratio 0.87: its pooled value moves as one organism's does, so the per-organism spread widens
        // the interval, and the claim is inconclusive (with the three-organism spread it would be held).
        var alone = EditingAnalysis.Analyze([.. Timed(_ => 1.0, slower: _ => 1.15).Where(u => u.Organism == "org0")], Fast);
        var single = PaperClaims.Judge(alone, null, Fast)[4].PrimaryEvidence!;
        Assert.True(PaperClaims.WithMachineSpread(alone.CpuRatios.Single().Difference, PaperClaims.TimingMachineSd).High < 0);
        Assert.Equal(Verdict.Inconclusive, single.Verdict);
        Assert.Equal("interval includes 0", single.Reason);
    }
}

/// <summary>The report's minimum detectable differences against a direct computation from the paired differences.</summary>
public class PowerAnalysisTests
{
    [Fact]
    public void EditingPowerComesFromTheStudysOwnPairedVariance()
    {
        // One model, 40 cases: keys always succeed, values on 20 of 40, so the ES differences are 0 or 100, half each.
        var units = new List<EditUnitResult>();
        for (int i = 0; i < 40; i++)
            foreach (string side in (string[])["keys:up", "values"])
            {
                double score = side == "keys:up" || i % 2 == 0 ? 100 : 0;
                units.Add(new EditUnitResult
                {
                    Method = "FT", Side = side, Layers = "1", Seed = 1, Mode = "single", CaseId = $"c{i:D2}",
                    Pre = new CaseMetrics(), Post = new CaseMetrics { ES = score, PS = score, NS = 100 - score / 2 }, Seconds = 1,
                });
            }
        var rows = PowerAnalysis.Editing(EditingAnalysis.Analyze(units, StudyReportTests.Fast));
        var es = rows.Single(r => r.Metric == "ES");
        // Sample variance of 20 zeros and 20 hundreds: 100²·(20·20/40)/39 = 2564.1; SE = √(2564.1/40) = 8.006;
        // (1.95996 + 0.84162)·8.006 = 22.43 points. For 5 points: m ≥ 2564.1 / (5/2.80158)² = 805.0 → 806 cases.
        double variance = 10000.0 * 10 / 39;
        Assert.Equal(2.801585 * Math.Sqrt(variance / 40), es.Minimum, 1e-4);
        Assert.Equal(1, es.Organisms);
        Assert.Equal(40, es.CasesPerOrganism);
        Assert.False(es.BetweenKnown);
        Assert.Equal((int)Math.Ceiling(variance / Math.Pow(5 / 2.801585, 2)), es.CasesForTarget);
        // NS differences are 0 or −50: a quarter of the variance, half the detectable difference.
        Assert.Equal(es.Minimum / 2, rows.Single(r => r.Metric == "NS").Minimum, 1e-9);
    }
}
