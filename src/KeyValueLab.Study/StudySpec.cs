using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using KeyValueLab.Evaluation;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;
using Editing_ = KeyValueLab.Editing;
using Tuning_ = KeyValueLab.Tuning;

namespace KeyValueLab.Study;

/// <summary>One editing condition of the grid: an editor on one side of the FFN at one set of layers.</summary>
/// <param name="Method">ft, ft-l, rome, keyrome or memit.</param>
/// <param name="Side">"keys", "keys:up", "keys:gate" or "values" (ROME/MEMIT: values; Key-ROME: keys…).</param>
/// <param name="Layers">Layers as "1", "0-2" or "3,5"; null = the hyperparameter file's (published) layers.</param>
/// <param name="Mode">single (each case on the original model) or batch (all of a seed's cases in one call).</param>
/// <param name="Overrides">Hyperparameter overrides "key=json" as <c>--set</c> takes them.</param>
public sealed record EditCondition(string Method, string Side, string? Layers, EditMode Mode, IReadOnlyList<string> Overrides)
{
    /// <summary>Stable name used in unit ids, e.g. "ft/keys:up/L1".</summary>
    public string Id => $"{Method}/{Side}/L{Layers ?? "default"}";
}

/// <summary>Editing half of a study: conditions × seeds × cases.</summary>
public sealed record EditingSpec
{
    public IReadOnlyList<EditCondition> Conditions { get; init; } = [];
    /// <summary>Cases per seed, drawn from the dataset by a permutation seeded with the seed.</summary>
    public int Cases { get; init; } = 50;
    /// <summary>zsRE: insert answers[0] ("answer", ROME/MEMIT) or "alt" (EasyEdit).</summary>
    public string ZsreTarget { get; init; } = "answer";
    public int GenerationPrompts { get; init; } = 1;
    public int GenerationTokens { get; init; } = 40;
    /// <summary>Text for ROME/MEMIT/Key-ROME statistics: "generated", a file, or "organism" (the organism's corpus).</summary>
    public string? StatsCorpus { get; init; }
    public int? StatsSamples { get; init; }
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

    public static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        Converters = { new System.Text.Json.Serialization.JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower) },
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
                        Conditions = [.. result.Editing!.Conditions.Select(c => c with { Layers = null, Overrides = [] })],
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
    /// The study <c>kvlab study</c> runs without a file: the default organism, FT on keys (up, gate) vs values at
    /// layer 1, ROME vs Key-ROME at layer 1 and a MEMIT batch over layers 0–1 (keyed on the last token, which this
    /// 4-layer model needs, see docs/editing.md), and the paper's four LoRA runs on a 4-bit base; two seeds.
    /// Sized to finish in about ten minutes on two cores from a cold cache.
    /// </summary>
    public static StudySpec Default() => new()
    {
        Name = "key-vs-value",
        Model = "organism",
        EditData = "organism",
        Tasks = new Dictionary<string, string> { ["boolq"] = "organism", ["copa"] = "organism", ["cb"] = "organism" },
        Seeds = [1, 2],
        Editing = new EditingSpec
        {
            Cases = 40,
            GenerationPrompts = 1,
            GenerationTokens = 40,
            StatsCorpus = "organism",
            StatsSamples = 1000,
            Conditions =
            [
                new("ft", "keys:up", "1", EditMode.Single, []),
                new("ft", "keys:gate", "1", EditMode.Single, []),
                new("ft", "values", "1", EditMode.Single, []),
                new("rome", "values", "1", EditMode.Single, ["fact_token=\"last\""]),
                new("keyrome", "keys:up", "1", EditMode.Single, ["fact_token=\"last\""]),
                new("memit", "values", "0-1", EditMode.Batch, ["fact_token=\"last\"", "mom2_update_weight=350"]),
            ],
        },
        Tuning = new TuningSpec
        {
            Targets = ["q,v", "q,v,keys:up", "q,v,keys:gate", "q,v,values"],
            FourBit = true,
            Epochs = 4,
            Batch = 8,
            GradAccum = 2,
            Lr = 2e-3,
            AnswerOnlyLoss = true,
            MaxTrain = 500,
            MaxEval = 100,
            MaxLength = 256,
        },
    };

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
            text = File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new InputException(path, $"cannot read the study file: {e.Message}"); }
        JsonNode? node;
        bool yaml = path.EndsWith(".yaml", StringComparison.OrdinalIgnoreCase) || path.EndsWith(".yml", StringComparison.OrdinalIgnoreCase)
                    || (!path.EndsWith(".json", StringComparison.OrdinalIgnoreCase) && !text.TrimStart().StartsWith('{'));
        try { node = yaml ? YamlToJson(text) : JsonNode.Parse(text); }
        catch (Exception e) when (e is JsonException or YamlException) { throw new InputException(path, $"not valid {(yaml ? "YAML" : "JSON")}: {e.Message}"); }
        if (node is not JsonObject root) throw new InputException(path, "a study file must be an object (mapping) at the top level");
        return FromJson(root, path);
    }

    /// <summary>Builds a spec from parsed JSON, starting from empty sections (a file names what it runs).</summary>
    public static StudySpec FromJson(JsonObject root, string file)
    {
        var r = new Reader(file);
        r.Keys(root, "", "name", "model", "tokenizer", "edit_data", "tasks", "seeds", "editing", "tuning");
        var spec = new StudySpec
        {
            Name = r.String(root, "name") ?? "study",
            Model = r.String(root, "model") ?? "organism",
            Tokenizer = r.String(root, "tokenizer"),
            EditData = root.ContainsKey("edit_data") ? r.String(root, "edit_data") : "organism",
            Tasks = r.Tasks(root),
            Seeds = r.Ints(root, "seeds") ?? [1],
        };
        if (spec.Seeds.Count == 0) throw r.Error("seeds", "give at least one seed");
        if (spec.Seeds.Distinct().Count() != spec.Seeds.Count) throw r.Error("seeds", "seeds repeat");
        if (root["editing"] is JsonObject e) spec = spec with { Editing = r.Editing(e) };
        else if (root["editing"] is not null) throw r.Error("editing", "must be a mapping");
        if (root["tuning"] is JsonObject t) spec = spec with { Tuning = r.Tuning(t) };
        else if (root["tuning"] is not null) throw r.Error("tuning", "must be a mapping");
        if (spec.Editing is null && spec.Tuning is null) throw new InputException(file, "the study has neither an editing nor a tuning section: nothing to run");
        if (spec.Editing is not null && spec.EditData is null) throw r.Error("edit_data", "an editing section needs edit_data (a CounterFact/zsRE file or \"organism\")");
        if (spec.Tuning is not null && spec.Tasks.Count == 0) throw r.Error("tasks", "a tuning section needs tasks (name: path, or name: organism)");
        return spec;
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
            if (double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out double d)) return JsonValue.Create(d);
            return JsonValue.Create(v);
        }
    }

    /// <summary>Typed reads with "FILE: field: problem" errors.</summary>
    private sealed class Reader(string file)
    {
        public InputException Error(string field, string problem) => new(file, $"{field}: {problem}");

        public void Keys(JsonObject o, string prefix, params string[] allowed)
        {
            foreach (var (key, _) in o)
                if (!allowed.Contains(key))
                    throw Error(prefix + key, $"unknown field (known here: {string.Join(", ", allowed)})");
        }

        public string? String(JsonObject o, string key, string prefix = "")
        {
            var n = o[key];
            if (n is null) return null;
            if (n is JsonValue v && v.TryGetValue(out string? s)) return s;
            if (n is JsonValue num && (num.TryGetValue(out long _) || num.TryGetValue(out double _))) return num.ToJsonString();
            throw Error(prefix + key, "must be a string");
        }

        public int? Int(JsonObject o, string key, string prefix, int min, int max = int.MaxValue)
        {
            var n = o[key];
            if (n is null) return null;
            if (n is JsonValue v && v.TryGetValue(out double d) && d == Math.Floor(d) && d >= min && d <= max) return (int)d;
            if (n is JsonValue w && w.TryGetValue(out long l) && l >= min && l <= max) return (int)l;
            throw Error(prefix + key, $"must be a whole number in [{min}, {(max == int.MaxValue ? "∞" : max.ToString(CultureInfo.InvariantCulture))}], not {n.ToJsonString()}");
        }

        public double? Double(JsonObject o, string key, string prefix, double min, double max)
        {
            var n = o[key];
            if (n is null) return null;
            if (n is JsonValue v && v.TryGetValue(out double d) && d >= min && d <= max) return d;
            if (n is JsonValue w && w.TryGetValue(out long l) && l >= min && l <= max) return l;
            throw Error(prefix + key, $"must be a number in [{min.ToString(CultureInfo.InvariantCulture)}, {max.ToString(CultureInfo.InvariantCulture)}], not {n.ToJsonString()}");
        }

        public bool? Bool(JsonObject o, string key, string prefix)
        {
            var n = o[key];
            if (n is null) return null;
            if (n is JsonValue v && v.TryGetValue(out bool b)) return b;
            throw Error(prefix + key, "must be true or false");
        }

        public List<int>? Ints(JsonObject o, string key)
        {
            var n = o[key];
            if (n is null) return null;
            if (n is not JsonArray a) throw Error(key, "must be a list of whole numbers");
            var list = new List<int>();
            foreach (var x in a)
                if (x is JsonValue v && v.TryGetValue(out long l) && l is >= int.MinValue and <= int.MaxValue) list.Add((int)l);
                else if (x is JsonValue w && w.TryGetValue(out double d) && d == Math.Floor(d)) list.Add((int)d);
                else throw Error(key, $"must be a list of whole numbers, found {x?.ToJsonString() ?? "null"}");
            return list;
        }

        public List<string> Strings(JsonObject o, string key, string prefix)
        {
            var n = o[key];
            if (n is null) return [];
            if (n is JsonValue single && single.TryGetValue(out string? one)) return [one];
            if (n is not JsonArray a) throw Error(prefix + key, "must be a list of strings");
            var list = new List<string>();
            foreach (var x in a)
                if (x is JsonValue v && v.TryGetValue(out string? s)) list.Add(s);
                else if (x is JsonValue num) list.Add(num.ToJsonString());
                else throw Error(prefix + key, $"must be a list of strings, found {x?.ToJsonString() ?? "null"}");
            return list;
        }

        public Dictionary<string, string> Tasks(JsonObject root)
        {
            var n = root["tasks"];
            var tasks = new Dictionary<string, string>(StringComparer.Ordinal);
            if (n is null) return tasks;
            if (n is not JsonObject map) throw Error("tasks", "must be a mapping of task name to path (or \"organism\")");
            foreach (var (name, value) in map)
            {
                string canonical;
                try { canonical = Tuning_.TaskLoader.Canonical(name); }
                catch (ArgumentException e) { throw Error("tasks." + name, e.Message); }
                if (value is not JsonValue v || !v.TryGetValue(out string? path) || path.Length == 0) throw Error("tasks." + name, "must be a path (or \"organism\")");
                if (!tasks.TryAdd(canonical, path)) throw Error("tasks." + name, "task named twice");
            }
            return tasks;
        }

        public EditingSpec Editing(JsonObject e)
        {
            const string p = "editing.";
            Keys(e, p, "cases", "runs", "zsre_target", "generation_prompts", "generation_tokens", "stats_corpus", "stats_samples");
            var defaults = new EditingSpec();
            var spec = new EditingSpec
            {
                Cases = Int(e, "cases", p, 1) ?? defaults.Cases,
                ZsreTarget = String(e, "zsre_target", p) ?? defaults.ZsreTarget,
                GenerationPrompts = Int(e, "generation_prompts", p, 0, 100) ?? defaults.GenerationPrompts,
                GenerationTokens = Int(e, "generation_tokens", p, 2, 4096) ?? defaults.GenerationTokens,
                StatsCorpus = String(e, "stats_corpus", p),
                StatsSamples = Int(e, "stats_samples", p, 1),
            };
            if (spec.ZsreTarget is not ("answer" or "alt")) throw Error(p + "zsre_target", "must be answer or alt");
            if (e["runs"] is not JsonArray runs || runs.Count == 0) throw Error(p + "runs", "give a list of runs, each with a method (ft, ft-l, rome, keyrome, memit)");
            var conditions = new List<EditCondition>();
            for (int i = 0; i < runs.Count; i++)
            {
                string q = $"{p}runs[{i}].";
                if (runs[i] is not JsonObject run) throw Error(q.TrimEnd('.'), "must be a mapping");
                Keys(run, q, "method", "sides", "side", "layers", "mode", "set");
                string method = (String(run, "method", q) ?? throw Error(q + "method", "missing")).Trim().ToLowerInvariant();
                if (!Editing_.EditorFactory.Methods.Contains(method) && method != "key-rome")
                    throw Error(q + "method", $"unknown editor \"{method}\" (known: {string.Join(", ", Editing_.EditorFactory.Methods)})");
                if (method == "key-rome") method = "keyrome";
                var sides = Strings(run, "sides", q);
                sides.AddRange(Strings(run, "side", q));
                if (sides.Count == 0) sides.Add(method is "keyrome" ? "keys" : "values");
                var layers = run["layers"] is JsonArray ? Strings(run, "layers", q) : run["layers"] is null ? [null!] : [String(run, "layers", q)!];
                var mode = (String(run, "mode", q) ?? (method == "memit" ? "batch" : "single")).ToLowerInvariant() switch
                {
                    "single" => EditMode.Single,
                    "batch" => EditMode.Batch,
                    _ => throw Error(q + "mode", "must be single or batch"),
                };
                var set = Strings(run, "set", q);
                foreach (string s in set)
                    if (s.IndexOf('=') <= 0) throw Error(q + "set", $"\"{s}\": expected key=value");
                foreach (string side in sides)
                {
                    string normalised = NormaliseSide(side, q);
                    if (method == "rome" && normalised != "values") throw Error(q + "sides", "ROME edits the values; use method keyrome for the keys");
                    if (method == "memit" && normalised != "values") throw Error(q + "sides", "MEMIT edits the values");
                    if (method == "keyrome" && normalised == "values") throw Error(q + "sides", "Key-ROME edits the keys; use method rome for the values");
                    foreach (string? layer in layers)
                    {
                        if (layer is not null)
                        {
                            try { Editing_.EditScope.ParseLayers(layer); }
                            catch (ArgumentException ex) { throw Error(q + "layers", ex.Message); }
                        }
                        conditions.Add(new EditCondition(method, normalised, layer, mode, set));
                    }
                }
            }
            var dup = conditions.GroupBy(c => c.Id).FirstOrDefault(g => g.Count() > 1);
            if (dup is not null) throw Error(p + "runs", $"condition {dup.Key} appears twice");
            return spec with { Conditions = conditions };
        }

        private string NormaliseSide(string side, string q) => side.Trim().ToLowerInvariant() switch
        {
            "keys" or "key" => "keys",
            "keys:up" or "up" or "up_proj" => "keys:up",
            "keys:gate" or "gate" or "gate_proj" => "keys:gate",
            "values" or "value" or "down_proj" => "values",
            _ => throw Error(q + "sides", $"unknown side \"{side}\" (keys, keys:up, keys:gate, values)"),
        };

        public TuningSpec Tuning(JsonObject t)
        {
            const string p = "tuning.";
            Keys(t, p, "targets", "four_bit", "r", "alpha", "dropout", "epochs", "batch", "grad_accum", "lr", "warmup_ratio", "max_grad_norm",
                "max_length", "answer_only_loss", "max_train", "max_eval", "shuffle", "label_likelihood", "eval_batch");
            var d = new TuningSpec();
            var targets = Strings(t, "targets", p);
            if (targets.Count == 0) throw Error(p + "targets", "give a list of target sets, e.g. [\"q,v\", \"q,v,values\"]");
            if (targets.Distinct().Count() != targets.Count) throw Error(p + "targets", "a target set appears twice");
            return new TuningSpec
            {
                Targets = targets,
                FourBit = Bool(t, "four_bit", p) ?? d.FourBit,
                R = Int(t, "r", p, 1) ?? d.R,
                Alpha = Double(t, "alpha", p, 1e-9, 1e9) ?? d.Alpha,
                Dropout = Double(t, "dropout", p, 0, 0.999) ?? d.Dropout,
                Epochs = Int(t, "epochs", p, 1) ?? d.Epochs,
                Batch = Int(t, "batch", p, 1) ?? d.Batch,
                GradAccum = Int(t, "grad_accum", p, 1) ?? d.GradAccum,
                Lr = Double(t, "lr", p, 1e-12, 10) ?? d.Lr,
                WarmupRatio = Double(t, "warmup_ratio", p, 0, 1) ?? d.WarmupRatio,
                MaxGradNorm = Double(t, "max_grad_norm", p, 1e-12, 1e9) ?? d.MaxGradNorm,
                MaxLength = Int(t, "max_length", p, 2) ?? d.MaxLength,
                AnswerOnlyLoss = Bool(t, "answer_only_loss", p) ?? d.AnswerOnlyLoss,
                MaxTrain = Int(t, "max_train", p, 1) ?? d.MaxTrain,
                MaxEval = Int(t, "max_eval", p, 1) ?? d.MaxEval,
                Shuffle = Bool(t, "shuffle", p) ?? d.Shuffle,
                LabelLikelihood = Bool(t, "label_likelihood", p) ?? d.LabelLikelihood,
                EvalBatch = Int(t, "eval_batch", p, 1) ?? d.EvalBatch,
            };
        }
    }
}
