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
        if (Editing is not null) spec = spec with { Editing = Editing.Validate(Error) };
        if (Tuning is not null) spec = spec with { Tuning = Tuning.Validate(Error) };
        if (spec.Editing is null && spec.Tuning is null) throw new InputException(file, "the study has neither an editing nor a tuning section: nothing to run");
        if (spec.Editing is not null && spec.EditData is null) throw Error("edit_data", "an editing section needs edit_data (a CounterFact/zsRE file or \"organism\")");
        if (spec.Tuning is not null && spec.Tasks.Count == 0) throw Error("tasks", "a tuning section needs tasks (name: path, or name: organism)");
        return spec;
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

    internal EditingSpec Validate(Func<string, string, InputException> error)
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
        if (Runs is not { Count: > 0 }) throw error(p + "runs", "give a list of runs, each with a method (ft, ft-l, rome, keyrome, memit)");
        var conditions = new List<EditCondition>();
        for (int i = 0; i < Runs.Count; i++)
            conditions.AddRange((Runs[i] ?? throw error($"{p}runs[{i}]", "must be a mapping")).Validate($"{p}runs[{i}].", error));
        // The same method, side and layers may appear with different settings (FT at two budgets): a condition is its id and its overrides.
        var dup = conditions.GroupBy(c => (c.Id, string.Join("\n", c.Overrides.Texts))).FirstOrDefault(g => g.Count() > 1);
        if (dup is not null) throw error(p + "runs", $"condition {dup.Key.Id} appears twice with the same settings");
        return spec with { Conditions = conditions };
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

    internal IEnumerable<EditCondition> Validate(string q, Func<string, string, InputException> error)
    {
        EditorMethod parsed;
        try { parsed = EditorMethod.Parse(Method ?? throw error(q + "method", "missing")); }
        catch (ArgumentException e) { throw error(q + "method", e.Message); }
        string method = parsed.Name;
        var sides = new List<string>([.. Sides ?? [], .. Side ?? []]);
        if (sides.Count == 0) sides.Add(method is "keyrome" ? "keys" : "values");
        IReadOnlyList<string?> layers = Layers is { Count: > 0 } ? [.. Layers] : [null];
        var mode = (Mode ?? (method == "memit" ? "batch" : "single")).ToLowerInvariant() switch
        {
            "single" => EditMode.Single,
            "batch" => EditMode.Batch,
            _ => throw error(q + "mode", "must be single or batch"),
        };
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
            foreach (string? layer in layers)
            {
                if (layer is not null)
                {
                    try { EditScope.ParseLayers(layer); }
                    catch (ArgumentException ex) { throw error(q + "layers", ex.Message); }
                }
                conditions.Add(new EditCondition(parsed, normalised, layer, mode, overrides));
            }
        }
        return conditions;
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
