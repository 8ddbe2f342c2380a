using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using KeyValueLab.Editing;
using KeyValueLab.Evaluation;
using KeyValueLab.Memory;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace KeyValueLab.Study;

/// <summary>An editor method of a study, parsed once where the study is read: one of <see cref="EditorFactory.Methods"/> ("key-rome" = keyrome).</summary>
[JsonConverter(typeof(AsText<EditorMethod>))]
public sealed record EditorMethod
{
    private EditorMethod(string name) => Name = name;

    /// <summary>The method's name as <see cref="EditorFactory"/> takes it.</summary>
    public string Name { get; }

    /// <summary>ArgumentException "unknown editor …" for a name <see cref="EditorFactory"/> does not know.</summary>
    public static EditorMethod Parse(string text)
    {
        string name = text.Trim().ToLowerInvariant();
        if (name == "key-rome") name = "keyrome";
        return EditorFactory.Methods.Contains(name) ? new(name) : throw new ArgumentException($"unknown editor \"{name}\" (known: {string.Join(", ", EditorFactory.Methods)})");
    }

    public override string ToString() => Name;
}

/// <summary>The FFN side a study condition edits: the values, the keys, or one of Llama's key matrices ("keys:up", "keys:gate").</summary>
[JsonConverter(typeof(AsText<StudySide>))]
public sealed record StudySide(EditSide Side, KeyKind? Keys = null)
{
    public static StudySide Values { get; } = new(EditSide.Values);

    /// <summary>The editor's key kinds: "up", "gate", or null for every key matrix.</summary>
    public string? KeyKinds => Keys?.ToString().ToLowerInvariant();

    /// <summary>Parses a study file's side (keys, keys:up/up/up_proj, keys:gate/gate/gate_proj, values/down_proj); ArgumentException otherwise.</summary>
    public static StudySide Parse(string text) => text.Trim().ToLowerInvariant() switch
    {
        "keys" or "key" => new(EditSide.Keys),
        "keys:up" or "up" or "up_proj" => new(EditSide.Keys, KeyKind.Up),
        "keys:gate" or "gate" or "gate_proj" => new(EditSide.Keys, KeyKind.Gate),
        "values" or "value" or "down_proj" => Values,
        _ => throw new ArgumentException($"unknown side \"{text}\" (keys, keys:up, keys:gate, values)"),
    };

    /// <summary>"values", "keys", "keys:up" or "keys:gate": the text unit ids and the results store keep.</summary>
    public override string ToString() => Side == EditSide.Values ? "values" : Keys is null ? "keys" : $"keys:{KeyKinds}";
}

/// <summary>Writes a typed value as its text (<c>ToString</c>), so canonical JSON and study hashes stay what the strings gave.</summary>
internal sealed class AsText<T> : JsonConverter<T> where T : class
{
    public override T Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
        throw new NotSupportedException($"{typeof(T).Name} is parsed where a study is read, not read alone");

    public override void Write(Utf8JsonWriter writer, T value, JsonSerializerOptions options) => writer.WriteStringValue(value.ToString());
}

/// <summary>One editing condition of the grid: an editor on one side of the FFN at one set of layers.</summary>
/// <param name="Method">The editor (ft, ft-l, ft-bf, rome, keyrome, memit, …).</param>
/// <param name="Side">keys, keys:up, keys:gate or values (ROME/MEMIT: values; Key-ROME: keys…).</param>
/// <param name="Layers">Layers as "1", "0-2" or "3,5"; null = the hyperparameter file's (published) layers.</param>
/// <param name="Mode">single (each case on the original model) or batch (all of a seed's cases in one call).</param>
/// <param name="Overrides">Hyperparameter overrides (the run's <c>set:</c>), parsed for the method; stored as given.</param>
/// <param name="Sequence">Chunks, checkpoints and generation scores of a sequential mode (sequential-final, sequential-immediate); null otherwise.</param>
public sealed record EditCondition(EditorMethod Method, StudySide Side, string? Layers, EditMode Mode,
    [property: JsonConverter(typeof(OverridesAsGiven))] HyperparameterOverrides Overrides,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] SequenceSpec? Sequence = null)
{
    /// <summary>True for sequential-final and sequential-immediate: one unit edits all the condition's cases on one model.</summary>
    [JsonIgnore] public bool IsSequential => Mode is EditMode.SequentialFinal or EditMode.SequentialImmediate;

    /// <summary>Stable name used in unit ids, e.g. "ft/keys:up/L1".</summary>
    public string Id => $"{Method}/{Side}/L{Layers ?? "default"}";
}

/// <summary>Editing half of a study: conditions × seeds × cases.</summary>
public sealed record EditingSpec
{
    public IReadOnlyList<EditCondition> Conditions { get; init; } = [];
    /// <summary>Cases per seed (per organism on the built-in study): one permutation of the dataset, seeded by the first seed,
    /// is cut into one block per seed, so no case is drawn under two seeds (shorter blocks when the data is too short).</summary>
    public int Cases { get; init; } = 50;
    /// <summary>zsRE: insert answers[0] (answer, ROME/MEMIT) or alt (EasyEdit).</summary>
    public ZsreTarget ZsreTarget { get; init; } = ZsreTarget.Answer;
    public int GenerationPrompts { get; init; } = 1;
    public int GenerationTokens { get; init; } = 40;
    /// <summary>Text for ROME/MEMIT/Key-ROME statistics: "generated", a file, or "organism" (the organism's corpus).</summary>
    public string? StatsCorpus { get; init; }
    public int? StatsSamples { get; init; }
    /// <summary>The lifelong arm: sequences of edits on cases of their own (null = none).</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public LifelongSpec? Lifelong { get; init; }
}

/// <summary>How a sequential condition edits: <see cref="Chunk"/> requests per editor call (B), scores of every case edited so
/// far after every <see cref="CheckpointEvery"/> edits (M, a multiple of B; sequential-final only; null = at the end only), and
/// whether generation-based scores (gen_es, gen_ps, gen_ns) are taken.</summary>
public sealed record SequenceSpec(int Chunk, int? CheckpointEvery, bool Generation);

/// <summary>
/// The lifelong arm of a study: every condition edits the same <see cref="Edits"/> cases of each replicate in sequence on
/// one model (one unit per condition and replicate). Its cases are drawn after the single-edit cases of the same
/// permutation; where too few are left, a replicate's sequence goes on with that replicate's own single-edit cases
/// (each sequence edits a fresh copy of the model; <see cref="StudyPlan.Build"/>).
/// </summary>
public sealed record LifelongSpec
{
    public int Edits { get; init; } = 40;
    public IReadOnlyList<EditCondition> Conditions { get; init; } = [];
}

/// <summary>What a command line changes in a study: null (or empty) fields keep the study's.</summary>
public sealed record StudyOverrides
{
    public string? Model { get; init; }
    public string? Tokenizer { get; init; }
    public string? EditData { get; init; }
    /// <summary>Task name → path; replaces the study's tasks.</summary>
    public IReadOnlyDictionary<string, string>? Tasks { get; init; }
    public IReadOnlyList<int>? Seeds { get; init; }
}

/// <summary>Tuning half of a study: LoRA target sets × seeds on a multi-task mixture.</summary>
public sealed record TuningSpec
{
    /// <summary>Target sets as <c>kvlab tune --targets</c> takes them ("q,v", "q,v,keys:up", …).</summary>
    public IReadOnlyList<string> Targets { get; init; } = [];
    public bool FourBit { get; init; } = true;
    public int R { get; init; } = 8;
    public double Alpha { get; init; } = 16;
    public double Dropout { get; init; } = 0.1;
    public int Epochs { get; init; } = 5;
    public int Batch { get; init; } = 32;
    public int GradAccum { get; init; } = 2;
    public double Lr { get; init; } = 2e-4;
    public double WarmupRatio { get; init; } = 0.03;
    public double MaxGradNorm { get; init; } = 0.3;
    public int MaxLength { get; init; } = 512;
    public bool AnswerOnlyLoss { get; init; }
    /// <summary>Pack examples into rows of <see cref="MaxLength"/> (the paper's TRL packing); false: one example a row (<see cref="KeyValueLab.Tuning.TrainOptions.Packing"/>).</summary>
    public bool Packing { get; init; } = true;
    public int MaxTrain { get; init; } = 5000;
    public int MaxEval { get; init; } = 1000;
    public bool Shuffle { get; init; } = true;
    public bool LabelLikelihood { get; init; } = true;
    public int EvalBatch { get; init; } = 16;
}

/// <summary>
/// A study file: what model and data, which editing and tuning grid, which seeds. Read from JSON or YAML
/// (snake_case keys), every field checked with the file's name in the message; unknown keys are refused so a
/// typo never silently falls back to a default. <see cref="Hash"/> identifies the resolved grid in the results store.
/// </summary>
public sealed record StudySpec
{
    public string Name { get; init; } = "study";
    /// <summary>"organism" (the built-in Llama-style organism), "organism:gpt2", or an HF folder / llama2.c file.</summary>
    public string Model { get; init; } = "organism";
    public string? Tokenizer { get; init; }
    /// <summary>"organism" or a CounterFact/zsRE file; null = no editing.</summary>
    public string? EditData { get; init; } = "organism";
    /// <summary>Task name → path ("organism" = the organism's BoolQ/COPA/CB).</summary>
    public IReadOnlyDictionary<string, string> Tasks { get; init; } = new Dictionary<string, string>();
    public IReadOnlyList<int> Seeds { get; init; } = [1, 2];
    public EditingSpec? Editing { get; init; }
    public TuningSpec? Tuning { get; init; }
    /// <summary>What reading the file found worth saying but not refusing (a deprecated mode name); not part of the grid.</summary>
    [JsonIgnore] public IReadOnlyList<string> Warnings { get; init; } = [];

    public static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower) },
    };

    /// <summary>
    /// <paramref name="overrides"/> laid over this study. On the built-in study (<paramref name="builtIn"/>) pointed at another
    /// model, the grid's layers and last-token keying (sized for the organism) give way to the published hyperparameters of
    /// that model's family, and the tuning settings to the paper's; its data must then be given. Throws ArgumentException
    /// when nothing is left to run.
    /// </summary>
    public StudySpec With(StudyOverrides overrides, bool builtIn)
    {
        var result = this;
        if (overrides.Model is string model)
        {
            result = result with { Model = model };
            if (builtIn && !model.StartsWith("organism", StringComparison.Ordinal))
            {
                result = result with
                {
                    EditData = overrides.EditData,
                    Tasks = new Dictionary<string, string>(),
                    Editing = overrides.EditData is null ? null : result.Editing! with
                    {
                        StatsCorpus = "generated",
                        StatsSamples = null,
                        Conditions = [.. result.Editing!.Conditions.Select(c => c with { Layers = null, Overrides = HyperparameterOverrides.None })],
                        Lifelong = result.Editing!.Lifelong is { } arm
                            ? arm with { Conditions = [.. arm.Conditions.Select(c => c with { Layers = null, Overrides = HyperparameterOverrides.None })] }
                            : null,
                    },
                    Tuning = overrides.Tasks is { Count: > 0 } ? new TuningSpec { Targets = result.Tuning!.Targets } : null,
                };
            }
        }
        if (overrides.Tokenizer is not null) result = result with { Tokenizer = overrides.Tokenizer };
        if (overrides.EditData is not null) result = result with { EditData = overrides.EditData };
        if (overrides.Tasks is { Count: > 0 }) result = result with { Tasks = overrides.Tasks };
        if (overrides.Seeds is not null)
        {
            if (overrides.Seeds.Count == 0 || overrides.Seeds.Distinct().Count() != overrides.Seeds.Count) throw new ArgumentException("--seeds: give distinct whole numbers, e.g. 1,2,3");
            result = result with { Seeds = overrides.Seeds };
        }
        if (result.Editing is null && result.Tuning is null)
            throw new ArgumentException("nothing to run: give --edit-data and/or --task for this model, or a --study file");
        return result;
    }

    /// <summary>
    /// The study <c>kvlab study</c> runs without a file: three organisms (one world, training seeds 1–3), 30 cases
    /// each; FT on keys (up, gate) vs values at layer 1 at the published budget and keys:up vs values at a tenfold
    /// learning rate (so "values edit better" does not rest on one budget), ROME vs Key-ROME at layer 1 and a MEMIT
    /// batch over layers 0–1 (keyed on the last token, which this 4-layer model needs, see docs/editing.md), and the
    /// paper's four LoRA runs on a 4-bit base on each organism. Sized for two cores (docs/report.md, "Organisms").
    /// </summary>
    public static StudySpec Default() => new()
    {
        Name = "key-vs-value",
        Model = "organism",
        EditData = "organism",
        Tasks = new Dictionary<string, string> { ["boolq"] = "organism", ["copa"] = "organism", ["cb"] = "organism" },
        Seeds = [1, 2, 3],
        Editing = new EditingSpec
        {
            Cases = 30,
            GenerationPrompts = 1,
            GenerationTokens = 40,
            StatsCorpus = "organism",
            StatsSamples = 1000,
            Conditions =
            [
                new(EditorMethod.Parse("ft"), StudySide.Parse("keys:up"), "1", EditMode.Single, HyperparameterOverrides.None),
                new(EditorMethod.Parse("ft"), StudySide.Parse("keys:gate"), "1", EditMode.Single, HyperparameterOverrides.None),
                new(EditorMethod.Parse("ft"), StudySide.Parse("values"), "1", EditMode.Single, HyperparameterOverrides.None),
                new(EditorMethod.Parse("ft"), StudySide.Parse("keys:up"), "1", EditMode.Single, HyperparameterOverrides.Parse("ft", ["lr=5e-3"])),
                new(EditorMethod.Parse("ft"), StudySide.Parse("values"), "1", EditMode.Single, HyperparameterOverrides.Parse("ft", ["lr=5e-3"])),
                new(EditorMethod.Parse("rome"), StudySide.Parse("values"), "1", EditMode.Single, HyperparameterOverrides.Parse("rome", ["fact_token=\"last\""])),
                new(EditorMethod.Parse("keyrome"), StudySide.Parse("keys:up"), "1", EditMode.Single, HyperparameterOverrides.Parse("keyrome", ["fact_token=\"last\""])),
                new(EditorMethod.Parse("memit"), StudySide.Parse("values"), "0-1", EditMode.Batch, HyperparameterOverrides.Parse("memit", ["fact_token=\"last\"", "mom2_update_weight=350"])),
            ],
            Lifelong = DefaultLifelong(),
        },
        Tuning = new TuningSpec
        {
            Targets = ["q,v", "q,v,keys:up", "q,v,keys:gate", "q,v,values"],
            FourBit = true,
            // Measured on the kind tasks (docs/tuning.md, "The organism's tasks"): lr 1e-2 learnt them on some organisms and not
            // on others; 5e-3 over 4 epochs (152 steps, ~20 CPU-s a run) is steadier.
            Epochs = 4,
            Batch = 16,
            GradAccum = 1,
            Lr = 5e-3,
            AnswerOnlyLoss = true,
            Packing = false,  // one example a row, as the evaluator sees it (docs/tuning.md, "Why the adapters answered nothing")
            MaxTrain = 200,
            MaxEval = 100,
            MaxLength = 256,
        },
    };

    /// <summary>
    /// The built-in study's small lifelong arm: on each organism, <see cref="DefaultLifelongEdits"/> cases of its own edited
    /// sequential-final in chunks of <see cref="DefaultLifelongChunk"/>, scored every <see cref="DefaultLifelongCheckpoint"/>
    /// edits: FT-BF on keys:up vs values at layer 1, MEMIT vs Key-MEMIT and AlphaEdit vs Key-AlphaEdit over layers 0–1 (keyed on
    /// the last token, MEMIT's λ = 350 as the single-edit MEMIT batch, Key-MEMIT's the same strength on the key side: 117). The target optimisation of the
    /// closed-form editors is cut to 10 steps and the "{}" template for the time budget (docs/editing.md, "Lifelong editing on
    /// the organism"); sized in docs/study.md ("The built-in study").
    /// </summary>
    public static LifelongSpec DefaultLifelong()
    {
        var sequence = new SequenceSpec(DefaultLifelongChunk, DefaultLifelongCheckpoint, Generation: true);
        string[] target = ["fact_token=\"last\"", "v_num_grad_steps=10", "context_template_length_params=[]"];
        EditCondition Closed(string method, string side, params string[] extra) =>
            new(EditorMethod.Parse(method), StudySide.Parse(side), "0-1", EditMode.SequentialFinal, HyperparameterOverrides.Parse(method, [.. target, .. extra]), sequence);
        return new LifelongSpec
        {
            Edits = DefaultLifelongEdits,
            Conditions =
            [
                new(EditorMethod.Parse("ft-bf"), StudySide.Parse("keys:up"), "1", EditMode.SequentialFinal, HyperparameterOverrides.None, sequence),
                new(EditorMethod.Parse("ft-bf"), StudySide.Parse("values"), "1", EditMode.SequentialFinal, HyperparameterOverrides.None, sequence),
                Closed("memit", "values", "mom2_update_weight=350"),
                Closed("keymemit", "keys:up", KeySideMemitWeight),
                Closed("alphaedit", "values", TranslatedNullSpace),
                Closed("keyalphaedit", "keys:up", TranslatedNullSpace),
            ],
        };
    }

    public const int DefaultLifelongEdits = 20, DefaultLifelongChunk = 5, DefaultLifelongCheckpoint = 10;

    /// <summary>
    /// MEMIT's λ = 350 carried to the key side at equal strength: λ weighs C = E[xxᵀ] against the edit's own keys, and over
    /// the statistics' inputs E[xᵀC⁻¹x] = tr(C⁻¹C) = the input width, d_ff = 384 on the organism's value side and d = 128 on
    /// its key side, so the same λ regularises the keys 3 times as hard; 350 × 128 / 384 ≈ 117 (docs/editing.md, "Why
    /// Key-MEMIT edits less than MEMIT"). Derived from the organism's widths, not tuned.
    /// </summary>
    private const string KeySideMemitWeight = "mom2_update_weight=117";

    /// <summary>
    /// AlphaEdit's published absolute pair (threshold 2e-2, L2 10) translated to the spectrum on Llama-3-8B's facts, for the
    /// organism: 2e-2 keeps about 70% of the directions there, and L2 = 10 / (0.7 × 14,336 × 2e-2) ≈ 0.05 of k × the cut
    /// (docs/editing.md, "Translated settings"); with the absolute pair the organism's AlphaEdit edits nothing.
    /// </summary>
    private static readonly string[] TranslatedNullSpace = ["nullspace_kept_fraction=0.7", "l2_relative=0.05"];

    /// <summary>The resolved grid as canonical JSON (what the results store keeps and compares on resume).</summary>
    public string Canonical() => JsonSerializer.Serialize(this, Json);

    /// <summary>First 16 hex digits of the SHA-256 of <see cref="Canonical"/>.</summary>
    public string Hash() => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(Canonical())))[..16];

    /// <summary>Reads a study file (.json, .yaml or .yml; other extensions are sniffed: '{' = JSON).</summary>
    public static StudySpec Load(string path)
    {
        string text;
        try
        {
            long length = new FileInfo(path).Length;
            if (length > MaxFileBytes) throw new InputException(path, $"the study file is {length:N0} bytes; a study file is at most {MaxFileBytes:N0}");
            text = InputText.ReadAllText(path);  // strict UTF-8
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new InputException(path, $"cannot read the study file: {e.Message}"); }
        JsonNode? node;
        bool yaml = path.EndsWith(".yaml", StringComparison.OrdinalIgnoreCase) || path.EndsWith(".yml", StringComparison.OrdinalIgnoreCase)
                    || (!path.EndsWith(".json", StringComparison.OrdinalIgnoreCase) && !text.TrimStart().StartsWith('{'));
        try { node = yaml ? YamlToJson(text) : JsonNode.Parse(text, documentOptions: new JsonDocumentOptions { AllowDuplicateProperties = false }); }
        // YamlDotNet also throws InvalidOperationException, and ArgumentException ("The current event is of an unsupported
        // type"), on some malformed documents (both found by InputFuzzTests).
        catch (Exception e) when (e is JsonException or YamlException or InvalidOperationException || (yaml && e is ArgumentException)) { throw new InputException(path, $"not valid {(yaml ? "YAML" : "JSON")}: {e.Message}"); }
        if (node is not JsonObject root) throw new InputException(path, "a study file must be an object (mapping) at the top level");
        return FromJson(root, path);
    }

    /// <summary>Reads a parsed study file as <see cref="StudyFile"/> records and validates them into a spec (a file names what it runs).</summary>
    public static StudySpec FromJson(JsonObject root, string file)
    {
        StudyFile read;
        try { read = root.Deserialize<StudyFile>(StudyFile.Options) ?? throw new InputException(file, "a study file must be an object (mapping) at the top level"); }
        catch (JsonException e) { throw StudyFile.Problem(e, root, file); }
        // A lone UTF-16 surrogate ("\ud800") in a string reaches the deserializer as InvalidOperationException (found by InputFuzzTests).
        catch (InvalidOperationException e) { throw new InputException(file, $"a text value is not valid Unicode: {e.Message}"); }
        return read.Validate(file);
    }

    /// <summary>The largest study file read (a real grid is a few KB).</summary>
    public const long MaxFileBytes = 1 << 20;

    /// <summary>
    /// The most nodes a YAML study file may expand to. Aliases point at shared nodes, which the conversion copies, so a
    /// few hundred bytes of nested anchors ("billion laughs") would otherwise expand exponentially.
    /// </summary>
    public const int MaxYamlNodes = 100_000;

    /// <summary>YAML → JSON nodes: plain scalars become numbers/booleans/null when they read as such, quoted ones stay strings.</summary>
    internal static JsonNode? YamlToJson(string text)
    {
        var stream = new YamlStream();
        stream.Load(new StringReader(text));
        if (stream.Documents.Count == 0) return null;
        int nodes = 0;
        return Convert(stream.Documents[0].RootNode);

        JsonNode? Convert(YamlNode node) => ++nodes > MaxYamlNodes
            ? throw new YamlException(node.Start, node.End, $"the document expands to more than {MaxYamlNodes:N0} nodes (nested aliases?)")
            : node switch
        {
            YamlMappingNode map => Mapping(map),
            YamlSequenceNode seq => new JsonArray([.. seq.Children.Select(Convert)]),
            YamlScalarNode s when s.Style is ScalarStyle.Plain => Plain(s.Value ?? ""),
            YamlScalarNode s => JsonValue.Create(s.Value ?? ""),
            _ => throw new YamlException($"unsupported YAML node at {node.Start}"),
        };

        JsonObject Mapping(YamlMappingNode map)
        {
            var obj = new JsonObject();
            foreach (var (key, value) in map.Children)  // YamlDotNet itself refuses a repeated key
            {
                string name = key is YamlScalarNode { Value: { } k } ? k : throw new YamlException(key.Start, key.End, "a mapping key must be a plain value");
                obj[name] = Convert(value);
            }
            return obj;
        }

        static JsonNode? Plain(string v)
        {
            if (v is "" or "~" or "null" or "Null" or "NULL") return null;
            if (v is "true" or "True" or "TRUE") return JsonValue.Create(true);
            if (v is "false" or "False" or "FALSE") return JsonValue.Create(false);
            if (long.TryParse(v, NumberStyles.Integer, CultureInfo.InvariantCulture, out long l)) return JsonValue.Create(l);
            if (double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out double d) && double.IsFinite(d)) return JsonValue.Create(d);
            return JsonValue.Create(v);
        }
    }
}
