using System.CommandLine;
using System.Text.Json.Nodes;
using KeyValueLab.Editing;
using KeyValueLab.Evaluation;
using KeyValueLab.Models;

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
        EvaluationOptions defaults = new();
        var mode = new Option<EditMode>("--mode") { Description = "Single (restore after each case), Batch (one edit with every request) or Sequential.", DefaultValueFactory = _ => EditMode.Single };
        var output = new Option<string>("--out", "-o") { Description = "Output folder (cases/, params.json, summary.json, summary.txt); rerun to resume.", Required = true };
        var gePrompts = new Option<int>("--ge-prompts") { Description = "Generation prompts per case for GE (0 = skip GE).", DefaultValueFactory = _ => defaults.GenerationPrompts };
        var geTokens = new Option<int>("--ge-tokens") { Description = "Tokens per generation, prompt included.", DefaultValueFactory = _ => defaults.GenerationTokens };
        var seed = new Option<ulong>("--seed") { Description = "Seed of the GE sampling.", DefaultValueFactory = _ => defaults.Seed };
        var zsreTarget = new Option<ZsreTarget>("--zsre-target") { Description = "zsRE object inserted: Answer (answers[0], ROME/MEMIT) or Alt (EasyEdit).", DefaultValueFactory = _ => ZsreTarget.Answer };
        var editor = new EditorOptions();
        var command = new Command("edit-eval", "Evaluate an editor on a dataset slice (ROME/MEMIT metrics, per case, resumable).")
        {
            model, dtype, device, tokenizer, dataset, start, count, mode, output, gePrompts, geTokens, seed, zsreTarget,
        };
        editor.AddTo(command);
        command.SetAction(parse => CommandRunner.Run(stderr, () =>
        {
            var (editMode, target) = (parse.GetValue(mode), parse.GetValue(zsreTarget));
            int first = parse.GetValue(start), n = parse.GetValue(count);
            if (first < 0 || n < 0) throw new UsageException("--start and --count must be >= 0");
            string datasetPath = parse.GetValue(dataset)!;
            var all = EditDatasets.Load(datasetPath, target);
            if (first >= all.Count) throw new UsageException($"--start {first} is past the dataset's {all.Count} records");
            var cases = all.Skip(first).Take(n == 0 ? int.MaxValue : n).ToList();

            string modelPath = parse.GetValue(model)!;
            using var loaded = ProgressRenderer.Run(stderr, (progress, _) => ModelLoader.Load(modelPath, ModelOptions.Loading(parse, dtype, device) with { Progress = progress }));
            var tok = ModelOptions.LoadTokenizer(modelPath, parse.GetValue(tokenizer), loaded.Config);
            var evaluation = new EvaluationOptions { GenerationPrompts = parse.GetValue(gePrompts), GenerationTokens = parse.GetValue(geTokens), Seed = parse.GetValue(seed) };
            var run = new EditRun(parse.GetValue(output)!, editMode, evaluation);
            var summary = ProgressRenderer.Run(stderr, (progress, log) =>
            {
                // Created here so that computing its statistics reports through the same progress and log.
                var edit = editor.Create(parse, loaded.Model, progress, log);
                try
                {
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
                    log($"{edit.Method} {runParams["scope"]} on {cases.Count} cases of {Path.GetFileName(datasetPath)} ({cases[0].Format}), mode {editMode.ToString().ToLowerInvariant()} → {run.OutputDir}");
                    return run.Run(loaded.Model, tok, edit, cases, runParams, progress, log);
                }
                finally { (edit as IDisposable)?.Dispose(); }
            });
            stdout.Write(summary.ToTable());
            return ExitCodes.Ok;
        }));
        return command;
    }
}
