using System.Globalization;
using System.Text.Json;
using KeyValueLab.Statistics;
using static KeyValueLab.Study.Report.ReportFormat;

namespace KeyValueLab.Study.Report;

/// <summary>Paths of what <see cref="StudyReport.Write(StudyResults, string)"/> wrote, and the notes it made
/// (skipped sections and figures).</summary>
public sealed record ReportFiles(string Markdown, string Html, IReadOnlyList<string> Figures, IReadOnlyList<string> Tables, IReadOnlyList<string> Notes);

/// <summary>
/// The study report: report.md and report.html (the same text; the page is self-contained, with figures inlined as
/// PNG), figures/*.png and tables/*.csv + *.json. The paper's five claims come first in plain words, then editing,
/// tuning and the run's details. The same results give the same files.
/// </summary>
public static partial class StudyReport
{
    public static ReportFiles Write(StudyResults results, string outDir) => Write(results, outDir, new ReportOptions());

    /// <summary>
    /// Writes the report into <paramref name="outDir"/> atomically: everything goes to a staging folder beside it, which
    /// then replaces the folder by rename, so <paramref name="outDir"/> holds either the previous complete report or the new
    /// one, never a part (a full disk leaves the old report and no staging folder). A folder holding anything but a
    /// report's files is refused rather than replaced.
    /// </summary>
    public static ReportFiles Write(StudyResults results, string outDir, ReportOptions options)
    {
        var editing = results.Edits.Count > 0 ? EditingAnalysis.Analyze(results.Edits, options) : null;
        var tuning = results.Tunes.Count > 0 ? TuningAnalysis.Analyze(results.Tunes, options) : null;
        var claims = PaperClaims.Judge(editing, tuning, options);
        var lifelong = results.Lifelong.Count > 0 ? LifelongAnalysis.Analyze(results.Lifelong, options) : null;
        var builder = new Builder(results, editing, tuning, claims, options) { LifelongResults = lifelong };
        var document = builder.Build();

        CheckReplaceable(outDir);
        string target = Path.GetFullPath(outDir).TrimEnd(Path.DirectorySeparatorChar, Path.AltDirectorySeparatorChar);
        string staging = $"{target}.staging-{Environment.ProcessId}", replaced = $"{target}.replaced-{Environment.ProcessId}";
        try
        {
            if (Directory.Exists(staging)) Directory.Delete(staging, recursive: true);
            WriteFiles(document, builder.Tables, staging);
            if (Directory.Exists(target))
            {
                Directory.Move(target, replaced);
                try { Directory.Move(staging, target); }
                catch
                {
                    Directory.Move(replaced, target);
                    throw;
                }
                Directory.Delete(replaced, recursive: true);
            }
            else Directory.Move(staging, target);
        }
        finally
        {
            if (Directory.Exists(staging)) Directory.Delete(staging, recursive: true);
        }
        return new ReportFiles(Path.Combine(outDir, "report.md"), Path.Combine(outDir, "report.html"),
            [.. document.Blocks.OfType<FigureBlock>().Select(f => Path.Combine(outDir, f.RelativePath))],
            [.. builder.Tables.SelectMany(t => new[] { Path.Combine(outDir, "tables", t.Name + ".csv"), Path.Combine(outDir, "tables", t.Name + ".json") })],
            builder.Notes);
    }

    private static void WriteFiles(ReportDocument document, IReadOnlyList<ReportTable> tables, string dir)
    {
        Directory.CreateDirectory(Path.Combine(dir, "figures"));
        Directory.CreateDirectory(Path.Combine(dir, "tables"));
        foreach (var figure in document.Blocks.OfType<FigureBlock>()) File.WriteAllBytes(Path.Combine(dir, figure.RelativePath), figure.Png);
        foreach (var table in tables)
        {
            File.WriteAllText(Path.Combine(dir, "tables", table.Name + ".csv"), table.ToCsv());
            File.WriteAllText(Path.Combine(dir, "tables", table.Name + ".json"), table.ToJson());
        }
        File.WriteAllText(Path.Combine(dir, "report.md"), document.ToMarkdown());
        File.WriteAllText(Path.Combine(dir, "report.html"), document.ToHtml());
    }

    /// <summary>The report replaces its folder whole: refuse a folder that holds anything a report does not write.</summary>
    private static void CheckReplaceable(string outDir)
    {
        if (File.Exists(outDir)) throw new InputException(outDir, "is a file, not a report folder");
        if (!Directory.Exists(outDir)) return;
        foreach (string entry in Directory.EnumerateFileSystemEntries(outDir))
        {
            string name = Path.GetFileName(entry);
            bool ours = name switch
            {
                "report.md" or "report.html" => File.Exists(entry),
                "figures" => Directory.Exists(entry) && Directory.EnumerateFileSystemEntries(entry).All(f => f.EndsWith(".png", StringComparison.Ordinal) && File.Exists(f)),
                "tables" => Directory.Exists(entry) && Directory.EnumerateFileSystemEntries(entry).All(f => (f.EndsWith(".csv", StringComparison.Ordinal) || f.EndsWith(".json", StringComparison.Ordinal)) && File.Exists(f)),
                _ => false,
            };
            if (!ours) throw new InputException(outDir, $"holds {name}, which is not part of a kvlab report: the report replaces its folder whole, so give a new or empty --out folder");
        }
    }

    /// <summary>Builds the document section by section and collects the tables and notes on the way.</summary>
    private sealed partial class Builder(StudyResults results, EditingResults? editing, TuningResults? tuning, IReadOnlyList<ClaimResult> claims, ReportOptions options)
    {
        private readonly ReportDocument _doc = new($"Keys or values: study report for {results.Info.Name}");
        private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

        public List<ReportTable> Tables { get; } = [];
        public List<string> Notes { get; } = [];
        public LifelongResults? LifelongResults { get; init; }

        public ReportDocument Build()
        {
            Summary();
            Editing();
            Lifelong(LifelongResults, results, options);
            Tuning();
            if ((editing?.SecondsDifferences.Count ?? 0) + (tuning?.SecondsDifferences.Count ?? 0) > 0)
                Tables.Add(ReportTables.CostDifferences(editing, tuning));
            RunDetails();
            return _doc;
        }

        private void Summary()
        {
            var info = results.Info;
            int held = claims.Count(c => c.Verdict == Verdict.Held), opposite = claims.Count(c => c.Verdict == Verdict.Opposite);
            int inconclusive = claims.Count(c => c.Verdict == Verdict.Inconclusive), notTestable = claims.Count(c => c.Verdict == Verdict.NotTestable);
            int untested = claims.Count(c => c.Verdict == Verdict.NoData);
            var parts = new List<string>();
            if (editing is not null)
            {
                var seeds = results.Edits.Select(e => e.Seed).Distinct().Count();
                var cases = results.Edits.Select(e => e.CaseId).Distinct().Count();
                parts.Add($"{Count(cases)} edit case{S(cases)} × {editing.Summary.Count} editing condition{S(editing.Summary.Count)} "
                    + $"({string.Join(", ", editing.Summary.Select(r => r.Condition.Method).Distinct())}) with {seeds} seed{S(seeds)}");
            }
            if (tuning is not null)
            {
                int seeds = results.Tunes.Select(t => t.Seed).Distinct().Count();
                parts.Add($"{results.Tunes.Count} LoRA run{S(results.Tunes.Count)} ({string.Join(", ", tuning.Labels)}) on "
                    + $"{tuning.Tasks.Count} task{S(tuning.Tasks.Count)} with {seeds} seed{S(seeds)}");
            }
            if (results.Lifelong.Count > 0)
                parts.Add($"{results.Lifelong.Count} lifelong sequence{S(results.Lifelong.Count)} of edits ({string.Join(", ", results.Lifelong.Select(u => u.Method).Distinct())})");
            string scope = parts.Count == 0 ? "no finished units yet" : string.Join(", and ", parts);
            int organisms = results.Edits.Select(e => e.Organism).Concat(results.Tunes.Select(t => t.Organism)).Distinct().Count();
            string models = organisms > 1 ? $"**{Count(organisms)} organisms** of `{info.Model}` (replicates: every interval resamples organisms, then cases within each)"
                : $"**one model**, `{info.Model}`, so it cannot speak for other models";
            var tally = new List<string> { $"{held} held", $"{opposite} did not hold", $"{inconclusive} {(inconclusive == 1 ? "was" : "were")} inconclusive" };
            if (notTestable > 0) tally.Add($"{notTestable} {(notTestable == 1 ? "was" : "were")} not testable");
            if (untested > 0) tally.Add($"{untested} could not be tested with this study's data");
            _doc.Heading(2, "Summary");
            _doc.Paragraph(
                "This study asks whether a transformer's feed-forward layers are better changed through their **keys** (the first FFN "
                + "matrix, which decides when a memory fires) or their **values** (the second matrix, which decides what it writes), "
                + "as Qiu et al. (ICLR 2024 Tiny Papers, arXiv 2402.12233) claim in favour of keys. "
                + $"It covers {models}: {scope}. "
                + $"Of the paper's five claims, {JoinAnd(tally)}. Each claim is judged on one **primary endpoint**, named below; its p-value is "
                + "**Holm-corrected** across the five claims (the secondary comparisons among themselves). A comparison counts as held when the "
                + $"95% interval of keys − values excludes 0 in the claimed direction, its corrected p < {options.Alpha.ToString(Inv)} and, with several "
                + "organisms, every organism points the same way; the opposite when all of that points the other way; **not testable** when no pair "
                + "differs at all (both sides at the same floor or ceiling). For the timing claim (e) the interval of ln(keys/values CPU seconds) "
                + "also carries the spread measured between machines and runs, and an organism points one way only beyond that spread "
                + "(docs/report.md, \"The timing claim on any machine\").");
            var items = new List<ListItem>();
            foreach (var c in claims)
            {
                string head = $"**({c.Id}) {c.Claim}: {c.VerdictText}.**";
                if (c.Evidence.Count == 0)
                    items.Add(new ListItem($"{head} The study has no {(c.Id == "d" ? "paired LoRA runs of a keys target set and +values" : c.Id == "e" ? "paired timings of keys and values" : "paired keys and values edits")}."));
                else
                    items.Add(new ListItem(head, [.. c.Evidence.OrderByDescending(e => e.Primary).Select(e =>
                        $"{(e.Primary ? "Primary endpoint" : "Secondary")}: {e.Comparison}: {Word(e, c)}; {PaperClaims.Numbers(e)}.")]));
            }
            _doc.Add(new ListBlock(items));
        }

        private static string Word(ClaimEvidence e, ClaimResult c) => e.Verdict switch
        {
            Verdict.Held => "held",
            Verdict.Opposite => $"did not hold ({c.OppositeText})",
            Verdict.NotTestable => $"not testable ({e.Reason})",
            _ => $"inconclusive ({e.Reason})",
        };

        private void Editing()
        {
            _doc.Heading(2, "Knowledge editing");
            if (editing is null)
            {
                Note("The study has no editing units, so the editing section, its tables and its figures are skipped.");
                return;
            }
            var h = editing.Headline;
            string data = results.Info.EditData.Length > 0 ? $" on `{results.Info.EditData}`" : "";
            bool batch = results.Edits.Any(e => e.Mode == "batch");
            _doc.Paragraph($"{Count(results.Edits.Count)} edits{data}. "
                + (batch ? "Single-mode conditions edit each case on the original model; batch-mode conditions edit all their cases in one call. "
                    : "Each case is edited on the original model. ")
                + "Cases are scored before and after the edit "
                + (h.HasScore
                    ? "as in ROME (SPEC §3): **ES** efficacy (the new object beats the true one on the rewrite prompt), **PS** the same on "
                      + "paraphrases, **NS** neighbourhood prompts keep the true object, **Score** their harmonic mean; EM, PM, NM are the "
                      + "probability margins and GE the fluency of sampled text. "
                    : "as MEMIT scores zsRE: teacher-forced top-1 token accuracy of the new object on the question (efficacy), on its "
                      + "rephrasing (paraphrase), and of the unrelated answer on an unrelated question (specificity). ")
                + $"All scores are ×100 means over cases, pooled over seeds, with 95% percentile-bootstrap intervals ({Count(options.Resamples)} resamples, fixed seed). "
                + (OrganismCount > 1
                    ? $"The study has {OrganismCount} organisms: every mean is the mean of the organisms' means, and its interval a **hierarchical bootstrap** "
                      + "(organisms drawn with replacement, then cases within each drawn organism); the per-organism values and their spread stand beside it."
                    : "With one model the resampled units are its cases, so the intervals say nothing about how a differently trained model would score."));

            _doc.Heading(3, "Scores after the edit");
            var summary = ReportTables.EditingSummary(editing);
            Tables.Add(summary);
            var keys = ReportTables.MetricKeys(editing);
            var headlineKeys = keys.Where(k => k == "score" || h.Three.Any(m => m.Key == k)).ToList();
            var names = KeyNames();
            var rows = editing.Summary.Select(r => (IReadOnlyList<string>)[.. ConditionCells(r.Condition), Count(r.Cases), r.Seeds.ToString(Inv),
                .. headlineKeys.Select(k => r.Post.TryGetValue(k, out var e) ? WithInterval(e) : Missing)]).ToList();
            _doc.Add(Table("Post-edit means [95% CI] per condition. Source: tables/editing_summary.csv.",
                [.. ConditionHeaders(), "Cases", "Seeds", .. headlineKeys.Select(k => names[k])], rows, ConditionHeaders().Count));
            if (OrganismCount > 1)
                _doc.Add(Table("Per organism: each organism's post-edit mean, and the between-organism standard deviation (SD) beside the pooled interval above.",
                    [.. ConditionHeaders(), "Metric", "Per organism", "Between-organism SD"],
                    [.. editing.Summary.SelectMany(r => headlineKeys.Where(r.ByOrganism.ContainsKey).Select(k => (IReadOnlyList<string>)[.. ConditionCells(r.Condition), names[k],
                        string.Join(", ", r.ByOrganism[k].PerCluster.Select(Score)), Score(r.ByOrganism[k].BetweenClusterSd)]))],
                    ConditionHeaders().Count + 1, [ConditionHeaders().Count + 1]));
            var other = keys.Skip(headlineKeys.Count).ToList();
            if (other.Count > 0)
                _doc.Add(Table("Further post-edit metrics, mean [95% CI]" + Glossary(other) + ".",
                    [.. ConditionHeaders(), .. other.Select(k => names[k])],
                    [.. editing.Summary.Select(r => (IReadOnlyList<string>)[.. ConditionCells(r.Condition), .. other.Select(k => r.Post.TryGetValue(k, out var e) ? WithInterval(e) : Missing)])],
                    ConditionHeaders().Count));
            _doc.Add(Table("The unedited model on the same cases (mean before each edit).",
                [.. ConditionHeaders(), .. headlineKeys.Select(k => names[k])],
                [.. editing.Summary.Select(r => (IReadOnlyList<string>)[.. ConditionCells(r.Condition), .. headlineKeys.Select(k => r.Pre.TryGetValue(k, out double v) ? Score(v) : Missing)])],
                ConditionHeaders().Count));
            var families = editing.Summary.Select(r => Family(r.Condition)).Distinct().ToList();
            string xLabel = families.Count > 1 ? "metric and method, layers" : $"metric ({families[0]})";
            Figure("editing_scores", editing.Summary.Count > 0, () =>
            {
                var cells = headlineKeys.SelectMany(k => families.Select(f => (Key: k, Family: f))).ToList();
                var groups = cells.Select(c => families.Count > 1 ? $"{names[c.Key]}\n{c.Family}" : names[c.Key]).ToList();
                var sides = editing.Summary.Select(r => r.Condition.Side).Distinct().ToList();
                var series = sides.Select(side => new BarSeries(side, [.. cells.Select(c =>
                    editing.Summary.FirstOrDefault(r => r.Condition.Side == side && Family(r.Condition) == c.Family) is { } r
                        && r.Post.TryGetValue(c.Key, out var e) ? e : (Estimate?)null)], Role: side)).ToList();
                return ReportFigures.GroupedBars("Scores after the edit", xLabel, "score (×100)", groups, series,
                    options.FigureWidth, options.FigureHeight, yFromZero: true, yMax: 100);
            }, $"Post-edit {string.Join(", ", headlineKeys.Select(k => names[k]))} per side (bars: means over cases; whiskers: 95% bootstrap intervals)",
            $"Post-edit {JoinAnd([.. headlineKeys.Select(k => names[k])])} for each side (colour) of each method and layers, as bars with 95% bootstrap intervals. Higher is better for every metric.");

            _doc.Heading(3, "Keys against values, case by case");
            if (editing.Differences.Count == 0)
            {
                Note("No condition has both a keys side and a values side with the same method, layers and cases, so there are no paired differences.");
            }
            else
            {
                Tables.Add(ReportTables.EditingDifferences(editing));
                _doc.Paragraph("Each keys side is paired with the values side of the same method (Key-ROME with ROME), layers, seed and case. Differences are keys − values "
                    + "in points (positive favours keys), with 95% bootstrap intervals over pairs (organisms, then pairs, when there are several). "
                    + "Per-case metrics use the two-sided **Wilcoxon signed-rank test** (zero differences dropped, average ranks for ties): exact "
                    + $"when at most {PairedTests.ExactWilcoxonLimit} pairs differ, otherwise the normal approximation with tie-corrected variance and "
                    + "continuity correction. Score is not a per-case number: its interval resamples pairs and recomputes both harmonic means, and its "
                    + $"p-value comes from a **paired permutation test** (all 2ⁿ swaps up to {PairedTests.ExactPermutationLimit} pairs, else "
                    + $"{Count(options.Permutations)} random swaps of keys and values within pairs, fixed seed). The p-values in this table are not "
                    + "corrected; the claims above are judged on Holm-corrected ones.");
                _doc.Add(Table("keys − values per comparison and metric. Source: tables/editing_differences.csv.",
                    ["Comparison", "Metric", "Pairs", "Keys", "Values", "Keys − values [95% CI]", "Test", "p"],
                    [.. editing.Differences.Select(d => (IReadOnlyList<string>)[Comparison(d), d.Metric, Count(d.Pairs), Score(d.KeysMean), Score(d.ValuesMean),
                        SignedWithInterval(d.Difference), d.Test.Test, P(d.Test.P)])], 2, [6]));
                if (OrganismCount > 1)
                    _doc.Add(Table("keys − values per organism, and the between-organism standard deviation (SD).",
                        ["Comparison", "Metric", "Per organism", "Between-organism SD"],
                        [.. editing.Differences.Select(d => (IReadOnlyList<string>)[Comparison(d), d.Metric,
                            string.Join(", ", d.PerOrganism.Select(Signed)), Score(d.BetweenOrganismSd)])], 2, [2]));
                var metricsShown = headlineKeys.Select(k => names[k] == "Score" ? EditingResults.Score : names[k]).ToList();
                var pairFamilies = editing.Differences.Select(d => Family(d.Keys)).Distinct().ToList();
                Figure("editing_differences", true, () =>
                {
                    var cells = metricsShown.SelectMany(m => pairFamilies.Select(f => (Metric: m, Family: f))).ToList();
                    var groups = cells.Select(c => pairFamilies.Count > 1 ? $"{c.Metric}\n{c.Family}" : c.Metric).ToList();
                    var keysSides = editing.Differences.Select(d => d.Keys.Side).Distinct().ToList();
                    var series = keysSides.Select(side => new BarSeries($"{side} − {editing.Differences.First(d => d.Keys.Side == side).Values.Side}",
                        [.. cells.Select(c => editing.Differences.FirstOrDefault(d => d.Keys.Side == side && Family(d.Keys) == c.Family && d.Metric == c.Metric)?.Difference)],
                        Role: side)).ToList();
                    return ReportFigures.GroupedBars("Keys − values, paired by case", pairFamilies.Count > 1 ? "metric and method, layers" : $"metric ({pairFamilies[0]})",
                        "keys − values (points)", groups, series, options.FigureWidth, options.FigureHeight, zeroLine: true, minHalfRange: 5);
                }, "Paired differences keys − values per metric with 95% bootstrap intervals; bars above the dashed zero line favour keys",
                "Paired differences keys − values for each metric (same method, layers, seed and case), with 95% bootstrap intervals. "
                + "Above the dashed line keys did better; an interval that crosses it means the study cannot tell the two apart.");
            }

            var power = PowerAnalysis.Editing(editing);
            if (power.Count > 0)
            {
                _doc.Heading(3, "What this study can detect");
                int k = power[0].Organisms;
                _doc.Paragraph("The smallest keys − values difference each comparison detects with **80% power at α = 0.05** (two-sided, normal "
                    + "approximation), from this study's own variance of the paired differences"
                    + (k > 1 ? " within and between organisms" : " (one model: the between-model variance is unknown and counted as 0, so these are lower bounds)")
                    + $", at this study's size, and the cases per organism that would bring it down to {TargetText} points with the same "
                    + "organisms (— where the between-organism variance alone is too large and more organisms are needed).");
                _doc.Add(Table("Minimum detectable difference (points) at 80% power, α = 0.05.",
                    ["Comparison", "Metric", "Organisms", "Cases per organism", "Detectable", $"Cases for {TargetText}"],
                    [.. power.Select(p => (IReadOnlyList<string>)[p.Comparison, p.Metric, Count(p.Organisms), Count(p.CasesPerOrganism), Score(p.Minimum),
                        p.CasesForTarget is int n ? Count(n) : "—"])], 2));
            }

            _doc.Heading(3, "Cost of an edit");
            Tables.Add(ReportTables.EditingCosts(editing));
            _doc.Add(Table("Wall seconds per edit, mean [95% bootstrap interval], and weights changed. Timings depend on the machine; they are kept out of the metric tables. Source: tables/costs_editing.csv.",
                [.. ConditionHeaders(), "Edits", "Seconds per edit [95% CI]", "Weights changed"],
                [.. editing.Costs.Select(c => (IReadOnlyList<string>)[.. ConditionCells(c.Condition), Count(c.Edits), SecondsWithInterval(c.SecondsPerEdit), Count((long)Math.Round(c.ParametersChanged))])],
                ConditionHeaders().Count));
            if (editing.SecondsDifferences.Count > 0)
                _doc.Add(Table("Seconds per edit, keys − values, paired by seed and case (negative: values took longer). Source: tables/cost_differences.csv.",
                    ["Comparison", "Pairs", "Keys (s)", "Values (s)", "Keys − values (s) [95% CI]", "Test", "p"],
                    [.. editing.SecondsDifferences.Select(d => (IReadOnlyList<string>)[Comparison(d), Count(d.Pairs), Seconds(d.KeysMean), Seconds(d.ValuesMean),
                        SecondsWithInterval(d.Difference, signed: true), d.Test.Test, P(d.Test.P)])], 1, [5]));
            Figure("cost_edit_seconds", editing.Costs.Count > 0, () =>
            {
                var families = editing.Costs.Select(c => Family(c.Condition)).Distinct().ToList();
                var sides = editing.Costs.Select(c => c.Condition.Side).Distinct().OrderBy(EditingAnalysis.SideOrder).ThenBy(s => s, StringComparer.Ordinal).ToList();
                var series = sides.Select(side => new BarSeries(side, [.. families.Select(f =>
                    editing.Costs.FirstOrDefault(c => c.Condition.Side == side && Family(c.Condition) == f)?.SecondsPerEdit)], Role: side)).ToList();
                return ReportFigures.GroupedBars("Seconds per edit", "method and layers", "seconds per edit", families, series,
                    options.FigureWidth, options.FigureHeight, yFromZero: true);
            }, "Mean wall seconds per edit for each side, grouped by method and layers, with 95% bootstrap intervals",
            "Mean wall seconds per edit for each side (bars) with 95% bootstrap intervals, grouped by method and layers. Timings are from this machine and this run.");
        }

        private void Tuning()
        {
            _doc.Heading(2, "LoRA tuning");
            if (tuning is null)
            {
                Note("The study has no tuning units, so the tuning section, its tables and its figures are skipped.");
                return;
            }
            bool fourBit = results.Tunes.Any(t => t.FourBit);
            _doc.Paragraph($"{results.Tunes.Count} LoRA run{S(results.Tunes.Count)}{(fourBit ? " on a 4-bit (NF4) base" : "")}: the baseline targets "
                + "`q,v` (attention query and value projections) and variants that add one FFN matrix (`+keys…` the first FFN matrix, "
                + "`+values` the second). Accuracy is the paper's exact match of the greedy generation with the gold label, ×100. Every "
                + "evaluation example counts once: with several seeds (paired: they score the same examples) an example's outcome is its "
                + "mean over the seeds, and the 95% interval resamples examples (organisms first, when there are several; one run: "
                + "**Wilson**'s score interval); the mean over tasks is unweighted. Each accuracy stands beside its task's "
                + "**majority-class** rate (always answering the evaluation set's most common label) and **chance** rate (1 / labels); "
                + $"a target set whose runs all give one answer on ≥ {TuningAnalysis.ConstantShare * 100:F0}% of the examples, or whose "
                + "interval does not rise above the majority class, is marked as sitting at its baseline.");
            Tables.Add(ReportTables.TuningTasks(tuning));
            var taskGroups = tuning.Tasks.Concat(tuning.Tasks.Count > 1 ? [TuningResults.MeanOverTasks] : []).ToList();
            TuneTaskRow? Find(string label, string task) => tuning.PerTask.FirstOrDefault(r => r.Label == label && r.Task == task);
            string Cell(TuneTaskRow r) => WithInterval(r.Accuracy) + (r.AtBaseline.Length > 0 ? " (baseline)" : "")
                + (r.Runs > 0 && r.ConstantRuns > 0 ? $" {r.ConstantRuns}/{r.Runs} constant" : "");
            TuneTaskRow? AnyRow(string task) => tuning.PerTask.FirstOrDefault(r => r.Task == task);
            _doc.Add(Table("Accuracy per task and target set, mean [95% CI], beside the task's majority-class and chance rates; \"(baseline)\" marks a "
                + "target set that did not learn the task beyond them, \"k/n constant\" the runs that gave one answer throughout. Source: tables/tuning_tasks.csv.",
                ["Task", "Majority", "Chance", .. tuning.Labels],
                [.. taskGroups.Select(t => (IReadOnlyList<string>)[t, Score(AnyRow(t)?.Majority ?? double.NaN), Score(AnyRow(t)?.Chance ?? double.NaN),
                    .. tuning.Labels.Select(l => Find(l, t) is { } r ? Cell(r) : Missing)])], 1));
            bool likelihood = tuning.PerTask.Any(r => r.LabelLikelihoodAccuracy is not null);
            _doc.Add(Table(likelihood ? "Macro-F1 / label-likelihood accuracy (the label with the highest likelihood after the prompt) per task and target set."
                    : "Macro-F1 per task and target set.",
                ["Task", .. tuning.Labels],
                [.. taskGroups.Select(t => (IReadOnlyList<string>)[t, .. tuning.Labels.Select(l => Find(l, t) is { } r
                    ? Score(r.MacroF1 ?? double.NaN) + (likelihood ? " / " + Score(r.LabelLikelihoodAccuracy ?? double.NaN) : "") : Missing)])], 1));
            Figure("tuning_accuracy", tuning.PerTask.Count > 0, () =>
            {
                var series = tuning.Labels.Select(l => new BarSeries(l, [.. taskGroups.Select(t => Find(l, t)?.Accuracy)], Role: l)).ToList();
                List<GroupReference> references =
                [
                    new("majority class", [.. taskGroups.Select(t => AnyRow(t)?.Majority)], Dashed: true),
                    new("chance", [.. taskGroups.Select(t => AnyRow(t)?.Chance)], Dashed: false),
                ];
                return ReportFigures.GroupedBars("Accuracy after LoRA tuning", "task", "accuracy (%)", taskGroups, series,
                    options.FigureWidth, options.FigureHeight, yFromZero: true, yMax: 100, references: references);
            }, "Accuracy per task for each LoRA target set, with 95% intervals and the majority-class and chance rates",
            "Exact-match accuracy per task for each LoRA target set (95% intervals over examples, organisms first when there are several), "
            + "with each task's majority-class rate (dashed line) and chance rate (dotted line) across its bars.");

            _doc.Heading(3, "Target sets compared example by example");
            if (tuning.Pairs.Count == 0)
                Note("No two target sets share seeds and per-example outcomes, so there are no paired tuning comparisons.");
            else
            {
                Tables.Add(ReportTables.TuningPairs(tuning));
                _doc.Paragraph("Each pair of target sets is compared on the same examples, paired by seed: an example's A − B is its mean over "
                    + "the seeds, so it counts once; the 95% bootstrap interval resamples examples (organisms first). With one seed the test is "
                    + "the **exact McNemar test** on the examples exactly one of them got right; with several, and for the mean over tasks, a "
                    + $"**paired permutation test** ({Count(options.Permutations)} random sign flips of the examples' differences, fixed seed; exact when few differ). "
                    + "A comparison whose two sides both sit at their baselines is not testable, whatever its p-value.");
                _doc.Add(Table("A − B per task; Pairs counts distinct examples, \"A only\" the seed × example pairs only A got right. Source: tables/tuning_pairs.csv.",
                    ["A vs B", "Task", "Pairs", "A", "B", "A − B [95% CI]", "A only", "B only", "Test", "p", "Testable"],
                    [.. tuning.Pairs.Select(p => (IReadOnlyList<string>)[$"{p.A} vs {p.B}", p.Task, Count(p.Pairs), Score(p.AccuracyA), Score(p.AccuracyB),
                        SignedWithInterval(p.Difference), Count(p.AOnly), Count(p.BOnly), p.Test.Test, P(p.Test.P), p.NotTestable.Length > 0 ? "no: " + p.NotTestable : "yes"])], 2, [8, 10]));
            }
            foreach (string note in tuning.Notes) Note(note);
            var tuningPower = PowerAnalysis.Tuning(tuning);
            if (tuningPower.Count > 0)
                _doc.Add(Table("Smallest A − B difference in mean accuracy over tasks (points) detectable with 80% power at α = 0.05, from each task's "
                    + "variance of the per-example differences at this study's size"
                    + (tuningPower[0].BetweenKnown ? "." : " (one model: a lower bound)."),
                    ["A vs B", "Organisms", "Examples per task and organism", "Detectable"],
                    [.. tuningPower.Select(p => (IReadOnlyList<string>)[p.Comparison, Count(p.Organisms), Count(p.CasesPerOrganism), Score(p.Minimum)])], 1));

            _doc.Heading(3, "Cost of a training run");
            Tables.Add(ReportTables.TuningCosts(tuning));
            _doc.Add(Table("Trainable parameters, training time (mean over seeds), throughput and memory per target set. Source: tables/costs_tuning.csv.",
                ["Target set", "Seeds", "Trainable params", "Train seconds", "Tokens/s", "Peak RSS", "Base weights (fp32 / stored)"],
                [.. tuning.Costs.Select(c => (IReadOnlyList<string>)[c.Label, c.Seeds.ToString(Inv), Count(c.TrainableParameters), Seconds(c.TrainSeconds),
                    c.TokensPerSecond.ToString("F0", Inv), Bytes(c.PeakResidentBytes), $"{Bytes(c.BaseBytesFp32)} / {Bytes(c.BaseBytesStored)}"])], 1));
            if (tuning.SecondsDifferences.Count > 0)
                _doc.Add(Table("Training seconds, A − B, paired by seed. Source: tables/cost_differences.csv.",
                    ["A vs B", "Seeds", "A (s)", "B (s)", "A − B (s) [95% CI]", "Test", "p"],
                    [.. tuning.SecondsDifferences.Select(d => (IReadOnlyList<string>)[$"{d.A} vs {d.B}", d.Seeds.ToString(Inv), Seconds(d.MeanA), Seconds(d.MeanB),
                        SecondsWithInterval(d.Difference, signed: true), d.Test.Test, P(d.Test.P)])], 1, [5]));
            Figure("cost_train_seconds", tuning.Costs.Count > 0, () =>
            {
                var series = new List<BarSeries>
                {
                    new("mean over seeds", [.. tuning.Costs.Select(c => (Estimate?)new Estimate(c.TrainSeconds, double.NaN, double.NaN))],
                        [.. tuning.Costs.Select(c => c.TrainSecondsBySeed)]),
                };
                return ReportFigures.GroupedBars("Training seconds per target set", "target set", "training seconds", [.. tuning.Labels], series,
                    options.FigureWidth, options.FigureHeight, yFromZero: true);
            }, "Training seconds per LoRA target set: bars are means over seeds, circles single seeds",
            "Wall seconds of each LoRA training run per target set: bars are means over seeds, circles the single seeds. Timings are from this machine and this run.");
        }

        private void RunDetails()
        {
            var info = results.Info;
            _doc.Heading(2, "Run details");
            var items = new List<ListItem>
            {
                new($"Study: `{info.Name}`"),
                new($"Model: `{info.Model}`" + (info.ModelType.Length > 0 ? $" ({info.ModelType})" : "") + (info.ModelFingerprint.Length > 0 ? $", fingerprint `{info.ModelFingerprint}`" : "")),
            };
            if (info.EditData.Length > 0) items.Add(new($"Edit data: `{info.EditData}`"));
            if (editing is not null)
                items.Add(new($"Editing grid: methods {List(results.Edits.Select(e => e.Method))}; sides {List(results.Edits.Select(e => e.Side))}; "
                    + $"layers {List(results.Edits.Select(e => e.Layers))}; modes {List(results.Edits.Select(e => e.Mode))}; "
                    + $"seeds {List(results.Edits.Select(e => e.Seed.ToString(Inv)))}; {Count(results.Edits.Select(e => e.CaseId).Distinct().Count())} distinct cases"));
            if (tuning is not null)
                items.Add(new($"Tuning grid: target sets {string.Join(", ", tuning.Labels)}; tasks {string.Join(", ", tuning.Tasks)}; "
                    + $"seeds {List(results.Tunes.Select(t => t.Seed.ToString(Inv)))}; {(results.Tunes.Any(t => t.FourBit) ? "4-bit NF4 base" : "full-precision base")}"));
            items.Add(new($"Units done: {Count(info.UnitsDone)} of {Count(info.UnitsTotal)}; unit wall time {Seconds(info.UnitSeconds)} s"));
            if (info.CreatedUtc.Length > 0) items.Add(new($"Created (UTC): {info.CreatedUtc}"));
            if (info.Host.Length > 0) items.Add(new($"Host: {info.Host}"));
            if (info.Versions.Length > 0) items.Add(new($"Versions: {info.Versions}"));
            items.Add(new($"Statistics: {Count(options.Resamples)} bootstrap resamples, {Count(options.Permutations)} permutations, seed {options.Seed.ToString(Inv)}, alpha {options.Alpha.ToString(Inv)}"));
            _doc.Add(new ListBlock(items));
            string files = string.Join(", ", Tables.Select(t => $"`tables/{t.Name}.csv`"));
            _doc.Paragraph($"Every table is also written as CSV and JSON: {(files.Length > 0 ? files : "none")} (JSON beside each). Metric tables hold no timings, "
                + "so reruns with the same seeds reproduce them exactly; timings and memory are in the cost tables.");
            if (Notes.Count > 0)
                _doc.Add(new ListBlock([.. Notes.Select(n => new ListItem(n))]));
            if (info.Config.Count > 0)
                _doc.Add(new CodeBlock(info.Config.ToJsonString(new JsonSerializerOptions { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }).Replace("\r\n", "\n"),
                    "Study configuration (grid and hyperparameters)"));
        }

        private void Figure(string name, bool hasData, Func<byte[]> draw, string alt, string caption)
        {
            if (!hasData)
            {
                Note($"Figure `{name}` is skipped: the study has no data for it.");
                return;
            }
            byte[] png;
            try
            {
                png = draw();
            }
            catch (Exception e) when (e is DllNotFoundException or TypeInitializationException or InvalidOperationException)
            {
                Note($"Figure `{name}` could not be drawn ({e.GetType().Name}: {e.Message}); its numbers are in the tables.");
                return;
            }
            int number = _doc.Blocks.OfType<FigureBlock>().Count() + 1;
            _doc.Add(new FigureBlock($"figures/{name}.png", png, alt, $"Figure {number}. {caption}"));
        }

        private void Note(string text)
        {
            Notes.Add(text);
            _doc.Paragraph("**Note:** " + text);
        }

        private static readonly string TargetText = PowerAnalysis.TargetPoints.ToString(Inv);

        private int OrganismCount => results.Edits.Select(e => e.Organism).Concat(results.Tunes.Select(t => t.Organism)).Distinct().Count();

        private bool ShowMode => editing is not null && editing.Summary.Any(r => r.Condition.Mode != "single");
        private IReadOnlyList<string> ConditionHeaders() => ShowMode ? ["Method", "Side", "Layers", "Mode"] : ["Method", "Side", "Layers"];
        private IReadOnlyList<string> ConditionCells(EditCondition c) => ShowMode ? [c.Method, c.Side, c.Layers, c.Mode] : [c.Method, c.Side, c.Layers];
        private string Comparison(PairedDifference d) => (d.Keys.Method == d.Values.Method ? $"{d.Keys.Method} {d.Keys.Side} vs {d.Values.Side}" : $"{d.Keys.Method} {d.Keys.Side} vs {d.Values.Method} {d.Values.Side}") + $", L{d.Keys.Layers}" + (ShowMode ? $" ({d.Keys.Mode})" : "");
        private static string Family(EditCondition c) => $"{c.Method} L{c.Layers}" + (c.Mode == "single" ? "" : $" {c.Mode}");

        /// <summary>A people's table; columns from <paramref name="firstNumeric"/> on are right-aligned except those in <paramref name="textColumns"/>.</summary>
        private static TextTableBlock Table(string caption, IReadOnlyList<string> headers, IReadOnlyList<IReadOnlyList<string>> rows, int firstNumeric, int[]? textColumns = null)
        {
            var numeric = Enumerable.Range(firstNumeric, Math.Max(0, headers.Count - firstNumeric))
                .Where(i => textColumns is null || !textColumns.Contains(i)).ToHashSet();
            return new TextTableBlock(caption, headers, rows, numeric);
        }

        /// <summary>": EM, PM, NM are …" for the further metrics present.</summary>
        private static string Glossary(IReadOnlyList<string> keys)
        {
            var parts = new List<string>();
            if (keys.Any(k => k is "em" or "pm" or "nm")) parts.Add("EM, PM, NM are probability margins (new minus true object, true minus new for NM)");
            if (keys.Any(k => k.StartsWith("exact_", StringComparison.Ordinal))) parts.Add("exact = every target token is the argmax (MEMIT)");
            if (keys.Contains("ge")) parts.Add("GE = generation entropy (fluency)");
            return parts.Count == 0 ? "" : ": " + string.Join("; ", parts);
        }

        private Dictionary<string, string> KeyNames()
        {
            var names = EditMetric.All.ToDictionary(m => m.Key, m => m.Name);
            names["score"] = "Score";
            return names;
        }

        private static string S(int n) => n == 1 ? "" : "s";
        private static string List(IEnumerable<string> xs) => string.Join(", ", xs.Distinct().OrderBy(x => x, StringComparer.Ordinal));
        private static string Capitalise(string s) => s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..];
        private static string JoinAnd(IReadOnlyList<string> xs) => xs.Count <= 1 ? string.Concat(xs) : string.Join(", ", xs.Take(xs.Count - 1)) + " and " + xs[^1];
    }
}
