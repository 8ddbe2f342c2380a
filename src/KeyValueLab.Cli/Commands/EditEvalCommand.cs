using System.CommandLine;
using System.Diagnostics;
using System.Text.Json.Nodes;
using KeyValueLab.Editing;
using KeyValueLab.Evaluation;
using KeyValueLab.Models;
using Spectre.Console;

namespace KeyValueLab.Cli.Commands;

/// <summary>
/// <c>kvlab edit-eval</c>: a dataset slice × editor × side × layers. One JSON file per case as it finishes
/// (a restarted run skips them), params.json, and a summary table (mean ± 95% bootstrap interval) printed
/// to stdout and saved; progress with ETA on stderr.
/// </summary>
internal static class EditEvalCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var model = ModelOptions.Model();
        var dtype = ModelOptions.DType();
        var device = ModelOptions.Device();
        var tokenizer = ModelOptions.Tokenizer();
        var dataset = new Option<string>("--dataset", "-d") { Description = "CounterFact (ROME or EasyEdit format) or zsRE (MEND format) JSON file.", Required = true };
        var start = new Option<int>("--start") { Description = "First record of the slice (0-based).", DefaultValueFactory = _ => 0 };
        var count = new Option<int>("--count", "-n") { Description = "Records in the slice; 0 = to the end.", DefaultValueFactory = _ => 0 };
        var mode = new Option<string>("--mode") { Description = "single (restore after each case), batch (one edit with every request) or sequential.", DefaultValueFactory = _ => "single" };
        var output = new Option<string>("--out", "-o") { Description = "Output folder (cases/, params.json, summary.json, summary.txt); rerun to resume.", Required = true };
        var gePrompts = new Option<int>("--ge-prompts") { Description = "Generation prompts per case for GE (0 = skip GE).", DefaultValueFactory = _ => 10 };
        var geTokens = new Option<int>("--ge-tokens") { Description = "Tokens per generation, prompt included.", DefaultValueFactory = _ => 100 };
        var seed = new Option<ulong>("--seed") { Description = "Seed of the GE sampling.", DefaultValueFactory = _ => 1UL };
        var zsreTarget = new Option<string>("--zsre-target") { Description = "zsRE object inserted: answer (answers[0], ROME/MEMIT) or alt (EasyEdit).", DefaultValueFactory = _ => "answer" };
        var editor = new EditorOptions();
        var command = new Command("edit-eval", "Evaluate an editor on a dataset slice (ROME/MEMIT metrics, per case, resumable).")
        {
            model, dtype, device, tokenizer, dataset, start, count, mode, output, gePrompts, geTokens, seed, zsreTarget,
        };
        editor.AddTo(command);
        command.SetAction(parse => CommandRunner.Run(stderr, () =>
        {
            var editMode = parse.GetValue(mode)!.ToLowerInvariant() switch
            {
                "single" => EditMode.Single,
                "batch" => EditMode.Batch,
                "sequential" => EditMode.Sequential,
                var m => throw new UsageException($"--mode must be single, batch or sequential, not \"{m}\""),
            };
            var target = parse.GetValue(zsreTarget)!.ToLowerInvariant() switch
            {
                "answer" => ZsreTarget.Answer,
                "alt" => ZsreTarget.Alt,
                var t => throw new UsageException($"--zsre-target must be answer or alt, not \"{t}\""),
            };
            int first = parse.GetValue(start), n = parse.GetValue(count);
            if (first < 0 || n < 0) throw new UsageException("--start and --count must be >= 0");
            string datasetPath = parse.GetValue(dataset)!;
            var all = EditDatasets.Load(datasetPath, target);
            if (first >= all.Count) throw new UsageException($"--start {first} is past the dataset's {all.Count} records");
            var cases = all.Skip(first).Take(n == 0 ? int.MaxValue : n).ToList();

            string modelPath = parse.GetValue(model)!;
            using var loaded = ModelLoader.Load(modelPath, ModelOptions.Loading(parse, dtype, device));
            var tok = ModelOptions.LoadTokenizer(modelPath, parse.GetValue(tokenizer));
            var edit = editor.Create(parse, loaded.Model);
            var evaluation = new EvaluationOptions { GenerationPrompts = parse.GetValue(gePrompts), GenerationTokens = parse.GetValue(geTokens), Seed = parse.GetValue(seed) };
            var run = new EditRun(parse.GetValue(output)!, editMode, evaluation);
            var runParams = new JsonObject
            {
                ["model"] = Path.GetFullPath(modelPath),
                ["dataset"] = Path.GetFullPath(datasetPath),
                ["dataset_format"] = cases[0].Format.ToString(),
                ["zsre_target"] = cases[0].Format == EditDatasetFormat.Zsre ? target.ToString().ToLowerInvariant() : null,
                ["start"] = first,
                ["count"] = cases.Count,
                ["scope"] = edit.Scope.Label(new Memory.FfnMemory(loaded.Model)),
            };
            stderr.WriteLine($"{edit.Method} {runParams["scope"]} on {cases.Count} cases of {Path.GetFileName(datasetPath)} ({cases[0].Format}), mode {editMode.ToString().ToLowerInvariant()} → {run.OutputDir}");
            var summary = WithProgress(stderr, cases.Count, progress => run.Run(loaded.Model, tok, edit, cases, runParams, progress, line => stderr.WriteLine(line)));
            (edit as IDisposable)?.Dispose();
            stdout.Write(summary.ToTable());
            return ExitCodes.Ok;
        }));
        return command;
    }

    /// <summary>A Spectre.Console progress bar with ETA on an interactive stderr; else one line per case with the ETA.</summary>
    private static EditSummary WithProgress(TextWriter stderr, int total, Func<IProgress<EditProgress>, EditSummary> body)
    {
        bool interactive = ReferenceEquals(stderr, Console.Error) && !Console.IsErrorRedirected;
        if (!interactive)
        {
            var watch = Stopwatch.StartNew();
            int firstDone = -1;
            return body(new SynchronousProgress<EditProgress>(p =>
            {
                if (firstDone < 0) firstDone = p.Done;
                int newly = p.Done - firstDone;
                string eta = newly > 0 ? TimeSpan.FromSeconds(watch.Elapsed.TotalSeconds / newly * (p.Total - p.Done)).ToString(@"hh\:mm\:ss") : "--:--:--";
                stderr.WriteLine($"[{p.Done}/{p.Total}] {p.Stage}  ETA {eta}");
            }));
        }
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(stderr) });
        EditSummary? result = null;
        console.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn(), new SpinnerColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask("editing", maxValue: total);
                result = body(new SynchronousProgress<EditProgress>(p =>
                {
                    task.Value = p.Done;
                    task.Description = $"{p.Done}/{p.Total} {Markup.Escape(p.Stage)}";
                }));
                task.Value = total;
            });
        return result!;
    }
}
