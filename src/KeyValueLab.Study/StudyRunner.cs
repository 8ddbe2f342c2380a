using System.Diagnostics;
using System.Globalization;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using KeyValueLab.Editing;
using KeyValueLab.Evaluation;
using KeyValueLab.Memory;
using KeyValueLab.Models;
using KeyValueLab.Tokenization;
using KeyValueLab.Tuning;

namespace KeyValueLab.Study;

/// <summary>
/// Runs a <see cref="StudyPlan"/> into a run folder: every unit not yet in the <see cref="ResultsStore"/> is run and
/// stored the moment it finishes; units already stored are skipped, so a killed study re-run finishes the same grid.
/// Editing units share one loaded model (each single edit is undone bit for bit and checked by hash); each tuning
/// unit loads the base model afresh, trains with epoch checkpoints in <c>tune/&lt;group&gt;/</c> (a killed run resumes
/// from the last epoch) and keeps its adapter in <c>adapters/</c>.
/// </summary>
public sealed class StudyRunner(StudyPlan plan, string runFolder, Shard shard, Action<string>? log = null, IProgress<WorkProgress>? progress = null)
{
    public static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    public string RunFolder { get; } = runFolder;

    /// <summary>kvlab, TorchSharp, .NET and OS versions, as recorded with each unit.</summary>
    public static string Versions()
    {
        string kvlab = typeof(StudyRunner).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "?";
        string torchSharp = typeof(TorchSharp.torch).Assembly.GetName().Version?.ToString() ?? "?";
        return $"kvlab {kvlab}; TorchSharp {torchSharp} (libtorch 2.10 cpu); {RuntimeInformation.FrameworkDescription}; {RuntimeInformation.OSDescription}";
    }

    /// <summary>Runs this shard's missing units. Returns how many ran now.</summary>
    public int Run(CancellationToken cancel = default)
    {
        StudyPreflight.Check(plan, LoadTokenizer);  // before the run folder is touched
        using var store = ResultsStore.Open(RunFolder, create: true);
        // One load serves the fingerprint (of the tensors as loaded, so a changed checkpoint at the same path is caught)
        // and every editing unit; it is freed before tuning, whose units each quantise a fresh copy.
        var loaded = ModelLoader.Load(plan.Inputs.ModelPath);
        int ran = 0, done, total;
        List<UnitGroup> mine;
        HashSet<string> stored;
        string host = Environment.MachineName, versions = Versions();
        try
        {
            store.Bind(plan.Spec, ParameterHash.Sha256(loaded.Model));
            store.Set("model", plan.Inputs.ModelLabel);
            store.Set("model_type", plan.Config.ModelType);
            store.Set("edit_data", plan.Inputs.EditDataPath ?? "");
            store.Set("units_total", plan.UnitCount.ToString(CultureInfo.InvariantCulture));
            stored = store.UnitIds();
            mine = plan.Groups.Where((g, i) => shard.Takes(i)).ToList();
            total = mine.Sum(g => g.UnitIds.Count);
            done = mine.Sum(g => g.UnitIds.Count(stored.Contains));
            log?.Invoke($"study {plan.Spec.Name} ({plan.Spec.Hash()}): shard {shard}, {total} units, {done} already stored in {store.Path}");
            progress?.Report(new WorkProgress("study", done, total, "starting"));

            var edits = mine.Where(g => g.Kind == UnitKind.Edit && g.UnitIds.Any(id => !stored.Contains(id))).ToList();
            if (edits.Count > 0)
            {
                var tokenizer = LoadTokenizer();
                foreach (var group in edits)
                {
                    cancel.ThrowIfCancellationRequested();
                    ran += RunEditGroup(loaded.Model, tokenizer, group, stored, store, host, versions, ref done, total, cancel);
                }
            }
        }
        finally
        {
            loaded.Dispose();
        }
        foreach (var group in mine.Where(g => g.Kind == UnitKind.Tune && !stored.Contains(g.UnitIds[0])))
        {
            cancel.ThrowIfCancellationRequested();
            progress?.Report(new WorkProgress("study", done, total, $"tuning {group.GroupId}"));
            store.Add([RunTuneGroup(group, host, versions, cancel)]);
            done++;
            ran++;
            progress?.Report(new WorkProgress("study", done, total, group.GroupId));
        }
        store.Set("last_run_finished_utc", Now());
        return ran;
    }

    private const string TokenizerHint = "set tokenizer in the study file";

    private ITokenizer LoadTokenizer() => TokenizerLoader.ForModel(plan.Inputs.ModelPath, plan.Inputs.TokenizerPath, TokenizerHint);

    private int RunEditGroup(CausalLM model, ITokenizer tokenizer, UnitGroup group, HashSet<string> stored, ResultsStore store,
        string host, string versions, ref int done, int total, CancellationToken cancel)
    {
        var condition = group.Condition!;
        var editing = plan.Spec.Editing!;
        var editor = EditorFactory.Create(model, StudyPlan.Choice(condition, plan.Inputs, editing));
        try
        {
            progress?.Report(new WorkProgress("study", done, total, $"preparing {group.GroupId}"));
            foreach (string line in editor.Prepare(model, tokenizer)) log?.Invoke(line);
            var evaluation = new EvaluationOptions
            {
                GenerationPrompts = editing.GenerationPrompts,
                GenerationTokens = editing.GenerationTokens,
                Seed = (ulong)group.Seed,
            };
            var evaluator = new CaseEvaluator(model, tokenizer, evaluation);
            var config = new JsonObject
            {
                ["kind"] = Name(UnitKind.Edit),
                ["method"] = editor.Method,
                ["side"] = condition.Side,
                ["layers"] = string.Join(",", editor.Scope.Layers),
                ["mode"] = Name(condition.Mode),
                ["seed"] = group.Seed,
                ["hyperparameters"] = editor.Hyperparameters.DeepClone(),
                ["evaluation"] = JsonSerializer.SerializeToNode(evaluation, Json),
            };
            var names = editor.ParameterNames(model);
            string before = ParameterHash.Sha256(model), edited = ParameterHash.Sha256(model, names);
            using var snapshot = WeightSnapshot.Take(model, names);
            int ran = 0;
            if (condition.Mode == EditMode.Batch)
            {
                // A batch edit depends on all its requests: a group with any unit missing re-runs the whole batch
                // (deterministically) and stores the missing cases together.
                var started = DateTime.UtcNow;
                var missing = Enumerable.Range(0, group.Cases.Count).Where(i => !stored.Contains(group.UnitIds[i])).ToList();
                var scored = new List<(int Case, CaseScores Pre, CaseScores Post)>();
                var cost = EditRun.EditBatch(model, tokenizer, editor, evaluator, group.Cases, [.. missing.Select(i => group.Cases[i])], snapshot,
                    (k, pre, post, _) => scored.Add((missing[k], pre, post)), cancel: cancel);
                // Each case's share of the group's wall time and of the edit's time.
                double share = (DateTime.UtcNow - started).TotalSeconds / group.Cases.Count;
                var records = scored.Select(x => EditRecord(group, x.Case, condition, editor, x.Pre, x.Post, cost.Seconds / group.Cases.Count, cost.Changed,
                    config, started, share, host, versions)).ToList();
                store.Add(records);
                done += records.Count;
                ran += records.Count;
                progress?.Report(new WorkProgress("study", done, total, group.GroupId));
            }
            else
            {
                for (int i = 0; i < group.Cases.Count; i++)
                {
                    cancel.ThrowIfCancellationRequested();
                    if (stored.Contains(group.UnitIds[i])) continue;
                    var started = DateTime.UtcNow;
                    var e = EditRun.EditOnce(model, tokenizer, editor, evaluator, group.Cases[i], snapshot, names, edited);
                    store.Add([EditRecord(group, i, condition, editor, e.Pre, e.Post, e.Seconds, e.Changed, config, started,
                        (DateTime.UtcNow - started).TotalSeconds, host, versions)]);
                    done++;
                    ran++;
                    progress?.Report(new WorkProgress("study", done, total, group.UnitIds[i]));
                }
            }
            if (ParameterHash.Sha256(model) != before)
                throw new InvalidOperationException($"after {group.GroupId} the model's parameter hash differs from the original's");
            return ran;
        }
        finally
        {
            (editor as IDisposable)?.Dispose();
        }
    }

    private static UnitRecord EditRecord(UnitGroup group, int i, EditCondition condition, IKnowledgeEditor editor, CaseScores pre, CaseScores post,
        double seconds, long changed, JsonObject config, DateTime started, double wallSeconds, string host, string versions)
    {
        var c = group.Cases[i];
        var result = new EditUnitResult
        {
            Method = editor.Method,
            Side = condition.Side,
            Layers = string.Join(",", editor.Scope.Layers),
            Seed = group.Seed,
            Mode = Name(condition.Mode),
            CaseId = c.CaseId,
            Pre = CaseMetrics.From(pre, c.Format),
            Post = CaseMetrics.From(post, c.Format),
            Seconds = seconds,
            ParametersChanged = changed,
        };
        var unitConfig = (JsonObject)config.DeepClone();
        unitConfig["case_id"] = c.CaseId;
        return new UnitRecord(group.UnitIds[i], Name(UnitKind.Edit), group.GroupId, group.Seed, unitConfig.ToJsonString(), JsonSerializer.Serialize(result, Json),
            wallSeconds, Stamp(started), Now(), host, versions, "");
    }

    private UnitRecord RunTuneGroup(UnitGroup group, string host, string versions, CancellationToken cancel)
    {
        var tuning = plan.Spec.Tuning!;
        var started = DateTime.UtcNow;
        var clock = Stopwatch.StartNew();
        ProcessMemory.ResetPeak();
        string folder = Path.Combine(RunFolder, "tune", Safe(group.GroupId)), adapter = Path.Combine(RunFolder, "adapters", Safe(group.GroupId));
        var job = new TuneJob
        {
            ModelPath = plan.Inputs.ModelPath, TokenizerPath = plan.Inputs.TokenizerPath, TokenizerHint = TokenizerHint,
            Tasks = [.. plan.Inputs.TaskPaths], Selection = StudyPlan.Selection(tuning, group.Seed), Targets = group.Targets!,
            Lora = new LoraConfig { R = tuning.R, Alpha = tuning.Alpha, Dropout = tuning.Dropout, BaseModel = plan.Inputs.ModelLabel },
            Loading = new LoadOptions { FourBit = tuning.FourBit },  // NF4 as it is read
            Training = new TrainOptions
            {
                LearningRate = tuning.Lr, WarmupRatio = tuning.WarmupRatio, MaxGradNorm = tuning.MaxGradNorm, Epochs = tuning.Epochs,
                MicroBatch = tuning.Batch, GradientAccumulation = tuning.GradAccum, MaxLength = tuning.MaxLength,
                AnswerOnlyLoss = tuning.AnswerOnlyLoss, Seed = group.Seed, CheckpointDir = Path.Combine(folder, "checkpoints"), Resume = true,
            },
            AdapterFolder = adapter, EvalBatch = tuning.EvalBatch, LabelLikelihood = tuning.LabelLikelihood,
        };
        var outcome = TuneEngine.Run(job, progress, log is null ? null : line => log($"{group.GroupId}: {line}"), cancel);
        var result = new TuneUnitResult
        {
            Label = StudyPlan.Label(group.Targets!),
            Targets = outcome.Targets,
            Seed = group.Seed,
            FourBit = outcome.FourBit,
            TrainableParameters = outcome.TrainableParameters,
            AllParameters = outcome.AllParameters,
            TrainSeconds = outcome.Training.Seconds,
            TokensPerSecond = outcome.Training.TokensPerSecond,
            PeakResidentBytes = ProcessMemory.PeakResidentBytes(),
            BaseBytesFp32 = outcome.BaseBytesFp32,
            BaseBytesStored = outcome.BaseBytesStored,
            EpochLosses = outcome.Training.EpochLosses,
            Tasks = [.. outcome.Tasks.Select(t => new TaskOutcome(t.Metrics.Task, t.Metrics.Count, t.Metrics.Accuracy, t.Metrics.MacroF1,
                t.Metrics.LabelLikelihoodAccuracy, [.. t.Predictions.Select(p => p.ExactMatch)]))],
        };
        var unitConfig = new JsonObject
        {
            ["kind"] = Name(UnitKind.Tune),
            ["targets"] = group.Targets,
            ["target_modules"] = new JsonArray([.. outcome.Targets.Select(m => (JsonNode?)m)]),
            ["seed"] = group.Seed,
            ["tuning"] = JsonSerializer.SerializeToNode(tuning, StudySpec.Json),
            ["tasks"] = new JsonArray([.. outcome.Data.Select(d => (JsonNode?)new JsonObject { ["task"] = d.Name, ["train"] = d.Train.Count, ["eval"] = d.Eval.Count, ["split"] = d.SplitNote })]),
            ["adapter"] = Path.GetRelativePath(RunFolder, adapter),
        };
        if (Directory.Exists(job.Training.CheckpointDir)) Directory.Delete(job.Training.CheckpointDir, recursive: true);
        return new UnitRecord(group.UnitIds[0], Name(UnitKind.Tune), group.GroupId, group.Seed, unitConfig.ToJsonString(), JsonSerializer.Serialize(result, Json),
            clock.Elapsed.TotalSeconds, Stamp(started), Now(), host, versions, "");
    }

    /// <summary>An enum as the store writes it: "edit", "tune", "single", "batch".</summary>
    private static string Name(Enum value) => value.ToString().ToLowerInvariant();

    private static string Safe(string id) => string.Concat(id.Select(ch => char.IsLetterOrDigit(ch) || ch is '-' or '_' or '.' or '+' ? ch : '_'));
    private static string Now() => Stamp(DateTime.UtcNow);
    private static string Stamp(DateTime t) => t.ToString("yyyy-MM-ddTHH:mm:ss.fffZ", CultureInfo.InvariantCulture);

    /// <summary>Reads every unit of a store back into report records (all shards that were merged into it).</summary>
    public static StudyResults Load(ResultsStore store, string name)
    {
        var units = store.Units();
        var (edits, tunes) = StoredUnits.Read(store.Path, units);
        var spec = JsonNode.Parse(store.Get("study_json") ?? "{}") as JsonObject ?? [];
        int total = 0;
        if (store.Get("units_total") is string t) total = int.Parse(t, CultureInfo.InvariantCulture);
        var info = new StudyInfo
        {
            Name = spec["name"]?.GetValue<string>() ?? name,
            Model = store.Get("model") ?? "",
            ModelType = store.Get("model_type") ?? "",
            ModelFingerprint = store.Get("model_fingerprint") ?? "",
            EditData = store.Get("edit_data") ?? "",
            CreatedUtc = store.Get("created_utc") ?? "",
            Host = string.Join(", ", units.Select(u => u.Host).Distinct().Order(StringComparer.Ordinal)),
            Versions = string.Join(" | ", units.Select(u => u.Versions).Distinct().Order(StringComparer.Ordinal)),
            Config = spec,
            UnitSeconds = units.Sum(u => u.Seconds),
            UnitsDone = units.Count,
            UnitsTotal = Math.Max(total, units.Count),
        };
        return new StudyResults(info, edits, tunes);
    }
}
