using System.Text.Json;
using KeyValueLab.Study;
using KeyValueLab.Study.Report;

namespace KeyValueLab.Tests.Study.Report;

/// <summary>The report of the keys-better study, written once for the tests that only read it.</summary>
public sealed class KeysBetterReport : IDisposable
{
    private readonly TempDir _dir = new();

    public KeysBetterReport() => Files = StudyReport.Write(Results, _dir.Path, StudyReportTests.Fast);

    public StudyResults Results { get; } = SyntheticStudy.Both(keysBetter: true);
    public ReportFiles Files { get; }
    public string Dir => _dir.Path;
    public void Dispose() => _dir.Dispose();
}

/// <summary>The whole report on synthetic studies whose answer is known.</summary>
public class StudyReportTests(KeysBetterReport report) : IClassFixture<KeysBetterReport>
{
    internal static readonly ReportOptions Fast = new() { Resamples = 1000, Permutations = 1000, FigureWidth = 800, FigureHeight = 420 };

    [Fact]
    public void KeysClearlyBetterMakesEveryClaimHold()
    {
        string md = File.ReadAllText(report.Files.Markdown);

        Assert.Contains("**(a) Keys better than values on efficacy (ES): held.**", md);
        Assert.Contains("**(b) Keys better than values on generalisation (PS): held.**", md);
        Assert.Contains("**(c) Keys better than values on locality (NS): held.**", md);
        Assert.Contains("**(d) Keys better than values in LoRA tuning (mean accuracy over tasks): held.**", md);
        // Held on its primary endpoint, the 80 paired edits; two seeds of training time are too few for the rank test.
        Assert.Contains("**(e) Values cost more time to update than keys: held.**", md);
        Assert.Contains("  - Primary endpoint: seconds per edit, FT keys vs values, layers 1: held;", md);
        Assert.Contains("  - Secondary: training seconds, +keys:up vs +values: inconclusive (test not significant after Holm correction);", md);
        Assert.Contains("**one model**", md);
        Assert.Contains("40 edit cases", md);
        // Summary first, then editing, tuning and the run's details.
        int summary = md.IndexOf("## Summary"), editing = md.IndexOf("## Knowledge editing"), tuning = md.IndexOf("## LoRA tuning"), details = md.IndexOf("## Run details");
        Assert.True(0 < summary && summary < editing && editing < tuning && tuning < details, md[..Math.Min(md.Length, 400)]);
    }

    [Fact]
    public void ClaimsOnTheAnalysesHoldWhenKeysAreBetter()
    {
        var results = report.Results;
        var editing = EditingAnalysis.Analyze(results.Edits, Fast);
        var tuning = TuningAnalysis.Analyze(results.Tunes, Fast);
        var claims = PaperClaims.Judge(editing, tuning, Fast);
        Assert.Equal(["a", "b", "c", "d", "e"], claims.Select(c => c.Id));
        Assert.All(claims.Take(3), c => Assert.Equal(Verdict.Held, c.Verdict));
        // (d): +keys:up and +keys:gate each against +values on the mean over tasks.
        Assert.Equal(2, claims[3].Evidence.Count);
        Assert.All(claims[3].Evidence, e => Assert.Equal(Verdict.Held, e.Verdict));
        Assert.Equal(Verdict.Held, claims[3].Verdict);
        // (e): the edits (80 pairs) hold; two seeds of training time cannot reach p < 0.05 with a rank test.
        var edits = claims[4].Evidence.Single(e => e.Comparison.StartsWith("seconds per edit", StringComparison.Ordinal));
        Assert.Equal(Verdict.Held, edits.Verdict);
        Assert.True(edits.Difference.Value < 0);
        Assert.Equal(80, edits.Pairs);

        // Numbers a person can check: ES keys 100 vs values 50% of cases.
        var es = editing.Differences.Single(d => d.Metric == "ES");
        Assert.Equal(100, es.KeysMean, 9);
        Assert.Equal(50, es.ValuesMean, 9);
        Assert.Equal(50, es.Difference.Value, 9);
        Assert.Equal("exact Wilcoxon signed-rank", es.Test.Test);  // 40 of the 80 pairs differ: exact
        var score = editing.Differences.Single(d => d.Metric == EditingResults.Score);
        Assert.Equal("paired permutation", score.Test.Test);
        Assert.True(score.Difference.Low > 0);
        var copa = tuning.Pairs.Single(p => p.A == "+keys:up" && p.B == "+values" && p.Task == "copa");
        // Two seeds score the same 60 examples: each example counts once, its difference averaged over the seeds, and the
        // test flips the sign of whole examples (McNemar would count the 120 seed × example pairs as independent).
        Assert.Equal("paired permutation", copa.Test.Test);
        Assert.Equal(SyntheticStudy.Examples, copa.Pairs);
        Assert.Equal(2, copa.Seeds);
        Assert.True(copa.Test.P < 0.01, copa.Test.ToString());
    }

    [Fact]
    public void IdenticalSidesAreNotTestable()
    {
        using var dir = new TempDir();
        var results = SyntheticStudy.Both(keysBetter: false);
        var files = StudyReport.Write(results, dir.Path, Fast);
        string md = File.ReadAllText(files.Markdown);
        // No pair differs anywhere: nothing to test, which is not the same as a test that found nothing.
        foreach (string id in (string[])["a", "b", "c", "d", "e"])
            Assert.Matches($@"\*\*\({id}\) [^*]*: not testable \(no pair differs: both sides give the same result on all \d+ paired (cases|examples)\)\.\*\*", md);
        Assert.Contains("0 held, 0 did not hold, 0 were inconclusive and 5 were not testable", md);
    }

    [Fact]
    public void OnlyTuningUnitsSkipTheEditingSectionWithANote()
    {
        using var dir = new TempDir();
        var tunes = SyntheticStudy.Tunes(keysBetter: true);
        var files = StudyReport.Write(new StudyResults(SyntheticStudy.Info(tunes.Count), [], tunes), dir.Path, Fast);
        string md = File.ReadAllText(files.Markdown);
        Assert.Contains("The study has no editing units, so the editing section, its tables and its figures are skipped.", md);
        Assert.Contains(files.Notes, n => n.Contains("no editing units", StringComparison.Ordinal));
        Assert.Contains("(a) Keys better than values on efficacy: not tested (no data)", md);
        Assert.False(File.Exists(Path.Combine(dir.Path, "figures", "editing_scores.png")));
        Assert.False(File.Exists(Path.Combine(dir.Path, "tables", "editing_summary.csv")));
        Assert.True(File.Exists(Path.Combine(dir.Path, "figures", "tuning_accuracy.png")));
        Assert.True(File.Exists(Path.Combine(dir.Path, "tables", "tuning_pairs.json")));
        Assert.Equal(2, files.Figures.Count);  // tuning accuracy and training seconds
    }

    [Fact]
    public void WritesEveryFileWithDecodablePngsAndSelfContainedHtml()
    {
        var files = report.Files;
        string dir = report.Dir;

        Assert.True(File.Exists(files.Markdown));
        Assert.True(File.Exists(files.Html));
        string[] figures = ["editing_scores", "editing_differences", "tuning_accuracy", "cost_edit_seconds", "cost_train_seconds"];
        Assert.Equal(figures.Select(f => Path.Combine(dir, "figures", f + ".png")).Order(), files.Figures.Order());
        foreach (string png in files.Figures)
        {
            Assert.True(ReportFigures.LooksLikePng(File.ReadAllBytes(png), out int w, out int h), png);
            Assert.Equal((Fast.FigureWidth, Fast.FigureHeight), (w, h));
        }
        string[] tables = ["editing_summary", "editing_differences", "costs_editing", "tuning_tasks", "tuning_pairs", "costs_tuning", "cost_differences"];
        foreach (string t in tables)
        {
            Assert.Contains(Path.Combine(dir, "tables", t + ".csv"), files.Tables);
            using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "tables", t + ".json")));
            int rows = json.RootElement.GetProperty("rows").GetArrayLength();
            Assert.Equal(rows + 1, File.ReadAllLines(Path.Combine(dir, "tables", t + ".csv")).Length);
        }

        string html = File.ReadAllText(files.Html);
        Assert.Equal(figures.Length, CountOf(html, "<img src=\"data:image/png;base64,"));
        Assert.Equal(figures.Length, CountOf(html, "<figcaption>"));
        Assert.DoesNotContain("http://", html);
        Assert.DoesNotContain("https://", html);
        Assert.DoesNotContain("<link", html);
        Assert.DoesNotContain("<script", html);
        Assert.True(CountOf(html, "<table>") >= 8);
        string md = File.ReadAllText(files.Markdown);
        foreach (string f in figures) Assert.Contains($"](figures/{f}.png)", md);
    }

    [Fact]
    public void ZsreStudiesAreJudgedOnTokenAccuraciesWithoutScore()
    {
        var edits = SyntheticStudy.Edits(keysBetter: true).Select(e => e with
        {
            Pre = new KeyValueLab.Evaluation.CaseMetrics { ZsreEfficacy = e.Pre.ES, ZsreParaphrase = e.Pre.PS, ZsreSpecificity = e.Pre.NS },
            Post = new KeyValueLab.Evaluation.CaseMetrics { ZsreEfficacy = e.Post.ES, ZsreParaphrase = e.Post.PS, ZsreSpecificity = e.Post.NS },
        }).ToList();
        var editing = EditingAnalysis.Analyze(edits, Fast);
        Assert.False(editing.Headline.HasScore);
        Assert.Equal(["zsre_efficacy", "zsre_paraphrase", "zsre_specificity"], ReportTables.MetricKeys(editing));
        Assert.DoesNotContain(editing.Differences, d => d.Metric == EditingResults.Score);
        var claims = PaperClaims.Judge(editing, null, Fast);
        Assert.Equal("Keys better than values on efficacy (zsRE efficacy)", claims[0].Claim);
        Assert.All(claims.Take(3), c => Assert.Equal(Verdict.Held, c.Verdict));
        Assert.Equal(Verdict.NoData, claims[3].Verdict);
    }

    [Fact]
    public void MetricTablesHoldNoTimings()
    {
        foreach (string t in (string[])["editing_summary", "editing_differences", "tuning_tasks", "tuning_pairs"])
        {
            string header = File.ReadLines(Path.Combine(report.Dir, "tables", t + ".csv")).First();
            Assert.DoesNotContain("second", header);
            Assert.DoesNotContain("bytes", header);
        }
        Assert.Contains("seconds_per_edit", File.ReadLines(Path.Combine(report.Dir, "tables", "costs_editing.csv")).First());
    }

    [Fact]
    public void WritingTwiceGivesIdenticalFiles()
    {
        using var b = new TempDir();
        // Fresh results (equal, not the same objects), written twice into one folder: a rerun leaves nothing stale.
        StudyReport.Write(SyntheticStudy.Both(keysBetter: true), b.Path, Fast);
        StudyReport.Write(SyntheticStudy.Both(keysBetter: true), b.Path, Fast);
        string a = report.Dir;
        var names = Directory.GetFiles(a, "*", SearchOption.AllDirectories).Select(p => Path.GetRelativePath(a, p)).Order().ToList();
        Assert.Equal(names, Directory.GetFiles(b.Path, "*", SearchOption.AllDirectories).Select(p => Path.GetRelativePath(b.Path, p)).Order());
        Assert.Equal(2 + report.Files.Figures.Count + report.Files.Tables.Count, names.Count);
        foreach (string name in names)  // md, html, csv, json and the PNGs
            Assert.True(File.ReadAllBytes(Path.Combine(a, name)).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(b.Path, name))), name);
    }

    [Fact]
    public void NumbersAreWrittenWithSensibleRounding()
    {
        string csv = File.ReadAllText(Path.Combine(report.Dir, "tables", "editing_differences.csv"));
        Assert.Matches(@"FT,1,single,keys,FT,values,ES,80,100\.000,50\.000,50\.000,", csv);
        string md = File.ReadAllText(report.Files.Markdown);
        Assert.Contains("| FT keys vs values, L1 | ES | 80 | 100.0 | 50.0 | +50.0 [", md);
        Assert.Matches(@"Wilcoxon signed-rank p = \d\.\d\de-\d\d \(Holm-adjusted \d\.\d\de-\d\d\), 80 paired cases", md);
    }

    private static int CountOf(string text, string part)
    {
        int count = 0;
        for (int i = text.IndexOf(part, StringComparison.Ordinal); i >= 0; i = text.IndexOf(part, i + part.Length, StringComparison.Ordinal)) count++;
        return count;
    }
}
