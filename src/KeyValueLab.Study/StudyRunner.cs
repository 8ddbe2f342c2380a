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

    /// <summary>
    /// Run each organism's units on a worker of its own: one .NET thread per organism, each with one torch thread, side
    /// by side, so a 2-core machine keeps both cores busy on small models whose ops are too short to split (set by the
    /// caller for organism studies, whatever thread count the organisms were trained with). One organism gets a worker
    /// too, so every edit is timed the same way: by its worker thread's CPU clock on one torch thread
    /// (<see cref="CpuTime"/>), never by the process clock, which counts OpenMP's spinning threads.
    /// </summary>
    public bool SideBySide { get; init; }

    /// <summary>How many times this runner scored a case on the unedited model. Every editing condition of an organism
    /// starts from the same weights (restored and hash-checked after each group), so a case is scored before its edits
    /// once per model and evaluation setting, and that score is used for every condition that edits it.</summary>
    public int PreEditScorings => preEditScorings;

    private int preEditScorings;

    private StudyPlan Plan => plan;

    /// <summary>Runs this shard's missing units. Returns how many ran now.</summary>
    public int Run(CancellationToken cancel = default)
    {
        // Before the run folder is touched. The organisms of a study share one world, so one tokenizer serves them all.
        StudyPreflight.Check(plan, () => LoadTokenizer(plan.Inputs.Models[0], plan.Config.VocabSize));
        using var store = ResultsStore.Open(RunFolder, create: true);
        var models = plan.Inputs.Models;
        // Fingerprints of the tensors as loaded (a changed checkpoint at the same path is caught). A study of one model
        // keeps that load for its editing units; organisms are small and are loaded again by their own worker.
        LoadedModel? kept = null;
        var fingerprints = new List<string>();
        var mine = plan.Groups.Where((g, i) => shard.Takes(i)).ToList();
        var state = new RunState(store, [], mine.Sum(g => g.UnitIds.Count), logLock) { Progress = sink };
        try
        {
            foreach (var m in models)
            {
                var loaded = ModelLoader.Load(m.ModelPath);
                fingerprints.Add(ParameterHash.Sha256(loaded.Model));
                if (models.Count == 1) kept = loaded;
                else loaded.Dispose();
            }
            string fingerprint = models.Count == 1 ? fingerprints[0]
                : Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(
                    System.Text.Encoding.UTF8.GetBytes(string.Concat(models.Select((m, i) => $"{m.Organism}={fingerprints[i]}\n")))));
            store.Bind(plan.Spec, fingerprint);
            store.Set("model", plan.Inputs.ModelLabel);
            store.Set("model_type", plan.Config.ModelType);
            store.Set("edit_data", plan.Inputs.EditDataPath ?? "");
            store.Set("units_total", plan.UnitCount.ToString(CultureInfo.InvariantCulture));
            store.Set("organisms", JsonSerializer.Serialize(models.Where(m => m.Organism.Length > 0).Select(m => m.Organism)));
            store.Set("run_order", JsonSerializer.Serialize(plan.Groups.Select(g => g.GroupId)));
            state.Stored.UnionWith(store.UnitIds());
            state.Done = mine.Sum(g => g.UnitIds.Count(state.Stored.Contains));
            Log($"study {plan.Spec.Name} ({plan.Spec.Hash()}): shard {shard}, {state.Total} units, {state.Done} already stored in {store.Path}");
            Log($"run order (seeded per replicate): {string.Join(" ", mine.Select(g => g.GroupId))}");
            state.Report("starting");
        }
        catch
        {
            kept?.Dispose();
            throw;
        }

        var work = models.Select(m => (Model: m, Groups: mine.Where(g => g.Organism == m.Organism).ToList())).Where(w => w.Groups.Count > 0).ToList();
        if (work.Count == 0) kept?.Dispose();
        if (!SideBySide)
        {
            foreach (var w in work) RunModel(w.Model, w.Groups, kept, state, cancel);
        }
        else
        {
            // A worker that fails stops the others at their next unit.
            using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancel);
            var errors = new Exception?[work.Count];
            var threads = work.Select((w, i) => new Thread(() =>
            {
                try
                {
                    TorchSharp.torch.set_num_threads(1);  // per thread: each worker's ops stay on its own core
                    RunModel(w.Model, w.Groups, kept, state, stop.Token);  // kept: a study of one model, so one worker
                }
                catch (Exception e)
                {
                    errors[i] = e;
                    stop.Cancel();
                }
            }) { Name = $"study {w.Model.Organism}" }).ToList();
            foreach (var t in threads) t.Start();
            foreach (var t in threads) t.Join();
            if ((errors.FirstOrDefault(e => e is not null and not OperationCanceledException) ?? errors.FirstOrDefault(e => e is not null)) is { } error)
                System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(error);
        }
        store.Set("last_run_finished_utc", Now());
        return state.Ran;
    }

    /// <summary>What the workers share: the store, the stored ids, the counters; every use holds the lock.</summary>
    private sealed class RunState(ResultsStore store, HashSet<string> stored, int total, object gate)
    {
        public readonly object Lock = gate;
        public ResultsStore Store { get; } = store;
        public HashSet<string> Stored { get; } = stored;
        public int Total { get; } = total;
        public int Done;
        public int Ran;
        public IProgress<WorkProgress>? Progress { get; init; }

        public void Report(string stage)
        {
            lock (Lock) Progress?.Report(new WorkProgress("study", Done, Total, stage));
        }

        public void Add(IReadOnlyList<UnitRecord> records, string stage)
        {
            lock (Lock)
            {
                Store.Add(records);
                Done += records.Count;
                Ran += records.Count;
                Progress?.Report(new WorkProgress("study", Done, Total, stage));
            }
        }

        public bool IsStored(string id)
        {
            lock (Lock) return Stored.Contains(id);
        }
    }

    /// <summary>
    /// One model's groups: its editing units on one load of it (<paramref name="loaded"/>, owned and freed here, else a
    /// load of its own), freed before its tuning runs, each of which quantises a fresh copy.
    /// </summary>
    private void RunModel(StudyModel model, IReadOnlyList<UnitGroup> groups, LoadedModel? loaded, RunState state, CancellationToken cancel)
    {
        string host = Environment.MachineName, versions = Versions();
        try
        {
            var edits = groups.Where(g => g.Kind is UnitKind.Edit or UnitKind.Lifelong && g.UnitIds.Any(id => !state.IsStored(id))).ToList();
            if (edits.Count > 0)
            {
                loaded ??= ModelLoader.Load(model.ModelPath);
                var tokenizer = LoadTokenizer(model, loaded.Config.VocabSize);
                var preScores = new Dictionary<string, CaseScores>(StringComparer.Ordinal);  // this model's, by evaluation and case
                foreach (var set in Interleaved(edits))
                {
                    cancel.ThrowIfCancellationRequested();
                    if (set[0].Kind == UnitKind.Lifelong) RunLifelongGroup(loaded.Model, tokenizer, set[0], state, host, versions, cancel);
                    else RunEditGroups(loaded.Model, tokenizer, set, state, host, versions, preScores, cancel);
                }
            }
        }
        finally
        {
            loaded?.Dispose();
        }
        foreach (var group in groups.Where(g => g.Kind == UnitKind.Tune && !state.IsStored(g.UnitIds[0])))
        {
            cancel.ThrowIfCancellationRequested();
            state.Report($"tuning {group.GroupId}");
            state.Add([RunTuneGroup(model, group, host, versions, cancel)], group.GroupId);
        }
    }

    private const string TokenizerHint = "set tokenizer in the study file";

    /// <summary>One lock for the log, the progress sink and the store, which the workers share.</summary>
    private readonly object logLock = new();
    private readonly IProgress<WorkProgress>? sink = progress;

    private void Log(string line)
    {
        lock (logLock) log?.Invoke(line);
    }

    private ITokenizer LoadTokenizer(StudyModel model, int modelVocabSize) =>
        TokenizerLoader.ForModel(model.ModelPath, plan.Inputs.TokenizerPath, TokenizerHint, modelVocabSize);

    /// <summary>
    /// Single-mode groups that the analysis pairs case by case (one organism and seed, the same layers and variant, one
    /// editor family: FT with FT, Key-ROME with ROME), in the order of their first member; every other group alone.
    /// </summary>
    private static List<List<UnitGroup>> Interleaved(IReadOnlyList<UnitGroup> groups)
    {
        var sets = new List<List<UnitGroup>>();
        var byKey = new Dictionary<string, List<UnitGroup>>(StringComparer.Ordinal);
        foreach (var g in groups)
        {
            if (g.Kind != UnitKind.Edit || g.Condition is not { Mode: EditMode.Single } c)
            {
                sets.Add([g]);
                continue;
            }
            string family = c.Method.Name.StartsWith("key", StringComparison.Ordinal) ? c.Method.Name[3..] : c.Method.Name;
            string key = $"{g.Organism}\n{g.Seed}\n{family}\n{c.Layers}\n{g.Variant}\n{string.Join(",", g.Cases.Select(x => x.CaseId))}";
            if (byKey.TryGetValue(key, out var set)) set.Add(g);
            else sets.Add(byKey[key] = [g]);
        }
        return sets;
    }

    /// <summary>
    /// Runs a set of paired single-mode groups case by case, rotating which condition goes first (for two: ABBA), so
    /// whatever changes the machine's speed over seconds (the other workers' load on shared cores and caches) falls on
    /// both sides of each pair instead of on one condition's block; the timing claim compares their CPU seconds.
    /// Batch-mode groups and sets of one run as before.
    /// </summary>
    private void RunEditGroups(CausalLM model, ITokenizer tokenizer, IReadOnlyList<UnitGroup> set, RunState state, string host, string versions,
        Dictionary<string, CaseScores> preScores, CancellationToken cancel)
    {
        var runs = new List<EditGroupRun>();
        try
        {
            foreach (var group in set) runs.Add(new EditGroupRun(this, model, tokenizer, group, state, host, versions, preScores));
            if (runs.Count == 1 && runs[0].Group.Condition!.Mode == EditMode.Batch) runs[0].RunBatch(cancel);
            else
            {
                int n = set[0].Cases.Count;
                for (int i = 0; i < n; i++)
                    for (int k = 0; k < runs.Count; k++)
                    {
                        cancel.ThrowIfCancellationRequested();
                        // Two conditions: A B, B A, B A, A B, ... (ABBA); more: rotate the first by one each case.
                        int j = runs.Count == 2 ? (i % 4 is 0 or 3 ? k : 1 - k) : (k + i) % runs.Count;
                        runs[j].RunCase(i);
                    }
            }
            foreach (var r in runs) r.CheckRestored();
        }
        finally
        {
            foreach (var r in runs) r.Dispose();
        }
    }

    /// <summary>One editing condition's group on the loaded model: its editor prepared, its snapshot taken; cases run one by
    /// one (or as one batch), each stored as it ends.</summary>
    private sealed class EditGroupRun : IDisposable
    {
        private readonly StudyRunner runner;
        private readonly CausalLM model;
        private readonly ITokenizer tokenizer;
        private readonly RunState state;
        private readonly string host, versions, before, edited;
        private readonly IKnowledgeEditor editor;
        private readonly CaseEvaluator evaluator;
        private readonly Func<EditCase, CaseScores> pre;
        private readonly JsonObject config;
        private readonly IReadOnlyList<string> names;
        private readonly WeightSnapshot snapshot;

        public UnitGroup Group { get; }

        public EditGroupRun(StudyRunner runner, CausalLM model, ITokenizer tokenizer, UnitGroup group, RunState state, string host, string versions,
            Dictionary<string, CaseScores> preScores)
        {
            (this.runner, this.model, this.tokenizer, Group, this.state, this.host, this.versions) = (runner, model, tokenizer, group, state, host, versions);
            var condition = group.Condition!;
            var editing = runner.Plan.Spec.Editing!;
            editor = EditorFactory.Create(model, StudyPlan.Choice(condition, runner.Plan.Inputs, editing));
            try
            {
                state.Report($"preparing {group.GroupId}");
                foreach (string line in editor.Prepare(model, tokenizer)) runner.Log(line);
                var evaluation = new EvaluationOptions
                {
                    GenerationPrompts = editing.GenerationPrompts,
                    GenerationTokens = editing.GenerationTokens,
                    Seed = (ulong)group.Seed,
                };
                evaluator = new CaseEvaluator(model, tokenizer, evaluation);
                string setting = JsonSerializer.Serialize(evaluation, Json);
                var scorer = evaluator;
                pre = c =>
                {
                    string key = $"{setting}\n{c.CaseId}";
                    if (!preScores.TryGetValue(key, out var scores))
                    {
                        preScores[key] = scores = scorer.Measure(c);
                        Interlocked.Increment(ref runner.preEditScorings);
                    }
                    return scores;
                };
                config = runner.UnitConfig(UnitKind.Edit, editor, group, Name(condition.Mode), evaluation,
                    ("torch_threads", TorchSharp.torch.get_num_threads()));  // 1: CpuSeconds is this thread's CPU clock
                names = editor.ParameterNames(model);
                before = ParameterHash.Sha256(model);
                edited = ParameterHash.Sha256(model, names);
                snapshot = WeightSnapshot.Take(model, names);
            }
            catch
            {
                (editor as IDisposable)?.Dispose();
                throw;
            }
        }

        /// <summary>A batch edit depends on all its requests: a group with any unit missing re-runs the whole batch
        /// (deterministically) and stores the missing cases together.</summary>
        public void RunBatch(CancellationToken cancel)
        {
            var group = Group;
            var started = DateTime.UtcNow;
            var missing = Enumerable.Range(0, group.Cases.Count).Where(i => !state.IsStored(group.UnitIds[i])).ToList();
            var scored = new List<(int Case, CaseScores Pre, CaseScores Post)>();
            var cost = EditRun.EditBatch(model, tokenizer, editor, evaluator, group.Cases, [.. missing.Select(i => group.Cases[i])], snapshot,
                (k, pre, post, _) => scored.Add((missing[k], pre, post)), cancel: cancel, preScores: pre);
            // Each case's share of the group's wall time and of the edit's time.
            double share = (DateTime.UtcNow - started).TotalSeconds / group.Cases.Count;
            var records = scored.Select(x => EditRecord(group, x.Case, group.Condition!, editor, x.Pre, x.Post, cost.Seconds / group.Cases.Count,
                cost.CpuSeconds / group.Cases.Count, cost.Changed, config, started, share, host, versions)).ToList();
            state.Add(records, group.GroupId);
        }

        /// <summary>Case <paramref name="i"/> edited on the original weights, scored, restored and stored (nothing when stored).</summary>
        public void RunCase(int i)
        {
            var group = Group;
            if (state.IsStored(group.UnitIds[i])) return;
            var started = DateTime.UtcNow;
            var e = EditRun.EditOnce(model, tokenizer, editor, evaluator, group.Cases[i], snapshot, names, edited, preScores: pre);
            state.Add([EditRecord(group, i, group.Condition!, editor, e.Pre, e.Post, e.Seconds, e.CpuSeconds, e.Changed, config, started,
                (DateTime.UtcNow - started).TotalSeconds, host, versions)], group.UnitIds[i]);
        }

        public void CheckRestored()
        {
            if (ParameterHash.Sha256(model) != before)
                throw new InvalidOperationException($"after {Group.GroupId} the model's parameter hash differs from the original's");
        }

        public void Dispose()
        {
            snapshot.Dispose();
            (editor as IDisposable)?.Dispose();
        }
    }

    /// <summary>
    /// One sequence: the group's cases edited in chunks on the loaded model without restoring it, scored by the condition's
    /// protocol (<see cref="SequentialEditing.Run"/>), stored as one unit when it ends; then the weights are restored and
    /// checked by hash, so the next group starts from the unedited model.
    /// </summary>
    private void RunLifelongGroup(CausalLM model, ITokenizer tokenizer, UnitGroup group, RunState state, string host, string versions, CancellationToken cancel)
    {
        var condition = group.Condition!;
        var sequence = condition.Sequence!;
        var editing = plan.Spec.Editing!;
        var protocol = condition.Mode == EditMode.SequentialFinal ? SequentialProtocol.Final : SequentialProtocol.Immediate;
        var editor = EditorFactory.Create(model, StudyPlan.Choice(condition, plan.Inputs, editing));
        try
        {
            state.Report($"preparing {group.GroupId}");
            var started = DateTime.UtcNow;
            var clock = Stopwatch.StartNew();
            foreach (string line in editor.Prepare(model, tokenizer)) Log(line);
            // GE (sampled texts) is left out of sequences: the generation-based scores stand for free generation there.
            var evaluation = new EvaluationOptions { GenerationPrompts = 0, GenerationTokens = editing.GenerationTokens, Seed = (ulong)group.Seed };
            var evaluator = new CaseEvaluator(model, tokenizer, evaluation);
            var options = new SequentialOptions { ChunkSize = sequence.Chunk, CheckpointEvery = sequence.CheckpointEvery, Generation = sequence.Generation };
            var names = editor.ParameterNames(model);
            string before = ParameterHash.Sha256(model);
            using var snapshot = WeightSnapshot.Take(model, names);
            SequentialResult run;
            long changed;
            try
            {
                run = SequentialEditing.Run(model, tokenizer, editor, group.Cases, protocol, options, evaluator, cancel: cancel, prepared: true);
                changed = EditRun.Changed(model, snapshot);
            }
            finally
            {
                snapshot.Restore(model);
                (editor as IEditHistory)?.ResetHistory();
            }
            if (ParameterHash.Sha256(model) != before)
                throw new InvalidOperationException($"after {group.GroupId} the restored model's parameter hash differs from the original's");
            var checkpoints = run.Checkpoints.Select(c => new LifelongCheckpoint(c.Edits, LifelongMeans(c.Cases))).ToList();
            if (protocol == SequentialProtocol.Immediate) checkpoints.Add(new LifelongCheckpoint(run.Cases.Count, LifelongMeans(run.Cases)));
            var result = new LifelongUnitResult
            {
                Method = editor.Method,
                Side = condition.Side.ToString(),
                Layers = string.Join(",", editor.Scope.Layers),
                Seed = group.Seed,
                Mode = EditModes.Name(condition.Mode),
                Organism = group.Organism,
                Variant = group.Variant,
                Arm = group.GroupId.StartsWith("lifelong/", StringComparison.Ordinal) ? "lifelong" : "editing",
                Chunk = sequence.Chunk,
                CheckpointEvery = sequence.CheckpointEvery,
                Cases = [.. run.Cases.Select(c => new LifelongCaseResult
                {
                    CaseId = c.Case.CaseId,
                    Pre = CaseMetrics.From(c.Pre!, c.Case.Format),
                    Post = c.Metrics,
                    PreLosses = CaseLosses.From(c.Pre!),
                    PostLosses = CaseLosses.From(c.Post),
                    Generation = c.Generation,
                })],
                Checkpoints = checkpoints,
                Seconds = run.ChunkSeconds.Sum(),
                WallSeconds = clock.Elapsed.TotalSeconds,
                ChunkSeconds = run.ChunkSeconds,
                ParametersChanged = changed,
            };
            var config = UnitConfig(UnitKind.Lifelong, editor, group, result.Mode, evaluation,
                ("edits", group.Cases.Count),
                ("chunk", sequence.Chunk),
                ("checkpoint_every", sequence.CheckpointEvery),
                ("generation_scores", sequence.Generation),
                ("case_ids", new JsonArray([.. group.Cases.Select(c => (JsonNode?)c.CaseId)])));
            state.Add([new UnitRecord(group.UnitIds[0], Name(UnitKind.Lifelong), group.GroupId, group.Seed, config.ToJsonString(), JsonSerializer.Serialize(result, Json),
                clock.Elapsed.TotalSeconds, Stamp(started), Now(), host, versions, "")], group.GroupId);
        }
        finally
        {
            (editor as IDisposable)?.Dispose();
        }
    }

    /// <summary>
    /// An editing unit's stored config: what names its condition and replicate, then the kind's own <paramref name="extra"/>
    /// keys, then the editor's hyperparameters and the evaluation settings (in that order, as stores have always had them).
    /// </summary>
    private JsonObject UnitConfig(UnitKind kind, IKnowledgeEditor editor, UnitGroup group, string mode, EvaluationOptions evaluation,
        params (string Key, JsonNode? Value)[] extra)
    {
        var config = new JsonObject
        {
            ["kind"] = Name(kind),
            ["method"] = editor.Method,
            ["side"] = group.Condition!.Side.ToString(),
            ["layers"] = string.Join(",", editor.Scope.Layers),
            ["mode"] = mode,
            ["seed"] = group.Seed,
            ["organism"] = group.Organism,
            ["variant"] = group.Variant,
            ["order"] = plan.Order(group),
        };
        foreach (var (key, value) in extra) config[key] = value;
        config["hyperparameters"] = editor.Hyperparameters.DeepClone();
        config["evaluation"] = JsonSerializer.SerializeToNode(evaluation, Json);
        return config;
    }

    /// <summary>Means over <paramref name="cases"/> of ES, PS, NS and the generation-based scores (a metric no case has is left out).</summary>
    public static IReadOnlyDictionary<string, double> LifelongMeans(IReadOnlyList<SequentialCase> cases)
    {
        var means = new SortedDictionary<string, double>(StringComparer.Ordinal);
        void Add(string key, Func<SequentialCase, double?> select)
        {
            var values = cases.Select(select).OfType<double>().ToList();
            if (values.Count > 0) means[key] = values.Average();
        }
        Add("es", c => c.Metrics.ES);
        Add("ps", c => c.Metrics.PS);
        Add("ns", c => c.Metrics.NS);
        Add("gen_es", c => c.Generation?.GenES);
        Add("gen_ps", c => c.Generation?.GenPS);
        Add("gen_ns", c => c.Generation?.GenNS);
        return means;
    }

    private static UnitRecord EditRecord(UnitGroup group, int i, EditCondition condition, IKnowledgeEditor editor, CaseScores pre, CaseScores post,
        double seconds, double cpuSeconds, long changed, JsonObject config, DateTime started, double wallSeconds, string host, string versions)
    {
        var c = group.Cases[i];
        var result = new EditUnitResult
        {
            Method = editor.Method,
            Side = condition.Side.ToString(),
            Layers = string.Join(",", editor.Scope.Layers),
            Seed = group.Seed,
            Mode = Name(condition.Mode),
            CaseId = c.CaseId,
            Organism = group.Organism,
            Variant = group.Variant,
            Pre = CaseMetrics.From(pre, c.Format),
            Post = CaseMetrics.From(post, c.Format),
            PreLosses = CaseLosses.From(pre),
            PostLosses = CaseLosses.From(post),
            Seconds = seconds,
            CpuSeconds = double.IsFinite(cpuSeconds) ? cpuSeconds : null,
            ParametersChanged = changed,
        };
        var unitConfig = (JsonObject)config.DeepClone();
        unitConfig["case_id"] = c.CaseId;
        return new UnitRecord(group.UnitIds[i], Name(UnitKind.Edit), group.GroupId, group.Seed, unitConfig.ToJsonString(), JsonSerializer.Serialize(result, Json),
            wallSeconds, Stamp(started), Now(), host, versions, "");
    }

    private UnitRecord RunTuneGroup(StudyModel model, UnitGroup group, string host, string versions, CancellationToken cancel)
    {
        var tuning = plan.Spec.Tuning!;
        var started = DateTime.UtcNow;
        var clock = Stopwatch.StartNew();
        ProcessMemory.ResetPeak();
        string folder = Path.Combine(RunFolder, "tune", Safe(group.GroupId)), adapter = Path.Combine(RunFolder, "adapters", Safe(group.GroupId));
        var job = new TuneJob
        {
            ModelPath = model.ModelPath, TokenizerPath = plan.Inputs.TokenizerPath, TokenizerHint = TokenizerHint,
            Tasks = [.. plan.Inputs.TaskPaths], Selection = StudyPlan.Selection(tuning, group.Seed), Targets = group.Targets!,
            Lora = new LoraConfig { R = tuning.R, Alpha = tuning.Alpha, Dropout = tuning.Dropout, BaseModel = model.Label },
            Loading = new LoadOptions { FourBit = tuning.FourBit },  // NF4 as it is read
            Training = new TrainOptions
            {
                LearningRate = tuning.Lr, WarmupRatio = tuning.WarmupRatio, MaxGradNorm = tuning.MaxGradNorm, Epochs = tuning.Epochs,
                MicroBatch = tuning.Batch, GradientAccumulation = tuning.GradAccum, MaxLength = tuning.MaxLength,
                AnswerOnlyLoss = tuning.AnswerOnlyLoss, Packing = tuning.Packing, Seed = group.Seed, CheckpointDir = Path.Combine(folder, "checkpoints"), Resume = true,
            },
            AdapterFolder = adapter, EvalBatch = tuning.EvalBatch, LabelLikelihood = tuning.LabelLikelihood,
        };
        var outcome = TuneEngine.Run(job, sink is null ? null : new LockedProgress(this), log is null ? null : line => Log($"{group.GroupId}: {line}"), cancel);
        var result = new TuneUnitResult
        {
            Label = StudyPlan.Label(group.Targets!),
            Targets = outcome.Targets,
            Seed = group.Seed,
            Organism = group.Organism,
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
                t.Metrics.LabelLikelihoodAccuracy, [.. t.Predictions.Select(p => p.ExactMatch)])
            {
                Gold = [.. t.Predictions.Select(p => p.Example.Label)],
                Predicted = [.. t.Predictions.Select(p => p.Generated.Trim())],
            })],
        };
        var unitConfig = new JsonObject
        {
            ["kind"] = Name(UnitKind.Tune),
            ["targets"] = group.Targets,
            ["target_modules"] = new JsonArray([.. outcome.Targets.Select(m => (JsonNode?)m)]),
            ["seed"] = group.Seed,
            ["organism"] = group.Organism,
            ["order"] = plan.Order(group),
            ["tuning"] = JsonSerializer.SerializeToNode(tuning, StudySpec.Json),
            ["tasks"] = new JsonArray([.. outcome.Data.Select(d => (JsonNode?)new JsonObject { ["task"] = d.Name, ["train"] = d.Train.Count, ["eval"] = d.Eval.Count, ["split"] = d.SplitNote })]),
            ["adapter"] = Path.GetRelativePath(RunFolder, adapter),
        };
        if (Directory.Exists(job.Training.CheckpointDir)) Directory.Delete(job.Training.CheckpointDir, recursive: true);
        return new UnitRecord(group.UnitIds[0], Name(UnitKind.Tune), group.GroupId, group.Seed, unitConfig.ToJsonString(), JsonSerializer.Serialize(result, Json),
            clock.Elapsed.TotalSeconds, Stamp(started), Now(), host, versions, "");
    }

    /// <summary>The tuner's progress records, drawn one at a time when organisms run side by side.</summary>
    private sealed class LockedProgress(StudyRunner runner) : IProgress<WorkProgress>
    {
        public void Report(WorkProgress value)
        {
            lock (runner.logLock) runner.sink?.Report(value);
        }
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
        var (edits, tunes) = StoredUnits.Read(store.Path, units, out var lifelong);
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
        return new StudyResults(info, edits, tunes) { Lifelong = lifelong };
    }
}
