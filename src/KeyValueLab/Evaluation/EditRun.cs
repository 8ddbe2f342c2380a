using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using KeyValueLab.Editing;
using KeyValueLab.Memory;
using KeyValueLab.Models;
using KeyValueLab.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace KeyValueLab.Evaluation;

/// <summary>
/// How edits are applied across cases: <see cref="Single"/> = each case on the original model, restored bit
/// for bit afterwards (checked by hash); <see cref="Batch"/> = all requests in one editor call;
/// <see cref="SequentialImmediate"/> = one after another without restoring, each case scored right after its own edit;
/// <see cref="SequentialFinal"/> = the published lifelong protocol: all cases edited in chunks, then all scored once on the final model.
/// </summary>
public enum EditMode { Single, Batch, SequentialImmediate, SequentialFinal }

/// <summary>The names of the modes on the command line, in study files and in params.json.</summary>
public static class EditModes
{
    public static IReadOnlyList<string> Names => ["single", "batch", "sequential-final", "sequential-immediate"];

    /// <summary>A mode by name; the old "sequential" is sequential-immediate and <paramref name="warn"/> gets a deprecation note.</summary>
    public static EditMode Parse(string name, Action<string>? warn = null) => name.Trim().ToLowerInvariant() switch
    {
        "single" => EditMode.Single,
        "batch" => EditMode.Batch,
        "sequential" or "sequential-final" or "sequential-immediate" =>
            SequentialProtocols.Parse(name, warn) == SequentialProtocol.Final ? EditMode.SequentialFinal : EditMode.SequentialImmediate,
        _ => throw new ArgumentException($"mode must be one of {string.Join(", ", Names)}, not \"{name}\""),
    };

    public static string Name(EditMode mode) => mode switch
    {
        EditMode.Single => "single",
        EditMode.Batch => "batch",
        EditMode.SequentialImmediate => "sequential-immediate",
        _ => "sequential-final",
    };
}

/// <summary>
/// What the model still knows after a sequence of edits (retained.json): of <paramref name="Facts"/> never-edited facts, the share
/// (×100) whose greedy answer starts with the true object before the edits and after <paramref name="Edits"/> edits, and the share
/// whose answer is unchanged.
/// </summary>
public sealed record RetainedFacts(int Edits, int Facts, double RecallBefore, double RecallAfter, double Unchanged);

/// <summary>
/// <c>edit-eval</c>'s engine: runs an editor over a slice of cases, writing <c>cases/{case_id}.json</c> as
/// each case finishes (atomically: a killed run leaves no half-written case) and skipping cases already
/// there, so a restarted run finishes the same slice; <c>params.json</c> records the resolved settings and a
/// restart with different settings is refused; <c>summary.json</c>/<c>summary.txt</c> are written at the end.
/// </summary>
public sealed class EditRun
{
    public static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    /// <summary>
    /// <paramref name="sequential"/>: chunk size, checkpoints and generation-based scoring (<see cref="SequentialOptions.Generation"/>,
    /// in every mode; null = chunks of 1 and no generation-based scores); its chunk size and checkpoints are for <see cref="EditMode.SequentialFinal"/> only (sequential-immediate edits
    /// one case at a time). <paramref name="retained"/>: cases never edited whose true objects are asked for after the edits (what
    /// the model still knows; sequential modes only), written to retained.json.
    /// </summary>
    public EditRun(string outputDir, EditMode mode, EvaluationOptions? evaluation = null, SequentialOptions? sequential = null,
        IReadOnlyList<EditCase>? retained = null)
    {
        (OutputDir, Mode, Evaluation) = (outputDir, mode, evaluation ?? new EvaluationOptions());
        Sequential = sequential ?? new SequentialOptions { ChunkSize = 1, Generation = false };
        Retained = retained ?? [];
        if (mode != EditMode.SequentialFinal && (Sequential.ChunkSize != 1 || Sequential.CheckpointEvery is not null))
            throw new ArgumentException("chunks and checkpoints are for mode sequential-final");
        if (Retained.Count > 0 && mode is EditMode.Single or EditMode.Batch)
            throw new ArgumentException("retained facts are measured after a sequence of edits (modes sequential-final, sequential-immediate)");
        if (Retained.FirstOrDefault(c => c.Request.TargetTrue is null) is { } noTruth)
            throw new ArgumentException($"retained case {noTruth.CaseId} has no true object to recall");
    }

    public string OutputDir { get; }
    public EditMode Mode { get; }
    public EvaluationOptions Evaluation { get; }
    public SequentialOptions Sequential { get; }
    public IReadOnlyList<EditCase> Retained { get; }

    /// <summary>Where case <paramref name="caseId"/>'s result goes.</summary>
    public string CaseFile(string caseId) => Path.Combine(OutputDir, "cases", FileName(caseId) + ".json");

    /// <summary>
    /// Runs every case not yet on disk, then summarises the whole slice. <paramref name="runParams"/> (dataset,
    /// slice, model, …) is stored in params.json with the editor's hyperparameters and the mode.
    /// </summary>
    public EditSummary Run(CausalLM model, ITokenizer tokenizer, IKnowledgeEditor editor, IReadOnlyList<EditCase> cases,
        JsonObject runParams, IProgress<WorkProgress>? progress = null, Action<string>? log = null, CancellationToken cancel = default)
    {
        RefuseSharedCaseFiles(cases, Path.Combine(OutputDir, "cases"));
        Directory.CreateDirectory(Path.Combine(OutputDir, "cases"));
        var parameters = (JsonObject)runParams.DeepClone();
        parameters["method"] = editor.Method;
        parameters["mode"] = EditModes.Name(Mode);
        parameters["model_fingerprint"] = ParameterHash.Sha256(model);
        parameters["evaluation"] = JsonSerializer.SerializeToNode(Evaluation, Json);
        parameters["generation_scores"] = Sequential.Generation ? new JsonObject { ["margin"] = Sequential.GenerationMargin } : null;
        if (Mode == EditMode.SequentialFinal)
        {
            parameters["chunk_size"] = Sequential.ChunkSize;
            parameters["checkpoint_every"] = Sequential.CheckpointEvery;
        }
        if (Retained.Count > 0) parameters["retained_cases"] = new JsonArray([.. Retained.Select(c => (JsonNode)c.CaseId)]);
        parameters["reference_score"] = "unavailable: needs ROME's attribute snippets (SPEC §3)";

        var todo = cases.Where(c => !File.Exists(CaseFile(c.CaseId))).ToList();
        int total = cases.Count, done = total - todo.Count;
        if (todo.Count > 0)
        {
            progress?.Report(new WorkProgress("edit", done, total, "preparing"));
            var prepared = Stopwatch.StartNew();
            foreach (string line in editor.Prepare(model, tokenizer)) log?.Invoke(line);
            parameters["hyperparameters"] = editor.Hyperparameters;
            parameters["prepare_seconds_last_run"] = prepared.Elapsed.TotalSeconds;
            WriteParams(parameters);
            var evaluator = new CaseEvaluator(model, tokenizer, Evaluation);
            var generation = Sequential.Generation ? new GenerationScorer(model, tokenizer, Sequential.GenerationMargin) : null;
            switch (Mode)
            {
                case EditMode.Single: RunSingle(model, tokenizer, editor, evaluator, generation, todo, total, done, progress, cancel); break;
                case EditMode.Batch: RunBatch(model, tokenizer, editor, evaluator, generation, cases, todo, total, done, progress, cancel); break;
                case EditMode.SequentialImmediate: RunImmediate(model, tokenizer, editor, evaluator, generation, cases, total, progress, cancel); break;
                default: RunFinal(model, tokenizer, editor, evaluator, cases, progress, cancel); break;
            }
        }
        else if (!File.Exists(Path.Combine(OutputDir, "params.json")))
        {
            parameters["hyperparameters"] = editor.Hyperparameters;
            WriteParams(parameters);
        }
        var results = cases.Select(c => ReadCase(CaseFile(c.CaseId))).ToList();
        var summary = EditSummary.From(results, cases.Count > 0 ? cases[0].Format : EditDatasetFormat.CounterFact);
        File.WriteAllText(Path.Combine(OutputDir, "summary.json"), JsonSerializer.Serialize(summary, Json));
        File.WriteAllText(Path.Combine(OutputDir, "summary.txt"), summary.ToTable());
        return summary;
    }

    private void RunSingle(CausalLM model, ITokenizer tokenizer, IKnowledgeEditor editor, CaseEvaluator evaluator, GenerationScorer? generation,
        List<EditCase> todo, int total, int done, IProgress<WorkProgress>? progress, CancellationToken cancel)
    {
        var names = editor.ParameterNames(model);
        string before = ParameterHash.Sha256(model), edited = ParameterHash.Sha256(model, names);
        using var snapshot = WeightSnapshot.Take(model, names);
        foreach (var c in todo)
        {
            cancel.ThrowIfCancellationRequested();
            var e = EditOnce(model, tokenizer, editor, evaluator, c, snapshot, names, edited, generation);
            Write(c, e.Pre, e.Post, new EditCost(e.Seconds, e.Changed, e.Report.Steps, e.Report.FinalLoss, 1), e.Generation);
            progress?.Report(new WorkProgress("edit", ++done, total, c.CaseId));
        }
        if (ParameterHash.Sha256(model) != before)
            throw new InvalidOperationException("after the single-mode run the model's parameter hash differs from the original's");
    }

    /// <summary>What one single-mode edit gave: scores before and after, the editor's report, its seconds, the weights it changed and the generation-based scores (null when not taken).</summary>
    public sealed record SingleEdit(CaseScores Pre, CaseScores Post, EditReport Report, double Seconds, long Changed, GenerationMetrics? Generation = null)
    {
        /// <summary>CPU seconds of the edit (<see cref="CpuTime.Now"/>); NaN where not measured.</summary>
        public double CpuSeconds { get; init; } = double.NaN;
    }

    /// <summary>
    /// One case in single mode: scores before, the edit (timed; changed weights counted against <paramref name="snapshot"/>),
    /// scores after, then the weights restored and checked against <paramref name="editedHash"/> (the hash of
    /// <paramref name="names"/> before any edit). With <paramref name="generation"/> the greedy continuations are scored too.
    /// <paramref name="preScores"/>, when given, supplies the scores before (the study keeps them per case: every condition
    /// starts from the same unedited weights, and scoring is deterministic on given weights).
    /// </summary>
    public static SingleEdit EditOnce(CausalLM model, ITokenizer tokenizer, IKnowledgeEditor editor, CaseEvaluator evaluator, EditCase c,
        WeightSnapshot snapshot, IReadOnlyList<string> names, string editedHash, GenerationScorer? generation = null,
        Func<EditCase, CaseScores>? preScores = null)
    {
        var pre = preScores?.Invoke(c) ?? evaluator.Measure(c);
        var answers = generation?.Generate(c);
        (editor as IEditHistory)?.ResetHistory();   // every case from clean state (SPEC §7: EasyEdit's leaking key cache)
        var (report, seconds, cpu) = Timed(() => editor.Apply(model, tokenizer, [c.Request]));
        long changed = Changed(model, snapshot);
        var post = evaluator.Measure(c);
        var gen = generation is null ? null : GenerationScorer.Score(c, answers!, generation.Generate(c));
        snapshot.Restore(model);
        (editor as IEditHistory)?.ResetHistory();
        if (ParameterHash.Sha256(model, names) != editedHash)
            throw new InvalidOperationException($"case {c.CaseId}: restoring the weights did not give back the original parameters");
        return new SingleEdit(pre, post, report, seconds, changed, gen) { CpuSeconds = cpu };
    }

    private void RunBatch(CausalLM model, ITokenizer tokenizer, IKnowledgeEditor editor, CaseEvaluator evaluator, GenerationScorer? generation,
        IReadOnlyList<EditCase> all, List<EditCase> todo, int total, int done, IProgress<WorkProgress>? progress, CancellationToken cancel)
    {
        // A batch edit depends on every request of the slice, so a resumed run re-applies the whole batch
        // (deterministically) and writes the cases still missing.
        var names = editor.ParameterNames(model);
        using var snapshot = WeightSnapshot.Take(model, names);
        EditBatch(model, tokenizer, editor, evaluator, all, todo, snapshot, (i, pre, post, edit) =>
            {
                Write(todo[i], pre, post, new EditCost(edit.Seconds / all.Count, edit.Changed, edit.Report.Steps, edit.Report.FinalLoss, all.Count),
                    edit.Generation?[i]);
                progress?.Report(new WorkProgress("edit", ++done, total, todo[i].CaseId));
            },
            i => progress?.Report(new WorkProgress("edit", done, total, "pre-edit " + todo[i].CaseId)), cancel, generation);
    }

    /// <summary>What a batch edit cost: the editor's report, its seconds and the weights it changed; the measured cases' generation-based scores when taken.</summary>
    public sealed record BatchCost(EditReport Report, double Seconds, long Changed, IReadOnlyList<GenerationMetrics>? Generation = null)
    {
        /// <summary>CPU seconds of the batch edit (<see cref="CpuTime.Now"/>); NaN where not measured.</summary>
        public double CpuSeconds { get; init; } = double.NaN;
    }

    /// <summary>
    /// One batch edit: <paramref name="measured"/> scored before, every request of <paramref name="all"/> applied in one editor call
    /// (timed; changed weights counted against <paramref name="snapshot"/>), <paramref name="measured"/> scored after (each handed to
    /// <paramref name="onCase"/> with its index as it is scored), then the weights restored. With <paramref name="generation"/> the
    /// measured cases' greedy continuations are scored before and after too (in <see cref="BatchCost.Generation"/>, by index).
    /// <paramref name="preScores"/>, when given, supplies the scores before, as in <see cref="EditOnce"/>.
    /// </summary>
    public static BatchCost EditBatch(CausalLM model, ITokenizer tokenizer, IKnowledgeEditor editor, CaseEvaluator evaluator, IReadOnlyList<EditCase> all,
        IReadOnlyList<EditCase> measured, WeightSnapshot snapshot, Action<int, CaseScores, CaseScores, BatchCost> onCase, Action<int>? onPre = null,
        CancellationToken cancel = default, GenerationScorer? generation = null, Func<EditCase, CaseScores>? preScores = null)
    {
        var pre = new List<CaseScores>();
        var answers = new List<GenerationAnswers>();
        for (int i = 0; i < measured.Count; i++)
        {
            cancel.ThrowIfCancellationRequested();
            pre.Add(preScores?.Invoke(measured[i]) ?? evaluator.Measure(measured[i]));
            if (generation is not null) answers.Add(generation.Generate(measured[i]));
            onPre?.Invoke(i);
        }
        (editor as IEditHistory)?.ResetHistory();
        var (report, seconds, cpu) = Timed(() => editor.Apply(model, tokenizer, [.. all.Select(c => c.Request)]));
        var gen = generation is null ? null : measured.Select((c, i) => GenerationScorer.Score(c, answers[i], generation.Generate(c))).ToList();
        var cost = new BatchCost(report, seconds, Changed(model, snapshot), gen) { CpuSeconds = cpu };
        for (int i = 0; i < measured.Count; i++)
        {
            cancel.ThrowIfCancellationRequested();
            onCase(i, pre[i], evaluator.Measure(measured[i]), cost);
        }
        snapshot.Restore(model);
        (editor as IEditHistory)?.ResetHistory();
        return cost;
    }

    private void RunImmediate(CausalLM model, ITokenizer tokenizer, IKnowledgeEditor editor, CaseEvaluator evaluator, GenerationScorer? generation,
        IReadOnlyList<EditCase> cases, int total, IProgress<WorkProgress>? progress, CancellationToken cancel)
    {
        // Cases already on disk are re-applied (not re-scored) so the model carries the same edits as before the kill.
        // "Before" is the model just before the case's own edit (earlier cases' edits in place), in teacher forcing and in generation.
        var names = editor.ParameterNames(model);
        using var snapshot = WeightSnapshot.Take(model, names);
        (editor as IEditHistory)?.ResetHistory();
        var retainedBefore = RetainedAnswers(model, tokenizer);
        int done = 0;
        for (int i = 0; i < cases.Count; i++)
        {
            cancel.ThrowIfCancellationRequested();
            var c = cases[i];
            if (File.Exists(CaseFile(c.CaseId)))
            {
                editor.Apply(model, tokenizer, [c.Request]);
                progress?.Report(new WorkProgress("edit", ++done, total, "replay " + c.CaseId));
                continue;
            }
            var pre = evaluator.Measure(c);
            var answers = generation?.Generate(c);
            var (report, seconds, _) = Timed(() => editor.Apply(model, tokenizer, [c.Request]));
            long changed = Changed(model, snapshot);
            var post = evaluator.Measure(c);
            var gen = generation is null ? null : GenerationScorer.Score(c, answers!, generation.Generate(c));
            Write(c, pre, post, new EditCost(seconds, changed, report.Steps, report.FinalLoss, i + 1), gen);
            progress?.Report(new WorkProgress("edit", ++done, total, c.CaseId));
        }
        WriteRetained(model, tokenizer, retainedBefore, cases.Count);
        snapshot.Restore(model);
        (editor as IEditHistory)?.ResetHistory();
    }

    /// <summary>
    /// sequential-final through <see cref="SequentialEditing.Run"/>: every case's file holds its scores on the unedited model and on
    /// the final one; each checkpoint's summary goes to <c>checkpoints/after-{edits}.json</c> (curves). Nothing is scored until
    /// every edit is made, so a killed run starts again from the unedited model (deterministically) and rewrites every file.
    /// </summary>
    private void RunFinal(CausalLM model, ITokenizer tokenizer, IKnowledgeEditor editor, CaseEvaluator evaluator,
        IReadOnlyList<EditCase> cases, IProgress<WorkProgress>? progress, CancellationToken cancel)
    {
        var names = editor.ParameterNames(model);
        using var snapshot = WeightSnapshot.Take(model, names);
        var retainedBefore = RetainedAnswers(model, tokenizer);
        try
        {
            var result = SequentialEditing.Run(model, tokenizer, editor, cases, SequentialProtocol.Final, Sequential with { ScoreBeforeEdits = true },
                evaluator, progress, cancel, prepared: true);
            long changed = Changed(model, snapshot);
            var chunkOf = new double[cases.Count];
            int size = Sequential.ChunkSize;
            for (int i = 0; i < cases.Count; i++) chunkOf[i] = result.ChunkSeconds[i / size] / Math.Min(size, cases.Count - i / size * size);
            CaseResult ToResult(SequentialCase s, int i, int edits) => Result(s.Case, s.Pre!, s.Post,
                new EditCost(chunkOf[i], changed, result.Reports[i / size].Steps, result.Reports[i / size].FinalLoss, edits), s.Generation);
            Directory.CreateDirectory(Path.Combine(OutputDir, "checkpoints"));
            foreach (var checkpoint in result.Checkpoints)
            {
                var summary = EditSummary.From([.. checkpoint.Cases.Select((s, i) => ToResult(s, i, checkpoint.Edits))], cases[0].Format);
                AtomicWrite(Path.Combine(OutputDir, "checkpoints", $"after-{checkpoint.Edits}.json"), JsonSerializer.Serialize(summary, Json));
            }
            for (int i = 0; i < cases.Count; i++)
            {
                var s = result.Cases[i];
                AtomicWrite(CaseFile(s.Case.CaseId), JsonSerializer.Serialize(ToResult(s, i, cases.Count), Json));
            }
            WriteRetained(model, tokenizer, retainedBefore, cases.Count);
        }
        finally
        {
            snapshot.Restore(model);
            (editor as IEditHistory)?.ResetHistory();
        }
    }

    /// <summary>Greedy continuations of the retained (never edited) cases' rewrite prompts, as long as the longest true object plus the margin.</summary>
    private IReadOnlyList<string> RetainedAnswers(CausalLM model, ITokenizer tokenizer)
    {
        if (Retained.Count == 0) return [];
        int length = Retained.Max(c => Inference.PromptEncoding.EncodeTarget(tokenizer, c.Request.TargetTrue ?? c.Request.TargetNew).Length) + Sequential.GenerationMargin;
        return [.. Inference.Generator.GreedyBatch(model, tokenizer, [.. Retained.Select(c => c.Request.FilledPrompt)], length).Select(g => g.Text)];
    }

    /// <summary>
    /// retained.json: the share of never-edited facts whose greedy answer starts with their true object, before the sequence and
    /// after it, and the share whose answer did not change at all.
    /// </summary>
    private void WriteRetained(CausalLM model, ITokenizer tokenizer, IReadOnlyList<string> before, int edits)
    {
        if (Retained.Count == 0) return;
        var after = RetainedAnswers(model, tokenizer);
        string Truth(int i) => Retained[i].Request.TargetTrue!;
        double Share(Func<int, bool> hit) => 100.0 * Enumerable.Range(0, Retained.Count).Count(hit) / Retained.Count;
        var report = new RetainedFacts(edits, Retained.Count,
            Share(i => GenerationScorer.StartsWithObject(before[i], Truth(i))),
            Share(i => GenerationScorer.StartsWithObject(after[i], Truth(i))),
            Share(i => GenerationScorer.Normalise(before[i]) == GenerationScorer.Normalise(after[i])));
        AtomicWrite(Path.Combine(OutputDir, "retained.json"), JsonSerializer.Serialize(report, Json));
    }

    private void Write(EditCase c, CaseScores pre, CaseScores post, EditCost cost, GenerationMetrics? generation) =>
        AtomicWrite(CaseFile(c.CaseId), JsonSerializer.Serialize(Result(c, pre, post, cost, generation), Json));

    private static CaseResult Result(EditCase c, CaseScores pre, CaseScores post, EditCost cost, GenerationMetrics? generation) =>
        new(c.CaseId, c.Request, pre, post, CaseMetrics.From(pre, c.Format), CaseMetrics.From(post, c.Format), EasyEditView.From(pre, post), cost, generation);

    private void WriteParams(JsonObject parameters)
    {
        string file = Path.Combine(OutputDir, "params.json");
        if (File.Exists(file))
        {
            var old = JsonNode.Parse(File.ReadAllText(file)) as JsonObject ?? throw new InputException(file, "not a JSON object");
            var a = Comparable(old);
            var b = Comparable(parameters);
            if (!JsonNode.DeepEquals(a, b))
            {
                var differing = a.Select(p => p.Key).Union(b.Select(p => p.Key)).Where(k => !JsonNode.DeepEquals(a[k], b[k]));
                throw new InputException(file, $"this folder holds a run with other settings ({string.Join(", ", differing)}); use another --out folder");
            }
        }
        AtomicWrite(file, parameters.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }

    private static JsonObject Comparable(JsonObject o)
    {
        var copy = (JsonObject)o.DeepClone();
        copy.Remove("prepare_seconds_last_run");
        return copy;
    }

    public static CaseResult ReadCase(string file)
    {
        try
        {
            return JsonSerializer.Deserialize<CaseResult>(File.ReadAllText(file), Json) ?? throw new InputException(file, "empty case file");
        }
        catch (JsonException e)
        {
            throw new InputException(file, $"not a case result: {e.Message}");
        }
    }

    /// <summary>The edit with its wall seconds and its CPU seconds (<see cref="CpuTime.Now"/>).</summary>
    private static (EditReport Report, double Seconds, double CpuSeconds) Timed(Func<EditReport> edit)
    {
        double cpu = CpuTime.Now();
        var watch = Stopwatch.StartNew();
        var report = edit();
        return (report, watch.Elapsed.TotalSeconds, CpuTime.Now() - cpu);
    }

    /// <summary>How many weights differ (bitwise) from the snapshot.</summary>
    public static long Changed(nn.Module model, WeightSnapshot snapshot)
    {
        var parameters = model.named_parameters().ToDictionary(p => p.name, p => p.parameter, StringComparer.Ordinal);
        long changed = 0;
        using var scope = NewDisposeScope();
        foreach (string name in snapshot.Names)
            changed += parameters[name].detach().ne(snapshot[name]).sum().item<long>();
        return changed;
    }

    private static void AtomicWrite(string file, string text)
    {
        string tmp = file + ".tmp";
        File.WriteAllText(tmp, text);
        File.Move(tmp, file, overwrite: true);
    }

    /// <summary>
    /// A case id as a file name: ASCII letters, digits, '-', '_' and '.' stay, every other UTF-8 byte becomes <c>%XX</c>,
    /// so distinct ids never share a file ("a/b", "a_b" and "a b" give a_b, a%2Fb, a%20b).
    /// </summary>
    internal static string FileName(string id)
    {
        var name = new System.Text.StringBuilder(id.Length);
        foreach (byte b in System.Text.Encoding.UTF8.GetBytes(id))
            if (b is >= (byte)'a' and <= (byte)'z' or >= (byte)'A' and <= (byte)'Z' or >= (byte)'0' and <= (byte)'9' or (byte)'-' or (byte)'_' or (byte)'.') name.Append((char)b);
            else name.Append('%').Append(b.ToString("X2", System.Globalization.CultureInfo.InvariantCulture));
        return name.ToString();
    }

    /// <summary>
    /// Refuses a slice in which two case ids would share a file on a case-insensitive file system, naming
    /// <paramref name="source"/> (commands call it with the dataset before loading a model; <see cref="Run"/> with cases/).
    /// </summary>
    public static void RefuseSharedCaseFiles(IReadOnlyList<EditCase> cases, string source)
    {
        var owner = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (var c in cases)
        {
            string file = FileName(c.CaseId);
            if (owner.TryGetValue(file, out string? other) && other != c.CaseId)
                throw new InputException(source, $"case ids \"{other}\" and \"{c.CaseId}\" differ only in letter case and would share one case file");
            owner[file] = c.CaseId;
        }
    }
}
