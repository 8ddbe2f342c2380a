using System.Diagnostics;
using KeyValueLab.Cli;
using KeyValueLab.Study;
using KeyValueLab.Tests.Cli;
using KeyValueLab.Tests.Study;

namespace KeyValueLab.Tests.Reliability;

/// <summary>A run folder under stress: two writers, a full disk, a read-only file system, a fresh start.</summary>
public class RunFolderTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private static readonly string KvlabDll = Path.Combine(AppContext.BaseDirectory, "kvlab.dll");

    /// <summary>The stories260K study cut down: FT on the values of 3 cases, and (with <paramref name="tuning"/>) one LoRA run.</summary>
    private static string SmallStudy(TempDir dir, bool tuning)
    {
        var study = Studies.StoriesStudy();
        study["editing"]!["cases"] = 3;
        study["editing"]!["generation_prompts"] = 0;
        study["editing"]!["runs"] = new System.Text.Json.Nodes.JsonArray(
            new System.Text.Json.Nodes.JsonObject { ["method"] = "ft", ["sides"] = new System.Text.Json.Nodes.JsonArray("values"), ["layers"] = "2", ["set"] = new System.Text.Json.Nodes.JsonArray("steps=3") });
        if (tuning) study["tuning"]!["targets"] = new System.Text.Json.Nodes.JsonArray("q,v,values");
        else
        {
            study.Remove("tuning");
            study.Remove("tasks");
        }
        return Studies.Write(dir, study);
    }

    private static HashSet<string> PlanIds(string studyFile) => [.. Studies.Plan(studyFile).Groups.SelectMany(g => g.UnitIds)];

    [Fact]
    public void TwoStudiesOnOneFolderOneRunsTheOtherRefuses()
    {
        using var dir = new TempDir();
        string file = SmallStudy(dir, tuning: true), run = dir.File("run");
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in new[] { KvlabDll, "study", "--study", file, "--out", run, "--no-report" }) psi.ArgumentList.Add(a);
        var firstErr = new System.Text.StringBuilder();
        using var first = new Process { StartInfo = psi };
        first.ErrorDataReceived += (_, e) => { lock (firstErr) firstErr.AppendLine(e.Data); };
        first.OutputDataReceived += (_, _) => { };
        first.Start();
        first.BeginErrorReadLine();
        first.BeginOutputReadLine();
        try
        {
            // The second study starts once the first holds the folder and has stored a unit (it has tuning still to do).
            var deadline = DateTime.UtcNow.AddMinutes(3);
            while (!first.HasExited && DateTime.UtcNow < deadline && StoredUnits(run) < 1) Thread.Sleep(50);
            Assert.False(first.HasExited, "the first study ended before the second could start: " + firstErr);
            var (code, stdout, stderr) = Kvlab.Run("study", "--study", file, "--out", run);
            Assert.Equal(ExitCodes.BadInput, code);
            Assert.Equal("", stdout);
            Assert.Equal($"kvlab: {run} is in use by kvlab (pid {first.Id})", stderr.TrimEnd('\n'));
            Assert.True(first.WaitForExit(TimeSpan.FromMinutes(5)), "the first study did not finish");
            Assert.True(first.ExitCode == 0, firstErr.ToString());
        }
        finally
        {
            if (!first.HasExited) first.Kill(entireProcessTree: true);
        }
        using var store = ResultsStore.Open(run, create: false);
        var ids = store.Units().Select(u => u.UnitId).ToList();
        Assert.Equal(PlanIds(file).Order(StringComparer.Ordinal), ids);  // every unit, each once
    }

    private static int StoredUnits(string run)
    {
        if (!File.Exists(Path.Combine(run, ResultsStore.FileName))) return 0;
        try
        {
            using var store = ResultsStore.Open(run, create: false);
            return store.UnitIds().Count;
        }
        catch (InputException) { return 0; }  // being created
    }

    [Fact]
    public void FreshSetsTheEarlierResultsAsideAndStartsOver()
    {
        using var dir = new TempDir();
        string file = SmallStudy(dir, tuning: false), run = dir.File("run");
        Directory.CreateDirectory(Path.Combine(run, "report"));
        File.WriteAllText(Path.Combine(run, "report", "report.md"), "# earlier\n");
        var refused = Kvlab.Run("study", "--study", file, "--out", run, "--no-report");
        Assert.Equal(ExitCodes.BadInput, refused.Code);
        Assert.Contains("results.db: is missing but", refused.Stderr);

        var (code, _, stderr) = Kvlab.Run("study", "--study", file, "--out", run, "--no-report", "--fresh");
        Assert.True(code == 0, stderr);
        string aside = Assert.Single(Directory.GetDirectories(dir.Path, "run.old-*"));
        Assert.Contains($"--fresh: the earlier results of {run} are now in {aside}", stderr);
        Assert.Equal("# earlier\n", File.ReadAllText(Path.Combine(aside, "report", "report.md")));
        Assert.False(Directory.Exists(Path.Combine(run, "report")));
        using var store = ResultsStore.Open(run, create: false);
        Assert.Equal(PlanIds(file).Count, store.Units().Count);
    }

    /// <summary>
    /// A real full disk and a real read-only file system: a 32 MiB tmpfs in a private mount namespace (unshare), filled
    /// with a file once the study has stored its first unit, and before the report. Every failure must be exit 4 with one line, leave no partial
    /// report and no staging folder, and the resume after space is freed must store every unit once.
    /// </summary>
    [LinuxFact]
    public void FullDiskAndReadOnlyFolderGiveExitFourAndTheResumeCompletes()
    {
        using var dir = new TempDir();
        string file = SmallStudy(dir, tuning: false), mount = dir.File("tmpfs"), results = dir.File("results");
        Directory.CreateDirectory(mount);
        Directory.CreateDirectory(results);
        string script = dir.File("disk.sh");
        File.WriteAllText(script, """
            set -u
            T="$1"; OUT="$2"; STUDY="$3"; KV="$4"
            mount -t tmpfs -o size=32m tmpfs "$T" || { echo "mount failed" >&2; exit 90; }
            kv() { name=$1; shift; dotnet "$KV" "$@" >"$OUT/$name.out" 2>"$OUT/$name.err"; echo $? >"$OUT/$name.code"; }
            fill() { dd if=/dev/zero of="$T/fill" bs=64k >/dev/null 2>&1; truncate -s "-$1" "$T/fill"; }
            # The disk fills once the first unit is stored (its progress line is on stderr), while the study goes on.
            dotnet "$KV" study --study "$STUDY" --out "$T/run" --no-report >"$OUT/study-full.out" 2>"$OUT/study-full.err" &
            pid=$!
            while kill -0 $pid 2>/dev/null && ! grep -q "study \[1/" "$OUT/study-full.err"; do sleep 0.05; done
            dd if=/dev/zero of="$T/fill" bs=64k >/dev/null 2>&1
            wait $pid; echo $? >"$OUT/study-full.code"
            cp "$T/run/results.db" "$OUT/partial.db"
            rm -f "$T/fill"
            kv study-resume study --study "$STUDY" --out "$T/run" --no-report
            fill 8K
            kv report-full report "$T/run"
            ls -A "$T" "$T/run" >"$OUT/after-report-full.ls"
            rm -f "$T/fill"
            kv report-ok report "$T/run"
            ls -A "$T/run/report" >"$OUT/report.ls"
            cp "$T/run/results.db" "$OUT/results.db"
            mount -o remount,ro "$T"
            kv study-ro study --study "$STUDY" --out "$T/run"
            kv report-ro report "$T/run" --out "$T/elsewhere"
            kv study-ro-new study --study "$STUDY" --out "$T/new"
            """);
        var psi = new ProcessStartInfo("unshare", ["-r", "-m", "bash", script, mount, results, file, KvlabDll]) { RedirectStandardError = true, RedirectStandardOutput = true };
        using var p = Process.Start(psi)!;
        string scriptErr = p.StandardError.ReadToEnd();
        Assert.True(p.WaitForExit(TimeSpan.FromMinutes(5)), "the disk script did not finish");
        Assert.True(p.ExitCode == 0, $"unshare/mount failed (exit {p.ExitCode}): {scriptErr}");

        string Read(string name, string ext) => File.ReadAllText(Path.Combine(results, $"{name}.{ext}"));
        void Clean(string step, int code, string names)
        {
            string err = Read(step, "err");
            output.WriteLine($"{step}: exit {Read(step, "code").Trim()}: {err.Trim()}");
            Assert.True(int.Parse(Read(step, "code")) == code, $"{step}: exit {Read(step, "code").Trim()}, expected {code}: {err}");
            if (code == 0) return;
            Assert.Equal("", Read(step, "out"));
            // kvlab study logs its progress on stderr: the failure is the one line that starts with "kvlab:", and the last.
            var lines = err.TrimEnd('\n').Split('\n');
            Assert.True(lines.Count(l => l.StartsWith("kvlab:", StringComparison.Ordinal)) == 1 && lines[^1].StartsWith("kvlab:", StringComparison.Ordinal), $"{step}: {err}");
            Assert.Contains(names, lines[^1]);
        }

        Clean("study-full", ExitCodes.Environment, mount);
        {
            Directory.CreateDirectory(dir.File("partial"));
            File.Copy(Path.Combine(results, "partial.db"), Path.Combine(dir.File("partial"), ResultsStore.FileName));
            using var partial = ResultsStore.Open(dir.File("partial"), create: false);
            int stored = partial.Units().Count;
            output.WriteLine($"units stored when the disk filled: {stored} of {PlanIds(file).Count}");
            Assert.InRange(stored, 1, PlanIds(file).Count - 1);  // the disk filled mid-study
        }
        Clean("study-resume", 0, "");
        Clean("report-full", ExitCodes.Environment, "No space left on device");
        string listing = Read("after-report-full", "ls");
        Assert.DoesNotContain("report", listing.Replace("report-", ""));  // neither report/ nor a staging folder
        Assert.DoesNotContain("staging", listing);
        Clean("report-ok", 0, "");
        Assert.Equal(["figures", "report.html", "report.md", "tables"], Read("report", "ls").Split('\n', StringSplitOptions.RemoveEmptyEntries).Order(StringComparer.Ordinal));
        Clean("study-ro", ExitCodes.Environment, "Read-only file system");
        Clean("report-ro", ExitCodes.Environment, "Read-only file system");
        Clean("study-ro-new", ExitCodes.Environment, "Read-only file system");

        Directory.CreateDirectory(dir.File("final"));
        File.Copy(Path.Combine(results, "results.db"), Path.Combine(dir.File("final"), ResultsStore.FileName));
        using var store = ResultsStore.Open(dir.File("final"), create: false);
        Assert.Equal(PlanIds(file).Order(StringComparer.Ordinal), store.Units().Select(u => u.UnitId));  // every unit, each once
    }
}
