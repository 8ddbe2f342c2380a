using KeyValueLab.Editing;
using KeyValueLab.Evaluation;
using KeyValueLab.Study;
using KeyValueLab.Study.Report;

namespace KeyValueLab.Tests.Statistics;

/// <summary>edit-eval's summary and the study report compute their intervals with the one statistics module, so the
/// same cases give the same interval in both.</summary>
public class SameIntervalTests
{
    [Fact]
    public void EditEvalSummaryAndStudyReportGiveTheSameIntervals()
    {
        var metrics = Enumerable.Range(0, 37).Select(i => new CaseMetrics
        {
            ES = i % 3 == 0 ? 0 : 100,
            PS = (i * 7 % 5) * 25,
            NS = i % 4 == 0 ? 50 : 100,
        }).ToList();
        var empty = new CaseScores([], [], [], [], []);
        var caseResults = metrics.Select((m, i) => new CaseResult($"case{i:D2}", new EditRequest($"case{i:D2}", "{} is in", "X", "Y", "Z"),
            empty, empty, new CaseMetrics(), m, new EasyEditView(100, null, null), new EditCost(1, 1, 1, 0, 1))).ToList();
        var summary = EditSummary.From(caseResults, EditDatasetFormat.CounterFact);

        var units = metrics.Select((m, i) => new EditUnitResult
        {
            Method = "FT", Side = "values", Layers = "1", Seed = 1, Mode = "single", CaseId = $"case{i:D2}",
            Pre = new CaseMetrics(), Post = m, Seconds = 1,
        }).ToList();
        var row = EditingAnalysis.Analyze(units, new ReportOptions()).Summary.Single();

        foreach (var (name, key) in new[] { ("ES", "es"), ("PS", "ps"), ("NS", "ns"), ("Score", "score") })
        {
            var a = summary.Post.Single(s => s.Name == name);
            var b = row.Post[key];
            Assert.Equal((b.Value, b.Low, b.High), (a.Mean, a.Low, a.High));
            Assert.True(a.Low < a.High, $"{name}: a real interval, not a degenerate one");
        }
    }
}
