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

/// <summary>Progress of a study: units finished (this run and before), total in this shard, and what runs now.</summary>
public sealed record StudyProgress(int Done, int Total, string Stage);

/// <summary>
/// Runs a <see cref="StudyPlan"/> into a run folder: every unit not yet in the <see cref="ResultsStore"/> is run and
/// stored the moment it finishes; units already stored are skipped, so a killed study re-run finishes the same grid.
/// Editing units share one loaded model (each single edit is undone bit for bit and checked by hash); each tuning
/// unit loads the base model afresh, trains with epoch checkpoints in <c>tune/&lt;group&gt;/</c> (a killed run resumes
/// from the last epoch) and keeps its adapter in <c>adapters/</c>.
/// </summary>
public sealed class StudyRunner(StudyPlan plan, string runFolder, Shard shard, Action<string>? log = null, IProgress<StudyProgress>? progress = null)
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
            progress?.Report(new StudyProgress(done, total, "starting"));

            var edits = mine.Where(g => g.Kind == "edit" && g.UnitIds.Any(id => !stored.Contains(id))).ToList();
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
        foreach (var group in mine.Where(g => g.Kind == "tune" && !stored.Contains(g.UnitIds[0])))
        {
            cancel.ThrowIfCancellationRequested();
            progress?.Report(new StudyProgress(done, total, $"tuning {group.GroupId}"));
            store.Add([RunTuneGroup(group, host, versions, cancel)]);
            done++;
            ran++;
            progress?.Report(new StudyProgress(done, total, group.GroupId));
        }
        store.Set("last_run_finished_utc", Now());
        return ran;
    }

    private ITokenizer LoadTokenizer() =>
        TokenizerLoader.ForModel(plan.Inputs.ModelPath, plan.Inputs.TokenizerPath, "set tokenizer in the study file");

    private int RunEditGroup(CausalLM model, ITokenizer tokenizer, UnitGroup group, HashSet<string> stored, ResultsStore store,
        string host, string versions, ref int done, int total, CancellationToken cancel)
    {
        var condition = group.Condition!;
        var editing = plan.Spec.Editing!;
        var editor = EditorFactory.Create(model, StudyPlan.Choice(condition, plan.Inputs, editing));
        try
        {
            progress?.Report(new StudyProgress(done, total, $"preparing {group.GroupId}"));
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
                ["kind"] = "edit",
                ["method"] = editor.Method,
                ["side"] = condition.Side,
                ["layers"] = string.Join(",", editor.Scope.Layers),
                ["mode"] = condition.Mode,
                ["seed"] = group.Seed,
                ["hyperparameters"] = editor.Hyperparameters.DeepClone(),
                ["evaluation"] = JsonSerializer.SerializeToNode(evaluation, Json),
            };
            var names = editor.ParameterNames(model);
            string before = ParameterHash.Sha256(model), edited = ParameterHash.Sha256(model, names);
            using var snapshot = WeightSnapshot.Take(model, names);
            int ran = 0;
            if (condition.Mode == "batch")
            {
                // A batch edit depends on all its requests: a group with any unit missing re-runs the whole batch
                // (deterministically) and stores the missing cases together.
                var started = DateTime.UtcNow;
                var missing = Enumerable.Range(0, group.Cases.Count).Where(i => !stored.Contains(group.UnitIds[i])).ToList();
                var pre = missing.ToDictionary(i => i, i => evaluator.Measure(group.Cases[i]));
                var watch = Stopwatch.StartNew();
                editor.Apply(model, tokenizer, [.. group.Cases.Select(c => c.Request)]);
                double seconds = watch.Elapsed.TotalSeconds;
                long changed = EditRun.Changed(model, snapshot);
                var post = new Dictionary<int, CaseScores>();
                foreach (int i in missing)
                {
                    cancel.ThrowIfCancellationRequested();
                    post[i] = evaluator.Measure(group.Cases[i]);
                }
                snapshot.Restore(model);
                // Each case's share of the group's wall time and of the edit's time.
                double share = (DateTime.UtcNow - started).TotalSeconds / group.Cases.Count;
                var records = missing.Select(i => EditRecord(group, i, condition, editor, pre[i], post[i], seconds / group.Cases.Count, changed,
                    config, started, share, host, versions)).ToList();
                store.Add(records);
                done += records.Count;
                ran += records.Count;
                progress?.Report(new StudyProgress(done, total, group.GroupId));
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
                    progress?.Report(new StudyProgress(done, total, group.UnitIds[i]));
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
            Mode = condition.Mode,
            CaseId = c.CaseId,
            Pre = CaseMetrics.From(pre, c.Format),
            Post = CaseMetrics.From(post, c.Format),
            Seconds = seconds,
            ParametersChanged = changed,
        };
        var unitConfig = (JsonObject)config.DeepClone();
        unitConfig["case_id"] = c.CaseId;
        return new UnitRecord(group.UnitIds[i], "edit", group.GroupId, group.Seed, unitConfig.ToJsonString(), JsonSerializer.Serialize(result, Json),
            wallSeconds, Stamp(started), Now(), host, versions, "");
    }

    private UnitRecord RunTuneGroup(UnitGroup group, string host, string versions, CancellationToken cancel)
    {
        var tuning = plan.Spec.Tuning!;
        var started = DateTime.UtcNow;
        var clock = Stopwatch.StartNew();
        ProcessMemory.ResetPeak();
        using var loaded = ModelLoader.Load(plan.Inputs.ModelPath, new LoadOptions { FourBit = tuning.FourBit });  // NF4 as it is read
        var tokenizer = LoadTokenizer();
        var data = plan.Inputs.TaskPaths.Select(t => TaskLoader.Load(t.Key, t.Value, StudyPlan.Selection(tuning, group.Seed))).ToList();
        var modules = LoraConfig.ResolveTargets(group.Targets!, plan.Config.ModelType);
        var config = new LoraConfig
        {
            R = tuning.R, Alpha = tuning.Alpha, Dropout = tuning.Dropout, TargetModules = modules,
            BaseModel = plan.Inputs.ModelLabel,
        };
        long fp32Bytes = LinearBytes(loaded.Model);
        var nf4 = loaded.FourBit;
        using var lora = LoraModel.Attach(loaded.Model, config, group.Seed);
        log?.Invoke($"{group.GroupId}: {lora.TrainableSummary()}");
        string folder = Path.Combine(RunFolder, "tune", Safe(group.GroupId));
        var options = new TrainOptions
        {
            LearningRate = tuning.Lr, WarmupRatio = tuning.WarmupRatio, MaxGradNorm = tuning.MaxGradNorm, Epochs = tuning.Epochs,
            MicroBatch = tuning.Batch, GradientAccumulation = tuning.GradAccum, MaxLength = Math.Min(tuning.MaxLength, plan.Config.MaxPositions),
            AnswerOnlyLoss = tuning.AnswerOnlyLoss, Seed = group.Seed, CheckpointDir = Path.Combine(folder, "checkpoints"), Resume = true,
        };
        using var progressWriter = new LineLog(log, group.GroupId);
        var trained = SftTrainer.Train(lora, tokenizer, [.. data.SelectMany(d => d.Train)], options, progressWriter);
        cancel.ThrowIfCancellationRequested();
        string adapter = Path.Combine(RunFolder, "adapters", Safe(group.GroupId));
        lora.Save(adapter);
        var outcomes = new List<TaskOutcome>();
        foreach (var task in data)
        {
            cancel.ThrowIfCancellationRequested();
            var predictions = TaskEvaluator.Predict(loaded.Model, tokenizer, task.Eval, tuning.LabelLikelihood ? task.Labels : null, TaskEvaluator.MaxNewTokens, tuning.EvalBatch);
            var m = TaskEvaluator.Score(task.Name, predictions, task.Labels);
            outcomes.Add(new TaskOutcome(task.Name, m.Count, m.Accuracy, m.MacroF1, m.LabelLikelihoodAccuracy, [.. predictions.Select(p => p.ExactMatch)]));
            log?.Invoke($"{group.GroupId}: {task.Name} accuracy {m.Accuracy:F3} ({m.Count} examples)");
        }
        var result = new TuneUnitResult
        {
            Label = StudyPlan.Label(group.Targets!),
            Targets = modules,
            Seed = group.Seed,
            FourBit = nf4 is not null,
            TrainableParameters = lora.TrainableCount,
            AllParameters = lora.AllCount,
            TrainSeconds = trained.Seconds,
            TokensPerSecond = trained.TokensPerSecond,
            PeakResidentBytes = ProcessMemory.PeakResidentBytes(),
            BaseBytesFp32 = fp32Bytes,
            BaseBytesStored = nf4?.Nf4Bytes ?? fp32Bytes,
            EpochLosses = trained.EpochLosses,
            Tasks = outcomes,
        };
        var unitConfig = new JsonObject
        {
            ["kind"] = "tune",
            ["targets"] = group.Targets,
            ["target_modules"] = new JsonArray([.. modules.Select(m => (JsonNode?)m)]),
            ["seed"] = group.Seed,
            ["tuning"] = JsonSerializer.SerializeToNode(tuning, StudySpec.Json),
            ["tasks"] = new JsonArray([.. data.Select(d => (JsonNode?)new JsonObject { ["task"] = d.Name, ["train"] = d.Train.Count, ["eval"] = d.Eval.Count, ["split"] = d.SplitNote })]),
            ["adapter"] = Path.GetRelativePath(RunFolder, adapter),
        };
        if (Directory.Exists(options.CheckpointDir)) Directory.Delete(options.CheckpointDir, recursive: true);
        return new UnitRecord(group.UnitIds[0], "tune", group.GroupId, group.Seed, unitConfig.ToJsonString(), JsonSerializer.Serialize(result, Json),
            clock.Elapsed.TotalSeconds, Stamp(started), Now(), host, versions, "");
    }

    /// <summary>Bytes of the linears a 4-bit base quantises (all but lm_head), in fp32.</summary>
    public static long LinearBytes(CausalLM model) =>
        model.named_modules().Where(m => m.module is TorchSharp.Modules.Linear && m.name != "lm_head")
            .Sum(m => FrozenLinear.WeightShape((TorchSharp.Modules.Linear)m.module).Aggregate(4L, (a, b) => a * b));  // frozen ones too

    private static string Safe(string id) => string.Concat(id.Select(ch => char.IsLetterOrDigit(ch) || ch is '-' or '_' or '.' or '+' ? ch : '_'));
    private static string Now() => Stamp(DateTime.UtcNow);
    private static string Stamp(DateTime t) => t.ToString("yyyy-MM-ddTHH:mm:ss.fffZ", CultureInfo.InvariantCulture);

    /// <summary>Reads every unit of a store back into report records (all shards that were merged into it).</summary>
    public static StudyResults Load(ResultsStore store, string name)
    {
        var units = store.Units();
        var edits = units.Where(u => u.Kind == "edit").Select(u => JsonSerializer.Deserialize<EditUnitResult>(u.Result, Json)!).ToList();
        var tunes = units.Where(u => u.Kind == "tune").Select(u => JsonSerializer.Deserialize<TuneUnitResult>(u.Result, Json)!).ToList();
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

    /// <summary>Writes trainer progress lines to the log, prefixed with the unit.</summary>
    private sealed class LineLog(Action<string>? log, string prefix) : TextWriter
    {
        private readonly System.Text.StringBuilder _line = new();
        public override System.Text.Encoding Encoding => System.Text.Encoding.UTF8;
        public override void Write(char value)
        {
            // A progress bar redraws with '\r': only the line standing when '\n' comes (an epoch's end) is logged.
            if (value == '\r') _line.Clear();
            else if (value == '\n')
            {
                if (_line.Length > 0) log?.Invoke($"{prefix}: {_line}");
                _line.Clear();
            }
            else _line.Append(value);
        }
    }
}
