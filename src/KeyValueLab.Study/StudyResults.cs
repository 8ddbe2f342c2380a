using System.Text.Json.Nodes;
using KeyValueLab.Evaluation;

namespace KeyValueLab.Study;

/// <summary>
/// One finished editing unit: one edit case under one condition (method × side × layers × seed). Pre/Post are the
/// case-level metrics of SPEC §3 before and after the edit (null fields where a case cannot have a metric).
/// </summary>
public sealed record EditUnitResult
{
    /// <summary>Editor: FT, FT-L, ROME, KeyROME, MEMIT.</summary>
    public required string Method { get; init; }
    /// <summary>Which FFN matrix was changed: "keys" (GPT-2/GPT-J), "keys:up", "keys:gate" (Llama) or "values".</summary>
    public required string Side { get; init; }
    /// <summary>Edited layers as written in the study file, e.g. "1" or "1,2,3".</summary>
    public required string Layers { get; init; }
    public required int Seed { get; init; }
    /// <summary>"single" (each case on the original model) or "batch" (all the condition's cases in one call, MEMIT).</summary>
    public required string Mode { get; init; }
    public required string CaseId { get; init; }
    /// <summary>The model organism (replication unit) the unit ran on; empty when the study has one model.</summary>
    public string Organism { get; init; } = "";
    /// <summary>What tells this condition from others of the same method, side, layers and mode (e.g. "lr=5e-3" for a
    /// second FT budget); empty when nothing does.</summary>
    public string Variant { get; init; } = "";
    public required CaseMetrics Pre { get; init; }
    public required CaseMetrics Post { get; init; }
    /// <summary>Per-prompt L(new) and L(true) before and after the edit, from which Pre/Post ES, PS and NS can be
    /// recomputed (null in stores written before they were kept).</summary>
    public CaseLosses? PreLosses { get; init; }
    public CaseLosses? PostLosses { get; init; }
    /// <summary>Wall seconds of the edit itself (a batch's time divided by its size).</summary>
    public required double Seconds { get; init; }
    /// <summary>CPU seconds of the edit itself (<see cref="CpuTime"/>: the worker thread's with one torch thread, else the
    /// process's; a batch's divided by its size): what the timing claim compares, as contention does not inflate it.
    /// Null in stores written before it was kept.</summary>
    public double? CpuSeconds { get; init; }
    public long ParametersChanged { get; init; }
}

/// <summary>One case of a lifelong unit: its scores on the unedited model and on the model after the whole sequence
/// (sequential-final) or right after its own edit (sequential-immediate), the per-prompt losses behind ES/PS/NS, and the
/// generation-based scores (null when not taken).</summary>
public sealed record LifelongCaseResult
{
    public required string CaseId { get; init; }
    public required CaseMetrics Pre { get; init; }
    public required CaseMetrics Post { get; init; }
    public CaseLosses? PreLosses { get; init; }
    public CaseLosses? PostLosses { get; init; }
    public GenerationMetrics? Generation { get; init; }
}

/// <summary>Means (×100) over every case edited so far after <see cref="Edits"/> edits, by metric key (es, ps, ns, gen_es,
/// gen_ps, gen_ns; a metric no case has is absent). The last checkpoint is the final model.</summary>
public sealed record LifelongCheckpoint(int Edits, IReadOnlyDictionary<string, double> Means);

/// <summary>
/// One finished lifelong unit: one sequence of edits (one editor, one side, one replicate) on one model, never restored
/// in between; stored whole when the sequence ends (a killed run re-runs the whole sequence).
/// </summary>
public sealed record LifelongUnitResult
{
    public required string Method { get; init; }
    public required string Side { get; init; }
    public required string Layers { get; init; }
    public required int Seed { get; init; }
    /// <summary>"sequential-final" or "sequential-immediate".</summary>
    public required string Mode { get; init; }
    public string Organism { get; init; } = "";
    public string Variant { get; init; } = "";
    /// <summary>"lifelong" (the study's lifelong arm, cases of its own) or "editing" (a sequential run of <c>editing.runs</c> on the single-edit cases).</summary>
    public string Arm { get; init; } = "lifelong";
    public required int Chunk { get; init; }
    public int? CheckpointEvery { get; init; }
    public required IReadOnlyList<LifelongCaseResult> Cases { get; init; }
    public required IReadOnlyList<LifelongCheckpoint> Checkpoints { get; init; }
    /// <summary>Wall seconds of the editor calls (all chunks) and of the whole unit (scoring included).</summary>
    public required double Seconds { get; init; }
    public double WallSeconds { get; init; }
    public IReadOnlyList<double> ChunkSeconds { get; init; } = [];
    /// <summary>Weights that differ from the unedited model's after the whole sequence.</summary>
    public long ParametersChanged { get; init; }
}

/// <summary>One task's evaluation inside a tuning unit; <see cref="Correct"/> is per evaluation example, in a fixed order
/// (the same examples in the same order for every target and seed, so targets can be compared pairwise and seeds paired).</summary>
public sealed record TaskOutcome(string Task, int Count, double Accuracy, double MacroF1, double? LabelLikelihoodAccuracy, IReadOnlyList<bool> Correct)
{
    /// <summary>Gold label of every example, in <see cref="Correct"/>'s order (empty in stores written before it was kept).</summary>
    public IReadOnlyList<string> Gold { get; init; } = [];
    /// <summary>The trimmed generation of every example, in the same order: enough to tell an adapter that always gives one answer.</summary>
    public IReadOnlyList<string> Predicted { get; init; } = [];
}

/// <summary>One finished tuning unit: one LoRA training run (targets × seed) and its evaluation on every task.</summary>
public sealed record TuneUnitResult
{
    /// <summary>Short name of the target set as the paper writes it: "q,v", "+keys:up", "+keys:gate", "+values".</summary>
    public required string Label { get; init; }
    /// <summary>Resolved target module names (PEFT target_modules).</summary>
    public required IReadOnlyList<string> Targets { get; init; }
    public required int Seed { get; init; }
    /// <summary>The model organism (replication unit) the run trained on; empty when the study has one model.</summary>
    public string Organism { get; init; } = "";
    public bool FourBit { get; init; }
    public long TrainableParameters { get; init; }
    public long AllParameters { get; init; }
    public double TrainSeconds { get; init; }
    public double TokensPerSecond { get; init; }
    /// <summary>Peak resident set of the process during the run (bytes), 0 when unknown.</summary>
    public long PeakResidentBytes { get; init; }
    public long BaseBytesFp32 { get; init; }
    public long BaseBytesStored { get; init; }
    public IReadOnlyList<double> EpochLosses { get; init; } = [];
    public required IReadOnlyList<TaskOutcome> Tasks { get; init; }
}

/// <summary>What the report says about the run itself.</summary>
public sealed record StudyInfo
{
    public required string Name { get; init; }
    /// <summary>Model path or "organism:&lt;hash&gt;", and its parameter fingerprint.</summary>
    public required string Model { get; init; }
    public string ModelType { get; init; } = "";
    public string ModelFingerprint { get; init; } = "";
    public string EditData { get; init; } = "";
    public string CreatedUtc { get; init; } = "";
    public string Host { get; init; } = "";
    /// <summary>kvlab, TorchSharp, libtorch and .NET versions.</summary>
    public string Versions { get; init; } = "";
    /// <summary>The resolved study file (grid and hyperparameters).</summary>
    public JsonObject Config { get; init; } = [];
    /// <summary>Sum of the units' wall times and the study's elapsed time when known.</summary>
    public double UnitSeconds { get; init; }
    public int UnitsDone { get; init; }
    public int UnitsTotal { get; init; }
}

/// <summary>Everything a report is built from; read back from the results store by <c>kvlab report</c>.</summary>
public sealed record StudyResults(StudyInfo Info, IReadOnlyList<EditUnitResult> Edits, IReadOnlyList<TuneUnitResult> Tunes)
{
    /// <summary>The lifelong units (sequences of edits), empty when the study has none.</summary>
    public IReadOnlyList<LifelongUnitResult> Lifelong { get; init; } = [];
}
