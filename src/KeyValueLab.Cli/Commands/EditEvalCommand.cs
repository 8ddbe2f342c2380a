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
        var mode = new Option<string>("--mode")
        {
            Description = "single (restore after each case), batch (one edit with every request), sequential-final (edit all in chunks, score once on the final model: "
                + "the published lifelong protocol) or sequential-immediate (each case scored right after its own edit; 'sequential' is its deprecated name).",
            DefaultValueFactory = _ => "single",
        };
        var chunk = new Option<int>("--chunk-size") { Description = "sequential-final: requests per editor call (B; AlphaEdit's protocol: 100).", DefaultValueFactory = _ => 1 };
        var checkpoints = new Option<int?>("--checkpoint-every") { Description = "sequential-final: also score the cases edited so far after every M edits (a multiple of --chunk-size), for curves." };
        var generation = new Option<bool>("--gen-scores") { Description = "Score greedy generations too (gen_es, gen_ps, gen_ns).", DefaultValueFactory = _ => true };
        var retained = new Option<int>("--retained") { Description = "Sequential modes: this many records after the slice, never edited, whose true objects are asked for before and after (retained.json).", DefaultValueFactory = _ => 0 };
        var output = new Option<string>("--out", "-o") { Description = "Output folder (cases/, params.json, summary.json, summary.txt); rerun to resume.", Required = true };
        var gePrompts = new Option<int>("--ge-prompts") { Description = "Generation prompts per case for GE (0 = skip GE).", DefaultValueFactory = _ => defaults.GenerationPrompts };
        var geTokens = new Option<int>("--ge-tokens") { Description = "Tokens per generation, prompt included.", DefaultValueFactory = _ => defaults.GenerationTokens };
        var seed = new Option<ulong>("--seed") { Description = "Seed of the GE sampling.", DefaultValueFactory = _ => defaults.Seed };
        var zsreTarget = new Option<ZsreTarget>("--zsre-target") { Description = "zsRE object inserted: Answer (answers[0], ROME/MEMIT) or Alt (EasyEdit).", DefaultValueFactory = _ => ZsreTarget.Answer };
        var editor = new EditorOptions();
        var command = new Command("edit-eval", "Evaluate an editor on a dataset slice (ROME/MEMIT metrics, per case, resumable).")
        {
            model, dtype, device, tokenizer, dataset, start, count, mode, chunk, checkpoints, generation, retained, output, gePrompts, geTokens, seed, zsreTarget,
        };
        editor.AddTo(command);
        command.SetAction(parse => CommandRunner.Run(stderr, () =>
        {
            var target = parse.GetValue(zsreTarget);
            EditMode editMode;
            try { editMode = EditModes.Parse(parse.GetValue(mode)!, note => stderr.WriteLine($"kvlab: {note}")); }
            catch (ArgumentException e) { throw new UsageException(e.Message); }
            int first = parse.GetValue(start);
            if (parse.GetValue(chunk) < 1) throw new UsageException("--chunk-size must be at least 1");
            string datasetPath = parse.GetValue(dataset)!;
            var (cases, kept) = Slice(datasetPath, target, first, parse.GetValue(count), parse.GetValue(retained));

            string modelPath = parse.GetValue(model)!;
            using var loaded = ProgressRenderer.Run(stderr, (progress, _) => ModelLoader.Load(modelPath, ModelOptions.Loading(parse, dtype, device) with { Progress = progress }));
            var tok = ModelOptions.LoadTokenizer(modelPath, parse.GetValue(tokenizer), loaded.Config);
            var evaluation = new EvaluationOptions { GenerationPrompts = parse.GetValue(gePrompts), GenerationTokens = parse.GetValue(geTokens), Seed = parse.GetValue(seed) };
            var sequential = new SequentialOptions { ChunkSize = parse.GetValue(chunk), CheckpointEvery = parse.GetValue(checkpoints), Generation = parse.GetValue(generation) };
            EditRun run;
            try { run = new EditRun(parse.GetValue(output)!, editMode, evaluation, sequential, kept); }
            catch (ArgumentException e) { throw new UsageException(e.Message); }
            var summary = ProgressRenderer.Run(stderr, (progress, log) =>
            {
                // Created here so that computing its statistics reports through the same progress and log.
                var edit = editor.Create(parse, loaded.Model, progress, log);
                try
                {
                    var runParams = RunParameters(modelPath, datasetPath, cases, target, first, edit.Scope.Label(new Memory.FfnMemory(loaded.Model)));
                    log($"{edit.Method} {runParams["scope"]} on {cases.Count} cases of {Path.GetFileName(datasetPath)} ({cases[0].Format}), mode {EditModes.Name(editMode)} → {run.OutputDir}");
                    return run.Run(loaded.Model, tok, edit, cases, runParams, progress, log);
                }
                finally { (edit as IDisposable)?.Dispose(); }
            });
            stdout.Write(summary.ToTable());
            string retainedFile = Path.Combine(run.OutputDir, "retained.json");
            if (kept.Count > 0 && File.Exists(retainedFile)) stdout.WriteLine($"retained facts: {File.ReadAllText(retainedFile).ReplaceLineEndings(" ")}");
            return ExitCodes.Ok;
        }));
        return command;
    }

    /// <summary>The dataset's slice [first, first + n) (n = 0: to the end) and the <paramref name="keep"/> records after it, checked before any work.</summary>
    private static (List<EditCase> Cases, List<EditCase> Kept) Slice(string datasetPath, ZsreTarget target, int first, int n, int keep)
    {
        if (first < 0 || n < 0 || keep < 0) throw new UsageException("--start, --count and --retained must be >= 0");
        var all = EditDatasets.Load(datasetPath, target);
        if (first >= all.Count) throw new UsageException($"--start {first} is past the dataset's {all.Count} records");
        var cases = all.Skip(first).Take(n == 0 ? int.MaxValue : n).ToList();
        var kept = all.Skip(first + cases.Count).Take(keep).ToList();
        if (kept.Count < keep) throw new UsageException($"--retained {keep}: only {kept.Count} records follow the slice");
        EditRun.RefuseSharedCaseFiles(cases, datasetPath);
        return (cases, kept);
    }

    /// <summary>What params.json records about the run (a resumed run must match it).</summary>
    private static JsonObject RunParameters(string modelPath, string datasetPath, IReadOnlyList<EditCase> cases, ZsreTarget target, int first, string scope) => new()
    {
        ["model"] = Path.GetFullPath(modelPath),
        ["dataset"] = Path.GetFullPath(datasetPath),
        ["dataset_format"] = cases[0].Format.ToString(),
        ["zsre_target"] = cases[0].Format == EditDatasetFormat.Zsre ? target.ToString().ToLowerInvariant() : null,
        ["start"] = first,
        ["count"] = cases.Count,
        ["scope"] = scope,
    };
}
