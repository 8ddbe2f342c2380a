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
        var shard = new Option<string>("--shard") { Description = "Run only shard k of n of the grid (k/n); merge shards with kvlab report.", DefaultValueFactory = _ => "1/1" };
        var threads = new Option<int>("--threads") { Description = "Torch CPU threads; 0 = libtorch's default.", DefaultValueFactory = _ => 0 };
        var noReport = new Option<bool>("--no-report") { Description = "Only run units; build the report later with kvlab report." };
        var plan = new Option<bool>("--plan") { Description = "Check the study and print its units without running anything." };
        var command = new Command("study", "Run the key-versus-value study (editing: FT keys vs values, ROME vs Key-ROME, MEMIT; LoRA: q,v vs +keys vs +values) and write a report.")
        {
            studyFile, model, tokenizer, editData, tasks, seeds, output, shard, threads, noReport, plan,
        };
        command.SetAction(parse => CommandRunner.Run(stderr, () =>
        {
            var clock = Stopwatch.StartNew();
            Shard part;
            try { part = Shard.Parse(parse.GetValue(shard)!); }
            catch (ArgumentException e) { throw new UsageException(e.Message); }
            if (parse.GetValue(threads) is > 0 and int n) TorchSharp.torch.set_num_threads(n);
            string file = parse.GetValue(studyFile) ?? "(built-in study)";
            var spec = parse.GetValue(studyFile) is string path ? StudySpec.Load(path) : null;
            spec = Apply(spec, parse.GetValue(model), parse.GetValue(tokenizer), parse.GetValue(editData), parse.GetValue(tasks), parse.GetValue(seeds));

            var progress = new OrganismCommand.ProgressLine(stderr);
            var inputs = StudyPlan.Resolve(spec, organism =>
            {
                stderr.WriteLine($"organism {organism.Hash()}: building or reusing in {OrganismBuilder.FolderOf(organism)}");
                var build = OrganismBuilder.Build(organism, log: line => { progress.Finish(); stderr.WriteLine(line); }, onProgress: progress.Report);
                progress.Finish();
                stderr.WriteLine(build.Reused ? $"organism reused ({build.Folder})" : $"organism built in {build.BuildSeconds:F0} s ({build.Folder})");
                return build;
            });
            var studyPlan = StudyPlan.Build(spec, inputs, file);
            if (parse.GetValue(plan))
            {
                stdout.WriteLine($"study {spec.Name} ({spec.Hash()}) on {inputs.ModelLabel}: {studyPlan.Groups.Count} groups, {studyPlan.UnitCount} units");
                for (int i = 0; i < studyPlan.Groups.Count; i++)
                    if (part.Takes(i)) stdout.WriteLine($"  {studyPlan.Groups[i].GroupId}  ({studyPlan.Groups[i].UnitIds.Count} units)");
                return ExitCodes.Ok;
            }

            string outDir = parse.GetValue(output)!;
            using var cancel = new CancellationTokenSource();
            ConsoleCancelEventHandler onCancel = (_, e) => { e.Cancel = true; cancel.Cancel(); };
            Console.CancelKeyPress += onCancel;
            try
            {
                var eta = new EtaLine(stderr);
                var runner = new StudyRunner(studyPlan, outDir, part, log: line => { eta.Break(); stderr.WriteLine(line); }, progress: new SynchronousProgress<StudyProgress>(eta.Report));
                int ran = runner.Run(cancel.Token);
                eta.Break();
                stderr.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{ran} units run now; study command took {clock.Elapsed.TotalSeconds:F0} s"));
            }
            finally { Console.CancelKeyPress -= onCancel; }
            if (!parse.GetValue(noReport))
            {
                string reportDir = ReportCommand.Write(outDir, [], null, stdout);
                stderr.WriteLine($"report: {Path.Combine(reportDir, "report.md")} and report.html");
            }
            return ExitCodes.Ok;
        }));
        return command;
    }

    /// <summary>Command-line values on top of the study file (or of the built-in study, adapted to another model).</summary>
    internal static StudySpec Apply(StudySpec? spec, string? model, string? tokenizer, string? editData, string[]? tasks, string? seeds)
    {
        var result = spec ?? StudySpec.Default();
        bool builtIn = spec is null;
        if (model is not null)
        {
            result = result with { Model = model };
            if (builtIn && !model.StartsWith("organism", StringComparison.Ordinal))
            {
                // The built-in grid's layers and last-token keying are sized for the organism; on another model use the
                // published hyperparameters of its family, and the paper's tuning settings.
                result = result with
                {
                    EditData = editData,
                    Tasks = new Dictionary<string, string>(),
                    Editing = editData is null ? null : result.Editing! with
                    {
                        StatsCorpus = "generated",
                        StatsSamples = null,
                        Conditions = [.. result.Editing!.Conditions.Select(c => c with { Layers = null, Overrides = [] })],
                    },
                    Tuning = tasks is { Length: > 0 } ? new TuningSpec { Targets = result.Tuning!.Targets } : null,
                };
            }
        }
        if (tokenizer is not null) result = result with { Tokenizer = tokenizer };
        if (editData is not null) result = result with { EditData = editData };
        if (tasks is { Length: > 0 })
        {
            var map = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var (name, path) in TuningOptions.ParseTasks(tasks)) map[name] = path;
            result = result with { Tasks = map };
        }
        if (seeds is not null)
        {
            var list = new List<int>();
            foreach (string s in seeds.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
                list.Add(int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v) ? v : throw new UsageException($"--seeds: \"{s}\" is not a whole number"));
            if (list.Count == 0 || list.Distinct().Count() != list.Count) throw new UsageException("--seeds: give distinct whole numbers, e.g. 1,2,3");
            result = result with { Seeds = list };
        }
        if (result.Editing is null && result.Tuning is null)
            throw new UsageException("nothing to run: give --edit-data and/or --task for this model, or a --study file");
        return result;
    }

    /// <summary>One progress line with the units done and an ETA from this run's pace; redrawn in a terminal, every 5% otherwise.</summary>
    private sealed class EtaLine(TextWriter stderr)
    {
        private readonly bool _terminal = ReferenceEquals(stderr, Console.Error) && !Console.IsErrorRedirected;
        private readonly Stopwatch _clock = Stopwatch.StartNew();
        private int _first = -1, _lastTwentieth = -1;
        private bool _open;

        public void Report(StudyProgress p)
        {
            if (_first < 0) _first = p.Done;
            int newly = p.Done - _first;
            string eta = newly > 0 ? TimeSpan.FromSeconds(_clock.Elapsed.TotalSeconds / newly * (p.Total - p.Done)).ToString(@"hh\:mm\:ss", CultureInfo.InvariantCulture) : "--:--:--";
            string text = string.Create(CultureInfo.InvariantCulture, $"[{p.Done}/{p.Total} {(p.Total == 0 ? 100 : 100.0 * p.Done / p.Total):F0}%] ETA {eta}  {p.Stage}");
            if (_terminal) { stderr.Write("\r" + (text.Length > 118 ? text[..118] : text.PadRight(118))); _open = true; return; }
            int twentieth = p.Total == 0 ? 20 : p.Done * 20 / p.Total;
            if (twentieth != _lastTwentieth || p.Done == p.Total) { _lastTwentieth = twentieth; stderr.WriteLine(text); }
        }

        public void Break()
        {
            if (_open) { stderr.WriteLine(); _open = false; }
        }
    }
}
