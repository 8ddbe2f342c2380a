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
/// <see cref="Sequential"/> = one after another without restoring, metrics taken as edits accumulate.
/// </summary>
public enum EditMode { Single, Batch, Sequential }

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

    public EditRun(string outputDir, EditMode mode, EvaluationOptions? evaluation = null)
    {
        (OutputDir, Mode, Evaluation) = (outputDir, mode, evaluation ?? new EvaluationOptions());
    }

    public string OutputDir { get; }
    public EditMode Mode { get; }
    public EvaluationOptions Evaluation { get; }

    /// <summary>Where case <paramref name="caseId"/>'s result goes.</summary>
    public string CaseFile(string caseId) => Path.Combine(OutputDir, "cases", FileName(caseId) + ".json");

    /// <summary>
    /// Runs every case not yet on disk, then summarises the whole slice. <paramref name="runParams"/> (dataset,
    /// slice, model, …) is stored in params.json with the editor's hyperparameters and the mode.
    /// </summary>
    public EditSummary Run(CausalLM model, ITokenizer tokenizer, IKnowledgeEditor editor, IReadOnlyList<EditCase> cases,
        JsonObject runParams, IProgress<WorkProgress>? progress = null, Action<string>? log = null, CancellationToken cancel = default)
    {
        CheckFileNames(cases);
        Directory.CreateDirectory(Path.Combine(OutputDir, "cases"));
        var parameters = (JsonObject)runParams.DeepClone();
        parameters["method"] = editor.Method;
        parameters["mode"] = Mode.ToString().ToLowerInvariant();
        parameters["model_fingerprint"] = ParameterHash.Sha256(model);
        parameters["evaluation"] = JsonSerializer.SerializeToNode(Evaluation, Json);
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
            switch (Mode)
            {
                case EditMode.Single: RunSingle(model, tokenizer, editor, evaluator, todo, total, done, progress, cancel); break;
                case EditMode.Batch: RunBatch(model, tokenizer, editor, evaluator, cases, todo, total, done, progress, cancel); break;
                default: RunSequential(model, tokenizer, editor, evaluator, cases, total, progress, cancel); break;
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

    private void RunSingle(CausalLM model, ITokenizer tokenizer, IKnowledgeEditor editor, CaseEvaluator evaluator,
        List<EditCase> todo, int total, int done, IProgress<WorkProgress>? progress, CancellationToken cancel)
    {
        var names = editor.ParameterNames(model);
        string before = ParameterHash.Sha256(model), edited = ParameterHash.Sha256(model, names);
        using var snapshot = WeightSnapshot.Take(model, names);
        foreach (var c in todo)
        {
            cancel.ThrowIfCancellationRequested();
            var e = EditOnce(model, tokenizer, editor, evaluator, c, snapshot, names, edited);
            Write(c, e.Pre, e.Post, new EditCost(e.Seconds, e.Changed, e.Report.Steps, e.Report.FinalLoss, 1));
            progress?.Report(new WorkProgress("edit", ++done, total, c.CaseId));
        }
        if (ParameterHash.Sha256(model) != before)
            throw new InvalidOperationException("after the single-mode run the model's parameter hash differs from the original's");
    }

    /// <summary>What one single-mode edit gave: scores before and after, the editor's report, its seconds and the weights it changed.</summary>
    public sealed record SingleEdit(CaseScores Pre, CaseScores Post, EditReport Report, double Seconds, long Changed);

    /// <summary>
    /// One case in single mode: scores before, the edit (timed; changed weights counted against <paramref name="snapshot"/>),
    /// scores after, then the weights restored and checked against <paramref name="editedHash"/> (the hash of
    /// <paramref name="names"/> before any edit).
    /// </summary>
    public static SingleEdit EditOnce(CausalLM model, ITokenizer tokenizer, IKnowledgeEditor editor, CaseEvaluator evaluator, EditCase c,
        WeightSnapshot snapshot, IReadOnlyList<string> names, string editedHash)
    {
        var pre = evaluator.Measure(c);
        var (report, seconds) = Timed(() => editor.Apply(model, tokenizer, [c.Request]));
        long changed = Changed(model, snapshot);
        var post = evaluator.Measure(c);
        snapshot.Restore(model);
        if (ParameterHash.Sha256(model, names) != editedHash)
            throw new InvalidOperationException($"case {c.CaseId}: restoring the weights did not give back the original parameters");
        return new SingleEdit(pre, post, report, seconds, changed);
    }

    private void RunBatch(CausalLM model, ITokenizer tokenizer, IKnowledgeEditor editor, CaseEvaluator evaluator,
        IReadOnlyList<EditCase> all, List<EditCase> todo, int total, int done, IProgress<WorkProgress>? progress, CancellationToken cancel)
    {
        // A batch edit depends on every request of the slice, so a resumed run re-applies the whole batch
        // (deterministically) and writes the cases still missing.
        var names = editor.ParameterNames(model);
        using var snapshot = WeightSnapshot.Take(model, names);
        EditBatch(model, tokenizer, editor, evaluator, all, todo, snapshot, (i, pre, post, edit) =>
            {
                Write(todo[i], pre, post, new EditCost(edit.Seconds / all.Count, edit.Changed, edit.Report.Steps, edit.Report.FinalLoss, all.Count));
                progress?.Report(new WorkProgress("edit", ++done, total, todo[i].CaseId));
            },
            i => progress?.Report(new WorkProgress("edit", done, total, "pre-edit " + todo[i].CaseId)), cancel);
    }

    /// <summary>What a batch edit cost: the editor's report, its seconds and the weights it changed.</summary>
    public sealed record BatchCost(EditReport Report, double Seconds, long Changed);

    /// <summary>
    /// One batch edit: <paramref name="measured"/> scored before, every request of <paramref name="all"/> applied in one editor call
    /// (timed; changed weights counted against <paramref name="snapshot"/>), <paramref name="measured"/> scored after (each handed to
    /// <paramref name="onCase"/> with its index as it is scored), then the weights restored.
    /// </summary>
    public static BatchCost EditBatch(CausalLM model, ITokenizer tokenizer, IKnowledgeEditor editor, CaseEvaluator evaluator, IReadOnlyList<EditCase> all,
        IReadOnlyList<EditCase> measured, WeightSnapshot snapshot, Action<int, CaseScores, CaseScores, BatchCost> onCase, Action<int>? onPre = null,
        CancellationToken cancel = default)
    {
        var pre = new List<CaseScores>();
        for (int i = 0; i < measured.Count; i++)
        {
            cancel.ThrowIfCancellationRequested();
            pre.Add(evaluator.Measure(measured[i]));
            onPre?.Invoke(i);
        }
        var (report, seconds) = Timed(() => editor.Apply(model, tokenizer, [.. all.Select(c => c.Request)]));
        var cost = new BatchCost(report, seconds, Changed(model, snapshot));
        for (int i = 0; i < measured.Count; i++)
        {
            cancel.ThrowIfCancellationRequested();
            onCase(i, pre[i], evaluator.Measure(measured[i]), cost);
        }
        snapshot.Restore(model);
        return cost;
    }

    private void RunSequential(CausalLM model, ITokenizer tokenizer, IKnowledgeEditor editor, CaseEvaluator evaluator,
        IReadOnlyList<EditCase> cases, int total, IProgress<WorkProgress>? progress, CancellationToken cancel)
    {
        // Cases already on disk are re-applied (not re-scored) so the model carries the same edits as before the kill.
        var names = editor.ParameterNames(model);
        using var snapshot = WeightSnapshot.Take(model, names);
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
            var (report, seconds) = Timed(() => editor.Apply(model, tokenizer, [c.Request]));
            long changed = Changed(model, snapshot);
            var post = evaluator.Measure(c);
            Write(c, pre, post, new EditCost(seconds, changed, report.Steps, report.FinalLoss, i + 1));
            progress?.Report(new WorkProgress("edit", ++done, total, c.CaseId));
        }
        snapshot.Restore(model);
    }

    private void Write(EditCase c, CaseScores pre, CaseScores post, EditCost cost)
    {
        var result = new CaseResult(c.CaseId, c.Request, pre, post, CaseMetrics.From(pre, c.Format), CaseMetrics.From(post, c.Format),
            EasyEditView.From(pre, post), cost);
        AtomicWrite(CaseFile(c.CaseId), JsonSerializer.Serialize(result, Json));
    }

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

    private static (EditReport Report, double Seconds) Timed(Func<EditReport> edit)
    {
        var watch = Stopwatch.StartNew();
        var report = edit();
        return (report, watch.Elapsed.TotalSeconds);
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

    /// <summary>Refuses a slice in which two case ids would share a file on a case-insensitive file system.</summary>
    private void CheckFileNames(IReadOnlyList<EditCase> cases)
    {
        var owner = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (var c in cases)
        {
            string file = FileName(c.CaseId);
            if (owner.TryGetValue(file, out string? other) && other != c.CaseId)
                throw new InputException(Path.Combine(OutputDir, "cases"), $"case ids \"{other}\" and \"{c.CaseId}\" differ only in letter case and would share one case file");
            owner[file] = c.CaseId;
        }
    }
}
