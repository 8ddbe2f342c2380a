using KeyValueLab.Models;
using KeyValueLab.Tokenization;

namespace KeyValueLab.Tuning;

/// <summary>
/// One LoRA tuning run: the model and tasks, the adapter (<see cref="Lora"/>, targets resolved from <see cref="Targets"/>
/// unless it carries a regex), the base (fp32 or NF4), the training and the evaluation. Each default is written once, in
/// the records this one holds (<see cref="TaskSelection"/>, <see cref="LoraConfig"/>, <see cref="TrainOptions"/>).
/// </summary>
public sealed record TuneJob
{
    public required string ModelPath { get; init; }
    public string? TokenizerPath { get; init; }
    /// <summary>What to tell the user when no tokenizer is found (the option or field that names one).</summary>
    public string TokenizerHint { get; init; } = "pass --tokenizer PATH";
    /// <summary>Tasks by canonical name and path, in order.</summary>
    public required IReadOnlyList<KeyValuePair<string, string>> Tasks { get; init; }
    public TaskSelection Selection { get; init; } = new();
    /// <summary>Target shortcuts or module names as <c>kvlab tune --targets</c> takes them; ignored when <see cref="LoraConfig.TargetRegex"/> is set.</summary>
    public string Targets { get; init; } = DefaultTargets;
    public const string DefaultTargets = "q,v";
    public LoraConfig Lora { get; init; } = new();
    /// <summary>How the model is loaded: weights as stored or widened, the device, and <see cref="LoadOptions.FourBit"/> (an NF4 base of every linear but lm_head, quantised as it is read).</summary>
    public LoadOptions Loading { get; init; } = LoadOptions.Default;
    /// <summary>Training settings; <see cref="TrainOptions.Seed"/> also seeds the adapters, <see cref="TrainOptions.MaxLength"/> is capped at the model's positions.</summary>
    public TrainOptions Training { get; init; } = new();
    public required string AdapterFolder { get; init; }
    public bool Evaluate { get; init; } = true;
    public int EvalBatch { get; init; } = TuneEngine.DefaultEvalBatch;
    /// <summary>Also rank the labels by likelihood (the constrained metric).</summary>
    public bool LabelLikelihood { get; init; }
    /// <summary>
    /// Recompute each decoder layer in the backward pass instead of keeping its activations (<see cref="CausalLM.GradientCheckpointing"/>,
    /// Llama-family models only), as QLoRA trains: what lets a 4-bit Llama-2-7B step fit in 6 GB (docs/performance.md). The same loss
    /// and gradients within float32 rounding, not bit for bit.
    /// </summary>
    public bool GradientCheckpointing { get; init; }
}

/// <summary>One task's evaluation: its metrics and the per-example predictions they were scored from.</summary>
public sealed record TaskEvaluation(TaskMetrics Metrics, IReadOnlyList<Prediction> Predictions);

/// <summary>What a tuning run gave.</summary>
public sealed record TuneOutcome
{
    /// <summary>Resolved target modules (PEFT target_modules), or the regex when one was given.</summary>
    public required IReadOnlyList<string> Targets { get; init; }
    public required IReadOnlyList<TaskData> Data { get; init; }
    public required string TrainableSummary { get; init; }
    public long TrainableParameters { get; init; }
    public long AllParameters { get; init; }
    public bool FourBit { get; init; }
    /// <summary>Bytes of the quantisable linears in fp32, and as stored (NF4 on a 4-bit base).</summary>
    public long BaseBytesFp32 { get; init; }
    public long BaseBytesStored { get; init; }
    public required TrainResult Training { get; init; }
    public required IReadOnlyList<TaskEvaluation> Tasks { get; init; }

    /// <summary>The run as <c>metrics.json</c> and the printed table show it.</summary>
    public TuningReport Report(string model) => new()
    {
        Model = model, Targets = Targets, FourBit = FourBit, TrainableParameters = TrainableParameters, AllParameters = AllParameters,
        BaseLinearBytesFp32 = BaseBytesFp32, BaseLinearBytesStored = BaseBytesStored, Training = Training, Tasks = [.. Tasks.Select(t => t.Metrics)],
    };
}

/// <summary>The tuning pipeline, used by <c>kvlab tune</c> and by the study: load, tasks, targets, quantise, attach, train, save, evaluate.</summary>
public static class TuneEngine
{
    public const int DefaultEvalBatch = 16;

    /// <summary>Runs <paramref name="job"/>; training steps go to <paramref name="progress"/>, one-line messages to <paramref name="log"/>.</summary>
    public static TuneOutcome Run(TuneJob job, IProgress<WorkProgress>? progress = null, Action<string>? log = null, CancellationToken cancel = default)
    {
        job.Lora.Validate();  // every number before any work
        job.Training.Validate();
        using var loaded = ModelLoader.Load(job.ModelPath, job.Loading);
        var tokenizer = TokenizerLoader.ForModel(job.ModelPath, job.TokenizerPath, job.TokenizerHint, loaded.Config.VocabSize);
        var data = job.Tasks.Select(t => TaskLoader.Load(t.Key, t.Value, job.Selection)).ToList();
        foreach (var d in data) log?.Invoke($"task {d.Name}: {d.Train.Count} train, {d.Eval.Count} eval ({d.SplitNote})");
        IReadOnlyList<string> modules;
        try { modules = job.Lora.TargetRegex is null ? LoraConfig.ResolveTargets(job.Targets, loaded.Config.ModelType) : []; }
        catch (ArgumentException e) { throw new InputException(job.ModelPath, $"targets \"{job.Targets}\": {e.Message}"); }

        var nf4 = loaded.FourBit;  // quantised as it was read; the loaded model owns it
        long fp32Bytes = nf4?.Fp32Bytes ?? LinearBytes(loaded.Model);
        if (nf4 is not null) log?.Invoke($"4-bit base: {nf4.Modules.Count} linears, {nf4.Fp32Bytes:N0} bytes fp32 -> {nf4.Nf4Bytes:N0} bytes NF4 ({(double)nf4.Nf4Bytes / nf4.Fp32Bytes:F4}x)");
        LoraModel lora;
        try { lora = LoraModel.Attach(loaded.Model, job.Lora with { TargetModules = modules }, job.Training.Seed); }
        catch (ArgumentException e) { throw new InputException(job.ModelPath, $"targets \"{job.Lora.TargetRegex ?? job.Targets}\": {e.Message}"); }
        using var _ = lora;
        log?.Invoke(lora.TrainableSummary());
        if (job.GradientCheckpointing)
        {
            if (!loaded.Model.SupportsGradientCheckpointing)
                throw new InputException(job.ModelPath, $"model_type {loaded.Config.ModelType} has no gradient checkpointing (Llama-family models have); drop --gradient-checkpointing");
            loaded.Model.GradientCheckpointing = true;
        }

        var options = job.Training with { MaxLength = Math.Min(job.Training.MaxLength, loaded.Config.MaxPositions) };
        var trained = SftTrainer.Train(lora, tokenizer, [.. data.SelectMany(d => d.Train)], options, progress, log, cancel);
        cancel.ThrowIfCancellationRequested();
        lora.Save(job.AdapterFolder);
        log?.Invoke($"adapter saved to {job.AdapterFolder} ({trained.Steps} steps, {trained.TokensPerSecond:F0} tokens/s)");
        var tasks = job.Evaluate ? Evaluate(loaded.Model, tokenizer, data, job.EvalBatch, job.LabelLikelihood, log, cancel) : [];
        return new TuneOutcome
        {
            Targets = job.Lora.TargetRegex is string re ? [re] : modules, Data = data, TrainableSummary = lora.TrainableSummary(),
            TrainableParameters = lora.TrainableCount, AllParameters = lora.AllCount, FourBit = nf4 is not null,
            BaseBytesFp32 = fp32Bytes, BaseBytesStored = nf4?.Nf4Bytes ?? fp32Bytes, Training = trained, Tasks = tasks,
        };
    }

    /// <summary>Exact-match evaluation of every task (and the label-likelihood metric when asked), one log line per task.</summary>
    public static List<TaskEvaluation> Evaluate(CausalLM model, ITokenizer tokenizer, IEnumerable<TaskData> tasks, int batch, bool labelLikelihood,
        Action<string>? log = null, CancellationToken cancel = default)
    {
        var results = new List<TaskEvaluation>();
        foreach (var task in tasks)
        {
            cancel.ThrowIfCancellationRequested();
            var started = System.Diagnostics.Stopwatch.StartNew();
            var predictions = TaskEvaluator.Predict(model, tokenizer, task.Eval, labelLikelihood ? task.Labels : null, TaskEvaluator.MaxNewTokens, batch);
            var m = TaskEvaluator.Score(task.Name, predictions, task.Labels);
            log?.Invoke($"evaluated {task.Name}: {m.Count} examples in {started.Elapsed.TotalSeconds:F1} s, accuracy {m.Accuracy:F3}");
            results.Add(new TaskEvaluation(m, predictions));
        }
        return results;
    }

    /// <summary>Bytes of the linears a 4-bit base quantises (all but the head), in fp32.</summary>
    public static long LinearBytes(CausalLM model) =>
        model.named_modules().Where(m => m.module is TorchSharp.Modules.Linear && m.name != model.UnembeddingModule)
            .Sum(m => FrozenLinear.WeightShape((TorchSharp.Modules.Linear)m.module).Aggregate(4L, (a, b) => a * b));  // frozen ones too
}
