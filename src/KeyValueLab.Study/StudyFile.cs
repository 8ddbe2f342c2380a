using System.Globalization;
using System.Reflection;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using System.Text.RegularExpressions;
using KeyValueLab.Editing;
using KeyValueLab.Evaluation;
using KeyValueLab.Tuning;

namespace KeyValueLab.Study;

/// <summary>
/// A study file as written, read by System.Text.Json (snake_case; an unknown or repeated member is refused), before
/// <see cref="Validate"/> turns it into a <see cref="StudySpec"/>. Absent fields are null; sections start empty.
/// </summary>
public sealed record StudyFile
{
    public string? Name { get; init; }
    public string? Model { get; init; }
    public string? Tokenizer { get; init; }
    /// <summary>Absent = "organism"; an explicit null = no edit data.</summary>
    public string? EditData { get; init; } = "organism";
    public Dictionary<string, string>? Tasks { get; init; }
    public int[]? Seeds { get; init; }
    public EditingFile? Editing { get; init; }
    public TuningFile? Tuning { get; init; }

    /// <summary>How study files are read.</summary>
    public static readonly JsonSerializerOptions Options = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
        AllowDuplicateProperties = false,
        Converters = { new TextOrNumber() },
    };

    /// <summary>Checks every field once, with "FILE: field: problem" errors, and builds the spec.</summary>
    public StudySpec Validate(string file)
    {
        InputException Error(string field, string problem) => new(file, $"{field}: {problem}");
        var warnings = new List<string>();
        void Warn(string field, string text) => warnings.Add($"{file}: {field}: {text}");
        var tasks = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (name, path) in Tasks ?? [])
        {
            string canonical;
            try { canonical = TaskLoader.Canonical(name); }
            catch (ArgumentException e) { throw Error("tasks." + name, e.Message); }
            if (string.IsNullOrEmpty(path)) throw Error("tasks." + name, "must be a path (or \"organism\")");
            if (!tasks.TryAdd(canonical, path)) throw Error("tasks." + name, "task named twice");
        }
        var spec = new StudySpec
        {
            Name = Name ?? "study",
            Model = Model ?? "organism",
            Tokenizer = Tokenizer,
            EditData = EditData,
            Tasks = tasks,
            Seeds = Seeds ?? [1],
        };
        if (spec.Seeds.Count == 0) throw Error("seeds", "give at least one seed");
        if (spec.Seeds.Distinct().Count() != spec.Seeds.Count) throw Error("seeds", "seeds repeat");
        if (Editing is not null) spec = spec with { Editing = Editing.Validate(Error, Warn) };
        if (Tuning is not null) spec = spec with { Tuning = Tuning.Validate(Error) };
        if (spec.Editing is null && spec.Tuning is null) throw new InputException(file, "the study has neither an editing nor a tuning section: nothing to run");
        if (spec.Editing is not null && spec.EditData is null) throw Error("edit_data", "an editing section needs edit_data (a CounterFact/zsRE file or \"organism\")");
        if (spec.Tuning is not null && spec.Tasks.Count == 0) throw Error("tasks", "a tuning section needs tasks (name: path, or name: organism)");
        return spec with { Warnings = warnings };
    }

    internal static int Whole(int? value, int fallback, string field, Func<string, string, InputException> error, int min, int max = int.MaxValue) =>
        value is not int v ? fallback
        : v >= min && v <= max ? v
        : throw error(field, $"must be a whole number in [{min}, {(max == int.MaxValue ? "∞" : max.ToString(CultureInfo.InvariantCulture))}], not {v}");

    internal static double Number(double? value, double fallback, string field, Func<string, string, InputException> error, double min, double max) =>
        value is not double v ? fallback
        : v >= min && v <= max ? v
        : throw error(field, $"must be a number in [{min.ToString(CultureInfo.InvariantCulture)}, {max.ToString(CultureInfo.InvariantCulture)}], not {v.ToString(CultureInfo.InvariantCulture)}");

    /// <summary>
    /// One line for what System.Text.Json refused, naming the field by its path in the file: an unknown or repeated
    /// member, or a value of the wrong type (with what the field takes and what the file has).
    /// </summary>
    internal static InputException Problem(JsonException e, JsonObject root, string file)
    {
        var segments = Segments(e.Path);
        string message = e.Message;
        var quoted = Regex.Match(message, "'([^']*)'");
        if (message.Contains("could not be mapped", StringComparison.Ordinal) && quoted.Success)
        {
            if (segments.Count == 0 || segments[^1] != quoted.Groups[1].Value) segments.Add(quoted.Groups[1].Value);
            var owner = TypeAt(typeof(StudyFile), segments[..^1]);
            string known = owner is null ? "" : $" (known here: {string.Join(", ", JsonNames(owner))})";
            return new InputException(file, $"{Field(segments)}: unknown field{known}");
        }
        if (message.Contains("uplicate", StringComparison.Ordinal))
        {
            if (quoted.Success && (segments.Count == 0 || segments[^1] != quoted.Groups[1].Value)) segments.Add(quoted.Groups[1].Value);
            return new InputException(file, $"{Field(segments)}: appears twice");
        }
        var type = TypeAt(typeof(StudyFile), segments);
        string found = NodeAt(root, segments)?.ToJsonString() ?? "null";
        return new InputException(file, $"{Field(segments)}: must be {Describe(type)}, not {found}");
    }

    private static string Field(IReadOnlyList<string> segments)
    {
        var text = new StringBuilder();
        foreach (string s in segments)
            text.Append(s.StartsWith('[') ? s : (text.Length > 0 ? "." : "") + s);
        return text.Length == 0 ? "(top level)" : text.ToString();
    }

    /// <summary>"$.editing.runs[0].set" → editing, runs, [0], set.</summary>
    private static List<string> Segments(string? path) =>
        path is null ? [] : [.. Regex.Matches(path, @"\['((?:[^']|'')*)'\]|\[\d+\]|[^.\[\]$]+").Select(m => m.Groups[1].Success ? m.Groups[1].Value : m.Value)];

    private static Type? TypeAt(Type type, IEnumerable<string> segments)
    {
        Type? t = type;
        foreach (string s in segments)
        {
            if (t is null) return null;
            t = Nullable.GetUnderlyingType(t) ?? t;
            if (s.StartsWith('[') && Element(t) is { } element) t = element;
            else if (t.IsGenericType && t.GetGenericTypeDefinition() == typeof(Dictionary<,>)) t = t.GetGenericArguments()[1];
            else t = t.GetProperties(BindingFlags.Public | BindingFlags.Instance).FirstOrDefault(p => JsonNamingPolicy.SnakeCaseLower.ConvertName(p.Name) == s)?.PropertyType;
        }
        return t is null ? null : Nullable.GetUnderlyingType(t) ?? t;
    }

    private static Type? Element(Type t) =>
        t.IsArray ? t.GetElementType() : t.IsGenericType && t.GetGenericTypeDefinition() == typeof(List<>) ? t.GetGenericArguments()[0] : null;

    private static IEnumerable<string> JsonNames(Type t) =>
        t.GetProperties(BindingFlags.Public | BindingFlags.Instance).Where(p => p.CanWrite).Select(p => JsonNamingPolicy.SnakeCaseLower.ConvertName(p.Name));

    private static JsonNode? NodeAt(JsonNode? node, IEnumerable<string> segments)
    {
        foreach (string s in segments)
            node = s.StartsWith('[') ? (node is JsonArray a && int.TryParse(s[1..^1], out int i) && i < a.Count ? a[i] : null) : (node as JsonObject)?[s];
        return node;
    }

    private static string Describe(Type? t) =>
        t == typeof(int) ? "a whole number"
        : t == typeof(double) ? "a number"
        : t == typeof(bool) ? "true or false"
        : t == typeof(string) ? "a string"
        : t == typeof(List<string>) ? "a string or a list of strings"
        : t == typeof(int[]) ? "a list of whole numbers"
        : t == typeof(Dictionary<string, string>) ? "a mapping of task name to path (or \"organism\")"
        : t is not null && Element(t) is { } e ? $"a list of {Describe(e)}s".Replace("a list of a ", "a list of ", StringComparison.Ordinal)
        : "a mapping";
}

/// <summary>The editing section as written.</summary>
public sealed record EditingFile
{
    public int? Cases { get; init; }
    public List<RunFile>? Runs { get; init; }
    public string? ZsreTarget { get; init; }
    public int? GenerationPrompts { get; init; }
    public int? GenerationTokens { get; init; }
    public string? StatsCorpus { get; init; }
    public int? StatsSamples { get; init; }
    public LifelongFile? Lifelong { get; init; }

    internal EditingSpec Validate(Func<string, string, InputException> error, Action<string, string> warn)
    {
        const string p = "editing.";
        var d = new EditingSpec();
        var spec = new EditingSpec
        {
            Cases = StudyFile.Whole(Cases, d.Cases, p + "cases", error, 1),
            ZsreTarget = ZsreTarget switch
            {
                null => d.ZsreTarget,
                "answer" => Editing.ZsreTarget.Answer,
                "alt" => Editing.ZsreTarget.Alt,
                _ => throw error(p + "zsre_target", "must be answer or alt"),
            },
            GenerationPrompts = StudyFile.Whole(GenerationPrompts, d.GenerationPrompts, p + "generation_prompts", error, 0, 100),
            GenerationTokens = StudyFile.Whole(GenerationTokens, d.GenerationTokens, p + "generation_tokens", error, 2, 4096),
            StatsCorpus = StatsCorpus,
            StatsSamples = StatsSamples is null ? null : StudyFile.Whole(StatsSamples, 0, p + "stats_samples", error, 1),
        };
        var lifelong = Lifelong?.Validate(p + "lifelong.", error, warn);
        if (Runs is not { Count: > 0 } && lifelong is null)
            throw error(p + "runs", $"give a list of runs, each with a method ({string.Join(", ", EditorFactory.Methods)})");
        var conditions = new List<EditCondition>();
        for (int i = 0; i < (Runs?.Count ?? 0); i++)
            conditions.AddRange((Runs![i] ?? throw error($"{p}runs[{i}]", "must be a mapping")).Validate($"{p}runs[{i}].", error, warn, null));
        RunFile.CheckDistinct(conditions, p + "runs", error);
        return spec with { Conditions = conditions, Lifelong = lifelong };
    }
}

/// <summary>One editing run as written: a method on one or more sides at one or more layer sets.</summary>
public sealed record RunFile
{
    public string? Method { get; init; }
    [JsonConverter(typeof(OneOrMany))] public List<string>? Sides { get; init; }
    [JsonConverter(typeof(OneOrMany))] public List<string>? Side { get; init; }
    /// <summary>One layer set ("1", "0-2", "3,5") or a list of them (one condition each).</summary>
    [JsonConverter(typeof(OneOrMany))] public List<string>? Layers { get; init; }
    public string? Mode { get; init; }
    /// <summary>Hyperparameter overrides, name=value as <c>--set</c> takes them.</summary>
    [JsonConverter(typeof(OneOrMany))] public List<string>? Set { get; init; }
    /// <summary>Sequential modes: requests per editor call (B), checkpoint every M edits (sequential-final), generation-based scores.</summary>
    public int? Chunk { get; init; }
    public int? CheckpointEvery { get; init; }
    public bool? Generation { get; init; }

    /// <summary>The same method, side and layers may appear with different settings (FT at two budgets): a condition is its id, mode and overrides.</summary>
    internal static void CheckDistinct(IReadOnlyList<EditCondition> conditions, string field, Func<string, string, InputException> error)
    {
        var dup = conditions.GroupBy(c => (c.Id, c.Mode, string.Join("\n", c.Overrides.Texts))).FirstOrDefault(g => g.Count() > 1);
        if (dup is not null) throw error(field, $"condition {dup.Key.Id} appears twice with the same settings");
    }

    /// <summary>The conditions of this run. <paramref name="lifelong"/>: the lifelong section's defaults (mode sequential-final, its
    /// chunk, checkpoints and generation setting); null for a run of <c>editing.runs</c> (mode single, or batch for MEMIT).</summary>
    internal IEnumerable<EditCondition> Validate(string q, Func<string, string, InputException> error, Action<string, string> warn, SequenceSpec? lifelong)
    {
        EditorMethod parsed;
        try { parsed = EditorMethod.Parse(Method ?? throw error(q + "method", "missing")); }
        catch (ArgumentException e) { throw error(q + "method", e.Message); }
        string method = parsed.Name;
        var sides = new List<string>([.. Sides ?? [], .. Side ?? []]);
        if (sides.Count == 0) sides.Add(method is "keyrome" or "keymemit" or "keyalphaedit" ? "keys" : "values");
        IReadOnlyList<string?> layers = Layers is { Count: > 0 } ? [.. Layers] : [null];
        string modeName = (Mode ?? (lifelong is not null ? "sequential-final" : method == "memit" ? "batch" : "single")).Trim().ToLowerInvariant();
        EditMode mode;
        try { mode = EditModes.Parse(modeName, note => warn(q + "mode", note)); }
        catch (ArgumentException) { throw error(q + "mode", $"must be one of {string.Join(", ", EditModes.Names)} (sequential: deprecated, = sequential-immediate), not \"{Mode}\""); }
        if (lifelong is not null && mode is EditMode.Single or EditMode.Batch)
            throw error(q + "mode", "a lifelong run is sequential-final or sequential-immediate");
        var sequence = Sequence(q, mode, lifelong, error);
        HyperparameterOverrides overrides;
        try { overrides = HyperparameterOverrides.Parse(method, Set ?? []); }
        catch (ArgumentException e) { throw error(q + "set", e.Message); }
        var conditions = new List<EditCondition>();
        foreach (string side in sides)
        {
            StudySide normalised;
            try { normalised = StudySide.Parse(side); }
            catch (ArgumentException e) { throw error(q + "sides", e.Message); }
            if (method == "rome" && normalised != StudySide.Values) throw error(q + "sides", "ROME edits the values; use method keyrome for the keys");
            if (method == "memit" && normalised != StudySide.Values) throw error(q + "sides", "MEMIT edits the values");
            if (method == "keyrome" && normalised == StudySide.Values) throw error(q + "sides", "Key-ROME edits the keys; use method rome for the values");
            if (method == "alphaedit" && normalised != StudySide.Values) throw error(q + "sides", "AlphaEdit edits the values; use method keyalphaedit for the keys");
            if (method is "keymemit" or "keyalphaedit" && normalised == StudySide.Values)
                throw error(q + "sides", $"{method} edits the keys; use method {method[3..]} for the values");
            foreach (string? layer in layers)
            {
                if (layer is not null)
                {
                    try { EditScope.ParseLayers(layer); }
                    catch (ArgumentException ex) { throw error(q + "layers", ex.Message); }
                }
                conditions.Add(new EditCondition(parsed, normalised, layer, mode, overrides, sequence));
            }
        }
        return conditions;
    }

    /// <summary>A sequential mode's chunk, checkpoints and generation setting (the run's, else the lifelong section's, else B = 1,
    /// no checkpoints, generation scores on); null for single and batch, which take none of them.</summary>
    private SequenceSpec? Sequence(string q, EditMode mode, SequenceSpec? defaults, Func<string, string, InputException> error)
    {
        if (mode is EditMode.Single or EditMode.Batch)
        {
            string? given = Chunk is not null ? "chunk" : CheckpointEvery is not null ? "checkpoint_every" : Generation is not null ? "generation" : null;
            if (given is not null) throw error(q + given, "only a sequential mode (sequential-final, sequential-immediate) takes it");
            return null;
        }
        int chunk = StudyFile.Whole(Chunk, defaults?.Chunk ?? 1, q + "chunk", error, 1, 100_000);
        int? every = CheckpointEvery is null ? defaults?.CheckpointEvery : StudyFile.Whole(CheckpointEvery, 0, q + "checkpoint_every", error, 1, 100_000);
        if (mode == EditMode.SequentialImmediate)
        {
            // Each case is scored right after its own edit: one request per call, and every score is already a curve point.
            if (Chunk is not null && chunk != 1) throw error(q + "chunk", "sequential-immediate edits one case at a time (chunk 1)");
            if (CheckpointEvery is not null) throw error(q + "checkpoint_every", "only sequential-final takes checkpoints");
            return new SequenceSpec(1, null, Generation ?? defaults?.Generation ?? true);
        }
        if (every is int m && m % chunk != 0)
            throw error(q + (CheckpointEvery is null ? "chunk" : "checkpoint_every"), $"checkpoints every {m} edits must be a multiple of the chunk size {chunk}");
        return new SequenceSpec(chunk, every, Generation ?? defaults?.Generation ?? true);
    }
}

/// <summary>The lifelong section as written (<c>editing.lifelong</c>): N edits per replicate in chunks of B, checkpoints every M,
/// generation scores or not, and its runs (mode sequential-final unless a run says sequential-immediate).</summary>
public sealed record LifelongFile
{
    public int? Edits { get; init; }
    public int? Chunk { get; init; }
    public int? CheckpointEvery { get; init; }
    public bool? Generation { get; init; }
    public List<RunFile>? Runs { get; init; }

    internal LifelongSpec Validate(string p, Func<string, string, InputException> error, Action<string, string> warn)
    {
        var d = new LifelongSpec();
        int edits = StudyFile.Whole(Edits, d.Edits, p + "edits", error, 1, 1_000_000);
        int chunk = StudyFile.Whole(Chunk, 10, p + "chunk", error, 1, 100_000);
        int? every = CheckpointEvery is null ? null : StudyFile.Whole(CheckpointEvery, 0, p + "checkpoint_every", error, 1, 100_000);
        if (every is int m && (m % chunk != 0 || m >= edits))
            throw error(p + "checkpoint_every", $"must be a multiple of the chunk size {chunk} below edits ({edits}), not {m}");
        if (Runs is not { Count: > 0 }) throw error(p + "runs", "give a list of runs, e.g. {method: memit, layers: \"0-1\"}");
        var defaults = new SequenceSpec(chunk, every, Generation ?? true);
        var conditions = new List<EditCondition>();
        for (int i = 0; i < Runs.Count; i++)
            conditions.AddRange((Runs[i] ?? throw error($"{p}runs[{i}]", "must be a mapping")).Validate($"{p}runs[{i}].", error, warn, defaults));
        RunFile.CheckDistinct(conditions, p + "runs", error);
        return new LifelongSpec { Edits = edits, Conditions = conditions };
    }
}

/// <summary>The tuning section as written.</summary>
public sealed record TuningFile
{
    [JsonConverter(typeof(OneOrMany))] public List<string>? Targets { get; init; }
    public bool? FourBit { get; init; }
    public int? R { get; init; }
    public double? Alpha { get; init; }
    public double? Dropout { get; init; }
    public int? Epochs { get; init; }
    public int? Batch { get; init; }
    public int? GradAccum { get; init; }
    public double? Lr { get; init; }
    public double? WarmupRatio { get; init; }
    public double? MaxGradNorm { get; init; }
    public int? MaxLength { get; init; }
    public bool? AnswerOnlyLoss { get; init; }
    public bool? Packing { get; init; }
    public int? MaxTrain { get; init; }
    public int? MaxEval { get; init; }
    public bool? Shuffle { get; init; }
    public bool? LabelLikelihood { get; init; }
    public int? EvalBatch { get; init; }

    internal TuningSpec Validate(Func<string, string, InputException> error)
    {
        const string p = "tuning.";
        var d = new TuningSpec();
        if (Targets is not { Count: > 0 }) throw error(p + "targets", "give a list of target sets, e.g. [\"q,v\", \"q,v,values\"]");
        if (Targets.Distinct().Count() != Targets.Count) throw error(p + "targets", "a target set appears twice");
        return new TuningSpec
        {
            Targets = Targets,
            FourBit = FourBit ?? d.FourBit,
            R = StudyFile.Whole(R, d.R, p + "r", error, 1),
            Alpha = StudyFile.Number(Alpha, d.Alpha, p + "alpha", error, 1e-9, 1e9),
            Dropout = StudyFile.Number(Dropout, d.Dropout, p + "dropout", error, 0, 0.999),
            Epochs = StudyFile.Whole(Epochs, d.Epochs, p + "epochs", error, 1),
            Batch = StudyFile.Whole(Batch, d.Batch, p + "batch", error, 1),
            GradAccum = StudyFile.Whole(GradAccum, d.GradAccum, p + "grad_accum", error, 1),
            Lr = StudyFile.Number(Lr, d.Lr, p + "lr", error, 1e-12, 10),
            WarmupRatio = StudyFile.Number(WarmupRatio, d.WarmupRatio, p + "warmup_ratio", error, 0, 1),
            MaxGradNorm = StudyFile.Number(MaxGradNorm, d.MaxGradNorm, p + "max_grad_norm", error, 1e-12, 1e9),
            MaxLength = StudyFile.Whole(MaxLength, d.MaxLength, p + "max_length", error, 2),
            AnswerOnlyLoss = AnswerOnlyLoss ?? d.AnswerOnlyLoss,
            Packing = Packing ?? d.Packing,
            MaxTrain = StudyFile.Whole(MaxTrain, d.MaxTrain, p + "max_train", error, 1),
            MaxEval = StudyFile.Whole(MaxEval, d.MaxEval, p + "max_eval", error, 1),
            Shuffle = Shuffle ?? d.Shuffle,
            LabelLikelihood = LabelLikelihood ?? d.LabelLikelihood,
            EvalBatch = StudyFile.Whole(EvalBatch, d.EvalBatch, p + "eval_batch", error, 1),
        };
    }
}

/// <summary>A string field that also takes a number as written (YAML's <c>layers: 2</c>, <c>name: 2024</c>).</summary>
internal sealed class TextOrNumber : JsonConverter<string>
{
    public override string? Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) => reader.TokenType switch
    {
        JsonTokenType.String => reader.GetString(),
        JsonTokenType.Number => Encoding.UTF8.GetString(reader.HasValueSequence ? System.Buffers.BuffersExtensions.ToArray(reader.ValueSequence) : reader.ValueSpan),
        _ => throw new JsonException("expected a string"),
    };

    public override void Write(Utf8JsonWriter writer, string value, JsonSerializerOptions options) => writer.WriteStringValue(value);
}

/// <summary>A list of strings that may be written as one string (<c>sides: keys</c>, <c>set: steps=3</c>).</summary>
internal sealed class OneOrMany : JsonConverter<List<string>>
{
    private static readonly TextOrNumber Item = new();

    public override List<string> Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TokenType != JsonTokenType.StartArray) return [Item.Read(ref reader, typeof(string), options)!];
        var list = new List<string>();
        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray) list.Add(Item.Read(ref reader, typeof(string), options)!);
        return list;
    }

    public override void Write(Utf8JsonWriter writer, List<string> value, JsonSerializerOptions options) => JsonSerializer.Serialize(writer, value.ToArray());
}

/// <summary>Writes a condition's overrides as the list of name=value texts they were parsed from (the canonical study JSON).</summary>
internal sealed class OverridesAsGiven : JsonConverter<HyperparameterOverrides>
{
    public override HyperparameterOverrides Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
        throw new NotSupportedException("overrides are parsed with their method (HyperparameterOverrides.Parse), not read alone");

    public override void Write(Utf8JsonWriter writer, HyperparameterOverrides value, JsonSerializerOptions options)
    {
        writer.WriteStartArray();
        foreach (string text in value.Texts) writer.WriteStringValue(text);
        writer.WriteEndArray();
    }
}
