namespace KeyValueLab.Study.Report;

// Temporary until the report branch lands.
public sealed record ReportFiles(string Summary);

public static class StudyReport
{
    public static ReportFiles Write(StudyResults results, string outDir)
    {
        Directory.CreateDirectory(outDir);
        var text = new System.Text.StringBuilder();
        foreach (var g in results.Edits.GroupBy(e => (e.Method, e.Side, e.Layers)))
            text.AppendLine(System.FormattableString.Invariant($"{g.Key.Method} {g.Key.Side} L{g.Key.Layers}: n={g.Count()} ES {g.Average(e => e.Post.ES ?? 0):F1} PS {g.Average(e => e.Post.PS ?? 0):F1} NS {g.Average(e => e.Post.NS ?? 0):F1} s/edit {g.Average(e => e.Seconds):F2}"));
        foreach (var t in results.Tunes.OrderBy(t => t.Label).ThenBy(t => t.Seed))
            text.AppendLine(System.FormattableString.Invariant($"{t.Label} seed {t.Seed}: params {t.TrainableParameters} {string.Join(" ", t.Tasks.Select(x => $"{x.Task} {x.Accuracy:F3}"))} train {t.TrainSeconds:F0}s"));
        File.WriteAllText(Path.Combine(outDir, "report.md"), text.ToString());
        return new ReportFiles(text.ToString());
    }
}
