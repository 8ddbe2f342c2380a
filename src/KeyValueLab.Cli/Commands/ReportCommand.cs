using System.CommandLine;
using KeyValueLab.Study;

namespace KeyValueLab.Cli.Commands;

/// <summary>
/// <c>kvlab report RUN [SHARD_RUN...]</c>: rebuilds the report from the results store alone. Further run folders
/// (other shards of the same study) are merged into the first one's store first.
/// </summary>
internal static class ReportCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var runs = new Argument<string[]>("run") { Description = "Run folder(s) holding results.db; the first receives the others' units.", Arity = ArgumentArity.OneOrMore };
        var output = new Option<string?>("--out", "-o") { Description = "Report folder (default: RUN/report)." };
        var command = new Command("report", "Build the study report (Markdown, HTML, PNG figures, CSV/JSON tables) from a run's results store; merge shards.") { runs, output };
        command.SetAction(parse => CommandRunner.Run(stderr, () =>
        {
            var folders = parse.GetValue(runs)!;
            if (!Directory.Exists(folders[0])) throw new InputException(folders[0], "no such run folder");
            using var folderLock = RunFolderLock.Acquire(folders[0]);  // the report and the merged units go into the first run folder
            string dir = Write(folders[0], folders[1..], parse.GetValue(output), stdout, stderr);
            stderr.WriteLine($"report: {Path.Combine(dir, "report.md")} and report.html");
            return ExitCodes.Ok;
        }));
        return command;
    }

    /// <summary>Merges <paramref name="others"/> into <paramref name="run"/>'s store, writes the report, prints its summary. Returns the report folder.</summary>
    internal static string Write(string run, IReadOnlyList<string> others, string? outDir, TextWriter stdout, TextWriter? stderr = null)
    {
        if (!Directory.Exists(run)) throw new InputException(run, "no such run folder");
        using var store = ResultsStore.Open(run, create: false);
        foreach (string other in others)
        {
            if (Path.GetFullPath(other) == Path.GetFullPath(run)) continue;
            using var shard = ResultsStore.Open(other, create: false);
            int added = store.MergeFrom(shard);
            stderr?.WriteLine($"merged {added} units from {other}");
        }
        var results = StudyRunner.Load(store, Path.GetFileName(Path.GetFullPath(run)));
        if (results.Edits.Count == 0 && results.Tunes.Count == 0 && results.Lifelong.Count == 0) throw new InputException(store.Path, "no finished units yet: nothing to report");
        string dir = outDir ?? Path.Combine(run, "report");
        var files = KeyValueLab.Study.Report.StudyReport.Write(results, dir);
        stdout.Write(Headline(File.ReadAllText(files.Markdown)));
        return dir;
    }

    /// <summary>The report's opening sections (title, summary, the paper's claims) up to the first detailed section.</summary>
    internal static string Headline(string markdown)
    {
        var lines = markdown.ReplaceLineEndings("\n").Split('\n');
        int seenSections = 0, end = lines.Length;
        for (int i = 0; i < lines.Length; i++)
            if (lines[i].StartsWith("## ", StringComparison.Ordinal) && ++seenSections == 2) { end = i; break; }
        return string.Join("\n", lines[..end]).TrimEnd() + "\n";
    }
}
