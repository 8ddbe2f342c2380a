using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using KeyValueLab.Organism;
using KeyValueLab.Study;

namespace KeyValueLab.Cli.Commands;

/// <summary>
/// <c>kvlab study</c>: the whole key-versus-value study. With no arguments it builds (or reuses) the default organism
/// and runs the built-in grid; <c>--study FILE</c> (JSON or YAML) names another grid; <c>--model</c>, <c>--edit-data</c>
/// and <c>--task</c> point it at other models and data. Units are stored in <c>OUT/results.db</c> as they finish (a
/// re-run resumes), the report goes to <c>OUT/report/</c>; progress and log lines on stderr, the report's summary on stdout.
/// </summary>
internal static class StudyCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var studyFile = new Option<string?>("--study", "-s") { Description = "Study file (JSON or YAML) naming the grid; default: the built-in key-vs-value study." };
        var model = new Option<string?>("--model", "-m") { Description = "Model: an HF folder or llama2.c .bin, or organism / organism:gpt2 (overrides the study file)." };
        var tokenizer = ModelOptions.Tokenizer();
        var editData = new Option<string?>("--edit-data") { Description = "CounterFact or zsRE file for the editing half (overrides the study file)." };
        var tasks = new Option<string[]>("--task", "-t") { Description = "Tuning task NAME=PATH (repeat; replaces the study file's tasks).", AllowMultipleArgumentsPerToken = true };
        var seeds = new Option<string?>("--seeds") { Description = "Comma-separated seeds (overrides the study file), e.g. 1,2,3." };
        var output = new Option<string>("--out", "-o") { Description = "Run folder (results.db, report/, adapters/); re-running the same command resumes.", DefaultValueFactory = _ => "kvlab-study" };
        var shard = new Option<string>("--shard") { Description = "Run only shard k of n of the grid (k/n), or auto (a SLURM job array) / auto/N (a Kubernetes Indexed Job of N completions); merge shards with kvlab report.", DefaultValueFactory = _ => "1/1" };
        var threads = new Option<int>("--threads") { Description = "Torch CPU threads; 0 = libtorch's default.", DefaultValueFactory = _ => 0 };
        var organismThreads = new Option<int>("--organism-threads")
        {
            Description = "Torch threads for training each organism (part of its cache key). 1 (default): the organisms train side by side, " +
                "one per core; 2 or more: one after another on that many threads. Either way their units run side by side, one torch thread each.",
            DefaultValueFactory = _ => 1,
        };
        organismThreads.Validators.Add(r => { if (r.GetValueOrDefault<int>() < 1) r.AddError("--organism-threads must be at least 1"); });
        var noReport = new Option<bool>("--no-report") { Description = "Only run units; build the report later with kvlab report." };
        var plan = new Option<bool>("--plan") { Description = "Check the study and print its units without running anything." };
        var fresh = new Option<bool>("--fresh") { Description = "Start the run folder over: its earlier results move to a new sibling OUT.old-<time> (nothing is deleted)." };
        var command = new Command("study", "Run the key-versus-value study (editing: FT keys vs values, ROME vs Key-ROME, MEMIT; LoRA: q,v vs +keys vs +values) and write a report.")
        {
            studyFile, model, tokenizer, editData, tasks, seeds, output, shard, threads, organismThreads, noReport, plan, fresh,
        };
        command.SetAction(parse => CommandRunner.Run(stderr, () =>
        {
            var clock = Stopwatch.StartNew();
            Shard part;
            string? shardOrigin;
            try { part = Shard.Parse(parse.GetValue(shard)!, Environment.GetEnvironmentVariable, out shardOrigin); }
            catch (ArgumentException e) { throw new UsageException(e.Message); }
            if (shardOrigin is not null) stderr.WriteLine($"--shard auto: {shardOrigin} → shard {part}");
            if (parse.GetValue(threads) is > 0 and int n) TorchSharp.torch.set_num_threads(n);
            string file = parse.GetValue(studyFile) ?? "(built-in study)";
            var spec = Overridden(parse.GetValue(studyFile) is string path ? StudySpec.Load(path) : null, parse.GetValue(model), parse.GetValue(tokenizer),
                parse.GetValue(editData), parse.GetValue(tasks), parse.GetValue(seeds));
            foreach (string warning in spec.Warnings) stderr.WriteLine($"kvlab: warning: {warning}");
            var inputs = StudyPlan.Resolve(spec, organisms => OrganismCommand.BuildManyWithProgress(organisms, null, stderr),
                new OrganismOptions { Threads = parse.GetValue(organismThreads) });
            var studyPlan = StudyPlan.Build(spec, inputs, file);
            if (parse.GetValue(plan))
            {
                stdout.WriteLine($"study {spec.Name} ({spec.Hash()}) on {inputs.ModelLabel}: {studyPlan.Groups.Count} groups, {studyPlan.UnitCount} units");
                for (int i = 0; i < studyPlan.Groups.Count; i++)
                    if (part.Takes(i)) stdout.WriteLine($"  {studyPlan.Groups[i].GroupId}  ({studyPlan.Groups[i].UnitIds.Count} units)");
                return ExitCodes.Ok;
            }
            string outDir = parse.GetValue(output)!;
            using var folderLock = RunFolderLock.Acquire(outDir);  // one writer per run folder, until the report is written
            if (parse.GetValue(fresh) && ResultsStore.SetAside(outDir) is string aside)
                stderr.WriteLine($"--fresh: the earlier results of {outDir} are now in {aside}");
            using var cancel = new CancellationTokenSource();
            using var interrupt = Interrupts.CancelOnSignal(cancel);
            // Organisms run their units side by side, one torch thread each, however they were trained: every edit is timed
            // by its worker thread's CPU clock, so claim (e) measures the same thing in every run.
            bool sideBySide = inputs.HasOrganisms;
            int ran = ProgressRenderer.Run(stderr, (progress, log) =>
                new StudyRunner(studyPlan, outDir, part, log, progress) { SideBySide = sideBySide }.Run(cancel.Token));
            stderr.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{ran} units run now; study command took {clock.Elapsed.TotalSeconds:F0} s"));
            if (!parse.GetValue(noReport))
            {
                string reportDir = ReportCommand.Write(outDir, [], null, stdout);
                stderr.WriteLine($"report: {Path.Combine(reportDir, "report.md")} and report.html");
            }
            return ExitCodes.Ok;
        }));
        return command;
    }

    /// <summary>The command line's values on top of the study file, or of the built-in study.</summary>
    private static StudySpec Overridden(StudySpec? spec, string? model, string? tokenizer, string? editData, string[]? tasks, string? seeds)
    {
        List<int>? seedList = null;
        if (seeds is not null)
        {
            seedList = [];
            foreach (string s in seeds.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
                seedList.Add(int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v) ? v : throw new UsageException($"--seeds: \"{s}\" is not a whole number"));
        }
        var overrides = new StudyOverrides
        {
            Model = model, Tokenizer = tokenizer, EditData = editData, Seeds = seedList,
            Tasks = tasks is { Length: > 0 } ? TuningOptions.ParseTasks(tasks).GroupBy(t => t.Name).ToDictionary(g => g.Key, g => g.Last().Path, StringComparer.Ordinal) : null,
        };
        try { return (spec ?? StudySpec.Default()).With(overrides, builtIn: spec is null); }
        catch (ArgumentException e) { throw new UsageException(e.Message); }
    }
}
