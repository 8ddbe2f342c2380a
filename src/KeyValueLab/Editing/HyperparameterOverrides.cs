using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace KeyValueLab.Editing;

/// <summary>Which hyperparameter record an editor reads: FT's, or the closed-form editors' (with AlphaEdit's null-space pair).</summary>
public enum HyperparameterKind { FineTune, LocateEdit, NullSpace, BreadthFirstFineTune }

/// <summary>
/// Hyperparameter overrides (<c>--set name=value</c>, a study run's <c>set:</c>) parsed once, where they enter, into typed
/// changes of the editor's hyperparameter record: each is a <c>with</c> expression on <see cref="FtHyperparameters"/> or
/// <see cref="LocateEditHyperparameters"/>. An unknown name, a value of the wrong type, a non-finite or out-of-range number
/// is refused with one line naming the field; a hyperparameter file's values obey the same rules (<see cref="Validate"/>). The value is JSON (<c>steps=3</c>, <c>layers=[3,4]</c>, <c>fact_token="last"</c>)
/// or, where it does not read as JSON, a bare string (<c>fact_token=last</c>).
/// </summary>
public sealed class HyperparameterOverrides
{
    private readonly IReadOnlyList<Func<FtHyperparameters, FtHyperparameters>> _ft;
    private readonly IReadOnlyList<Func<LocateEditHyperparameters, LocateEditHyperparameters>> _locate;
    private readonly IReadOnlyList<Func<BreadthFirstFtHyperparameters, BreadthFirstFtHyperparameters>> _breadthFirst;

    private HyperparameterOverrides(HyperparameterKind kind, IReadOnlyList<string> texts,
        IReadOnlyList<Func<FtHyperparameters, FtHyperparameters>> ft, IReadOnlyList<Func<LocateEditHyperparameters, LocateEditHyperparameters>> locate,
        IReadOnlyList<Func<BreadthFirstFtHyperparameters, BreadthFirstFtHyperparameters>>? breadthFirst = null)
    {
        (Kind, Texts, _ft, _locate, _breadthFirst) = (kind, texts, ft, locate, breadthFirst ?? []);
    }

    /// <summary>No overrides; applies to any record.</summary>
    public static HyperparameterOverrides None { get; } = new(HyperparameterKind.LocateEdit, [], [], []);

    /// <summary>The record these overrides change.</summary>
    public HyperparameterKind Kind { get; }

    /// <summary>The overrides as given (trimmed), in order: what a study's canonical JSON keeps.</summary>
    public IReadOnlyList<string> Texts { get; }

    public int Count => Texts.Count;

    /// <summary>The record an editor method reads (method names as <see cref="EditorFactory.Methods"/>).</summary>
    public static HyperparameterKind KindOf(string method) => EditorFactory.HparamsFolder(method) switch
    {
        "FT" or "FT-L" => HyperparameterKind.FineTune,
        "FT-BF" => HyperparameterKind.BreadthFirstFineTune,
        "AlphaEdit" or "KeyAlphaEdit" => HyperparameterKind.NullSpace,
        _ => HyperparameterKind.LocateEdit,
    };

    /// <summary>Parses <c>name=value</c> overrides for <paramref name="method"/>'s record; ArgumentException "name: problem" on a bad one.</summary>
    public static HyperparameterOverrides Parse(string method, IEnumerable<string> settings)
    {
        var kind = KindOf(method);
        var texts = new List<string>();
        var ft = new List<Func<FtHyperparameters, FtHyperparameters>>();
        var locate = new List<Func<LocateEditHyperparameters, LocateEditHyperparameters>>();
        var breadthFirst = new List<Func<BreadthFirstFtHyperparameters, BreadthFirstFtHyperparameters>>();
        foreach (string raw in settings)
        {
            string text = raw.Trim();
            int eq = text.IndexOf('=');
            if (eq <= 0) throw new ArgumentException($"\"{text}\": expected name=value, e.g. v_num_grad_steps=40");
            string name = text[..eq].Trim().Replace('-', '_');
            var value = new Value(name, text[(eq + 1)..].Trim());
            if (kind is HyperparameterKind.FineTune)
                ft.Add(FineTune.TryGetValue(name, out var f) ? f(value) : throw Unknown(name, method, FineTune.Keys));
            else if (kind is HyperparameterKind.BreadthFirstFineTune)
                breadthFirst.Add(BreadthFirst.TryGetValue(name, out var b) ? b(value) : throw Unknown(name, method, BreadthFirst.Keys));
            else if (LocateEdit.TryGetValue(name, out var l) || (kind is HyperparameterKind.NullSpace && NullSpace.TryGetValue(name, out l)))
                locate.Add(l(value));
            else throw Unknown(name, method, kind is HyperparameterKind.NullSpace ? [.. LocateEdit.Keys, .. NullSpace.Keys] : LocateEdit.Keys);
            texts.Add(text);
        }
        return texts.Count == 0 ? None : new HyperparameterOverrides(kind, texts, ft, locate, breadthFirst);
    }

    public FtHyperparameters ApplyTo(FtHyperparameters hp) => Check(HyperparameterKind.FineTune)._ft.Aggregate(hp, (h, change) => change(h));

    public BreadthFirstFtHyperparameters ApplyTo(BreadthFirstFtHyperparameters hp) =>
        Check(HyperparameterKind.BreadthFirstFineTune)._breadthFirst.Aggregate(hp, (h, change) => change(h));

    public LocateEditHyperparameters ApplyTo(LocateEditHyperparameters hp) => Check(HyperparameterKind.LocateEdit)._locate.Aggregate(hp, (h, change) => change(h));

    public override string ToString() => string.Join(" ", Texts);

    private HyperparameterOverrides Check(HyperparameterKind record)
    {
        bool fits = Count == 0 || Kind == record || (Kind is HyperparameterKind.NullSpace && record is HyperparameterKind.LocateEdit);
        return fits ? this : throw new ArgumentException($"overrides {this} were given for {Kind} hyperparameters, not {record}");
    }

    /// <summary>
    /// Checks every field of a record read from <paramref name="source"/> (a shipped or a user's hyperparameter file) with the
    /// rules a <c>--set</c> of that field obeys: one line <c>FILE: field: problem</c> (<see cref="InputException"/>) on the first
    /// value out of range (a negative lr, zero steps, a clamp ≤ 0, …).
    /// </summary>
    public static T Validate<T>(T hp, string source) where T : notnull
    {
        var json = HyperparameterFiles.ToJson(hp);
        foreach (var (name, node) in json)
        {
            Action<Value>? rule = hp switch
            {
                FtHyperparameters => FineTune.TryGetValue(name, out var f) ? v => f(v) : null,
                BreadthFirstFtHyperparameters => BreadthFirst.TryGetValue(name, out var b) ? v => b(v) : null,
                LocateEditHyperparameters => LocateEdit.TryGetValue(name, out var l) || NullSpace.TryGetValue(name, out l) ? v => l(v) : null,
                _ => throw new ArgumentException($"no hyperparameter rules for {typeof(T).Name}"),
            };
            if (rule is null) continue;  // method, model_family, source: text, not settings
            try { rule(new Value(name, node?.ToJsonString() ?? "null")); }
            catch (ArgumentException e) { throw new InputException(source, e.Message); }
        }
        return hp;
    }

    private static ArgumentException Unknown(string name, string method, IEnumerable<string> known) =>
        new($"{name}: not a hyperparameter of {method} (known: {string.Join(", ", known)})");

    // Each entry reads its value and returns the `with` expression that sets it.
    private static readonly Dictionary<string, Func<Value, Func<FtHyperparameters, FtHyperparameters>>> FineTune = new(StringComparer.Ordinal)
    {
        ["layers"] = v => { int[] x = v.Layers(); return h => h with { Layers = x }; },
        ["side"] = v => { string x = v.OneOf("keys", "values", "both"); return h => h with { Side = x }; },
        ["key_kinds"] = v => { string? x = v.KeyKinds(); return h => h with { KeyKinds = x }; },
        ["steps"] = v => { int x = v.Int(1); return h => h with { Steps = x }; },
        ["lr"] = v => { double x = v.Double(0, exclusive: true); return h => h with { Lr = x }; },
        ["weight_decay"] = v => { double x = v.Double(0); return h => h with { WeightDecay = x }; },
        ["norm_constraint"] = v => { double? x = v.NullableDouble(0, exclusive: true); return h => h with { NormConstraint = x }; },
        ["early_stop_loss"] = v => { double x = v.Double(0); return h => h with { EarlyStopLoss = x }; },
        ["objective"] = v => { var x = v.Enum<FtObjective>(); return h => h with { Objective = x }; },
    };

    private static readonly Dictionary<string, Func<Value, Func<BreadthFirstFtHyperparameters, BreadthFirstFtHyperparameters>>> BreadthFirst = new(StringComparer.Ordinal)
    {
        ["layers"] = v => { int[] x = v.Layers(); return h => h with { Layers = x }; },
        ["side"] = v => { string x = v.OneOf("keys", "values"); return h => h with { Side = x }; },
        ["key_kinds"] = v => { string? x = v.KeyKinds(); return h => h with { KeyKinds = x }; },
        ["epochs"] = v => { int x = v.Int(1); return h => h with { Epochs = x }; },
        ["batch_size"] = v => { int x = v.Int(1); return h => h with { BatchSize = x }; },
        ["lr"] = v => { double x = v.Double(0, exclusive: true); return h => h with { Lr = x }; },
        ["weight_decay"] = v => { double x = v.Double(0); return h => h with { WeightDecay = x }; },
        ["early_stop_loss"] = v => { double x = v.Double(0); return h => h with { EarlyStopLoss = x }; },
        ["append_eos"] = v => { bool x = v.Bool(); return h => h with { AppendEos = x }; },
        ["shuffle_seed"] = v => { int x = v.Int(int.MinValue); return h => h with { ShuffleSeed = x }; },
    };

    private static readonly Dictionary<string, Func<Value, Func<LocateEditHyperparameters, LocateEditHyperparameters>>> LocateEdit = new(StringComparer.Ordinal)
    {
        ["layers"] = v => { int[] x = v.Layers(); return h => h with { Layers = x }; },
        ["key_kinds"] = v => { string? x = v.KeyKinds(); return h => h with { KeyKinds = x }; },
        ["fact_token"] = v => { var x = v.Enum<FactToken>(); return h => h with { FactToken = x }; },
        ["v_num_grad_steps"] = v => { int x = v.Int(0); return h => h with { VNumGradSteps = x }; },
        ["v_lr"] = v => { double x = v.Double(0, exclusive: true); return h => h with { VLr = x }; },
        ["v_weight_decay"] = v => { double x = v.Double(0); return h => h with { VWeightDecay = x }; },
        ["clamp_norm_factor"] = v => { double x = v.Double(0, exclusive: true); return h => h with { ClampNormFactor = x }; },
        ["kl_factor"] = v => { double x = v.Double(0); return h => h with { KlFactor = x }; },
        ["early_stop_loss"] = v => { double x = v.Double(0); return h => h with { EarlyStopLoss = x }; },
        ["mom2_adjustment"] = v => { bool x = v.Bool(); return h => h with { Mom2Adjustment = x }; },
        ["mom2_update_weight"] = v => { double x = v.Double(0); return h => h with { Mom2UpdateWeight = x }; },
        ["mom2_corpus"] = v => { string x = v.String(); return h => h with { Mom2Corpus = x }; },
        ["mom2_n_samples"] = v => { int x = v.Int(1); return h => h with { Mom2NSamples = x }; },
        ["mom2_sample_tokens"] = v => { int x = v.Int(1); return h => h with { Mom2SampleTokens = x }; },
        ["context_template_length_params"] = v => { int[][] x = v.LengthPairs(); return h => h with { ContextTemplateLengthParams = x }; },
        ["kl_prompts"] = v => { string[] x = v.Strings(); return h => h with { KlPrompts = x }; },
    };

    private static readonly Dictionary<string, Func<Value, Func<LocateEditHyperparameters, LocateEditHyperparameters>>> NullSpace = new(StringComparer.Ordinal)
    {
        // An absolute setting and its relative replacement exclude each other: setting one clears the other, so a --set
        // of the relative key applies on top of a published file's absolute one (a file holding both is refused).
        ["nullspace_threshold"] = v => { double x = v.Double(0, exclusive: true); return h => h with { NullspaceThreshold = x, NullspaceKeptFraction = null }; },
        ["nullspace_kept_fraction"] = v => { double x = v.Fraction(); return h => h with { NullspaceKeptFraction = x, NullspaceThreshold = null }; },
        ["l2"] = v => { double x = v.Double(0); return h => h with { L2 = x, L2Relative = null }; },
        ["l2_relative"] = v => { double x = v.Double(0); return h => h with { L2Relative = x, L2 = null }; },
    };

    /// <summary>One override's value: JSON where it reads as JSON, else the bare text as a string.</summary>
    private sealed class Value
    {
        private readonly string _name;
        private readonly string _text;
        private readonly JsonNode? _node;

        public Value(string name, string text)
        {
            (_name, _text) = (name, text);
            try { _node = JsonNode.Parse(text); }
            catch (JsonException) { _node = JsonValue.Create(text); }
        }

        private ArgumentException Bad(string expected) => new($"{_name}: must be {expected}, not {_text}");

        public int Int(int min) =>
            _node is JsonValue v && v.TryGetValue(out long l) && l >= min && l <= int.MaxValue ? (int)l
            : throw Bad($"a whole number >= {min.ToString(CultureInfo.InvariantCulture)}");

        public double Double(double min, bool exclusive = false)
        {
            string range = $"a finite number {(exclusive ? ">" : ">=")} {min.ToString(CultureInfo.InvariantCulture)}";
            if (_node is not JsonValue v || v.GetValueKind() != JsonValueKind.Number || !v.TryGetValue(out double d) || !double.IsFinite(d)) throw Bad(range);
            return (exclusive ? d > min : d >= min) ? d : throw Bad(range);
        }

        /// <summary>A share in (0, 1].</summary>
        public double Fraction()
        {
            double d = Double(0, exclusive: true);
            return d <= 1 ? d : throw Bad("a finite number > 0 and <= 1");
        }

        public double? NullableDouble(double min, bool exclusive = false) => _node is null ? null : Double(min, exclusive);

        public bool Bool() => _node is JsonValue v && v.TryGetValue(out bool b) ? b : throw Bad("true or false");

        public string String() =>
            _node is JsonValue v && v.TryGetValue(out string? s) && s.Length > 0 ? s : throw Bad("a non-empty string");

        public string OneOf(params string[] allowed)
        {
            string s = _node is JsonValue v && v.TryGetValue(out string? t) ? t : "";
            return allowed.Contains(s, StringComparer.Ordinal) ? s : throw Bad(string.Join(" or ", allowed));
        }

        /// <summary>An enum by its snake_case name, as the hyperparameter files write it.</summary>
        public T Enum<T>() where T : struct, System.Enum
        {
            var names = System.Enum.GetValues<T>().ToDictionary(e => JsonNamingPolicy.SnakeCaseLower.ConvertName(e.ToString()), StringComparer.Ordinal);
            string s = _node is JsonValue v && v.TryGetValue(out string? t) ? t : "";
            return names.TryGetValue(s, out var value) ? value : throw Bad(string.Join(" or ", names.Keys));
        }

        public string? KeyKinds()
        {
            if (_node is null) return null;
            string s = String();
            try { EditScope.ParseKeyKinds(s); }
            catch (ArgumentException) { throw Bad("gate, up or both"); }
            return s;
        }

        public int[] Layers()
        {
            if (_node is JsonArray a && a.Count > 0 && a.All(x => x is JsonValue e && e.TryGetValue(out long l) && l is >= 0 and <= int.MaxValue))
                return [.. a.Select(x => (int)x!.GetValue<long>())];
            if (_node is JsonValue v && v.TryGetValue(out long one) && one is >= 0 and <= int.MaxValue) return [(int)one];
            throw Bad("a list of layer numbers, e.g. [3,4]");
        }

        public string[] Strings() =>
            _node is JsonArray a && a.Count > 0 && a.All(x => x is JsonValue e && e.TryGetValue(out string? _))
                ? [.. a.Select(x => x!.GetValue<string>())]
                : throw Bad("a list of strings, e.g. [\"{} is a\"]");

        public int[][] LengthPairs() =>
            _node is JsonArray a && a.All(p => p is JsonArray pair && pair.Count == 2 && pair.All(x => x is JsonValue e && e.TryGetValue(out long l) && l is >= 0 and <= 4096))
                ? [.. a.Select(p => new[] { (int)p![0]!.GetValue<long>(), (int)p[1]!.GetValue<long>() })]
                : throw Bad("a list of [length, count] pairs, e.g. [[5,10],[10,10]]");
    }
}
