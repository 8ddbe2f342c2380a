using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using KeyValueLab.Models;

namespace KeyValueLab.Tuning;

/// <summary>
/// LoRA hyperparameters with PEFT's <c>LoraConfig</c> names and the paper's defaults (r 8, alpha 16, dropout 0.1, no bias).
/// Targets follow PEFT's <c>target_modules</c>: a list of names, each matching a module whose name equals it or
/// ends with "." + it, or (<see cref="TargetRegex"/>) one regular expression that must match the whole module name.
/// </summary>
public sealed record LoraConfig
{
    public int R { get; init; } = 8;
    public double Alpha { get; init; } = 16;
    public double Dropout { get; init; } = 0.1;

    /// <summary>rsLoRA (Kalajdzievski 2023): scale α/√r instead of α/r.</summary>
    public bool UseRsLora { get; init; }

    /// <summary>Names or name suffixes (PEFT list form). Ignored when <see cref="TargetRegex"/> is set.</summary>
    public IReadOnlyList<string> TargetModules { get; init; } = [];

    /// <summary>PEFT's string form of <c>target_modules</c>: a full-match regular expression.</summary>
    public string? TargetRegex { get; init; }

    /// <summary>The model the adapter was trained on (PEFT <c>base_model_name_or_path</c>).</summary>
    public string? BaseModel { get; init; }

    /// <summary>True for GPT-2, whose Conv1D weights the Hugging Face checkpoint stores <c>[in, out]</c> (PEFT <c>fan_in_fan_out</c>).</summary>
    public bool FanInFanOut { get; init; }

    /// <summary>The factor on B·A: α/r, or α/√r with rsLoRA.</summary>
    public double Scale => UseRsLora ? Alpha / Math.Sqrt(R) : Alpha / R;

    /// <summary>Throws <see cref="ArgumentException"/> naming the first setting that is not finite or out of its range (by its
    /// <c>kvlab tune</c> option's name without the dashes), checked before any work.</summary>
    public void Validate()
    {
        if (R < 1) throw new ArgumentException($"r {R} (the LoRA rank) must be >= 1");
        if (!(double.IsFinite(Alpha) && Alpha > 0)) throw new ArgumentException($"alpha {Alpha} must be a finite number > 0");
        if (!(Dropout >= 0 && Dropout < 1)) throw new ArgumentException($"dropout {Dropout} must be in [0, 1)");
    }

    /// <summary>Whether PEFT's rules select module <paramref name="moduleName"/>.</summary>
    public bool Matches(string moduleName) =>
        TargetRegex is not null
            ? Regex.IsMatch(moduleName, $"^(?:{TargetRegex})$")
            : TargetModules.Any(t => moduleName == t || moduleName.EndsWith("." + t, StringComparison.Ordinal));

    /// <summary>
    /// Resolves comma-separated targets for <paramref name="modelType"/>: shortcuts <c>keys</c>, <c>keys:gate</c>,
    /// <c>keys:up</c>, <c>values</c>, <c>q</c>, <c>k</c>, <c>v</c>, <c>o</c> become module names; anything else is kept as a name/suffix.
    /// Example: Llama "q,v,keys:up" → q_proj, v_proj, up_proj.
    /// </summary>
    public static IReadOnlyList<string> ResolveTargets(string targets, string modelType)
    {
        var names = new List<string>();
        foreach (string raw in targets.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            foreach (string name in Shortcut(raw, modelType))
                if (!names.Contains(name)) names.Add(name);
        if (names.Count == 0) throw new ArgumentException("no LoRA targets given");
        return names;
    }

    /// <summary>The paper's shortcuts, from the architecture's description (<see cref="Architecture"/>).</summary>
    private static IEnumerable<string> Shortcut(string target, string modelType)
    {
        var arch = Architectures.Of(modelType);
        var keys = arch.KeyModules;
        switch (target)
        {
            case "keys": return keys.Values;
            case "keys:fc" when keys.ContainsKey("fc"): return [keys["fc"]];
            case "keys:gate" or "keys:up" when keys.Count == 1:
                throw new ArgumentException($"{target}: {modelType} has one key matrix per layer; use \"keys\"");
            case "keys:gate": return [keys["gate"]];
            case "keys:up": return [keys["up"]];
            case "values": return [arch.ValueModule];
            case "q" or "k" or "v" or "o":
                if (arch.AttentionModules.TryGetValue(target, out var module)) return [module];
                throw new ArgumentException($"{target}: {modelType} fuses q, k and v in {arch.FusedAttention}; target \"{arch.FusedAttention!.Split('.')[^1]}\"");
            default: return [target];
        }
    }

    /// <summary>PEFT's <c>adapter_config.json</c>.</summary>
    public JsonObject ToPeftJson()
    {
        var json = new JsonObject
        {
            ["alpha_pattern"] = new JsonObject(),
            ["auto_mapping"] = null,
            ["base_model_name_or_path"] = BaseModel,
            ["bias"] = "none",
            ["fan_in_fan_out"] = FanInFanOut,
            ["inference_mode"] = true,
            ["init_lora_weights"] = true,
            ["layers_pattern"] = null,
            ["layers_to_transform"] = null,
            ["lora_alpha"] = Alpha,
            ["lora_dropout"] = Dropout,
            ["modules_to_save"] = null,
            ["peft_type"] = "LORA",
            ["r"] = R,
            ["rank_pattern"] = new JsonObject(),
            ["revision"] = null,
            ["target_modules"] = TargetRegex is not null ? JsonValue.Create(TargetRegex) : new JsonArray([.. TargetModules.Select(t => (JsonNode?)JsonValue.Create(t))]),
            ["task_type"] = "CAUSAL_LM",
            ["use_dora"] = false,
            ["use_rslora"] = UseRsLora,
        };
        return json;
    }

    private static readonly string[] UnsupportedWhenSet =
    [
        "lora_bias", "use_qalora", "alora_invocation_tokens", "layers_to_transform", "layer_replication", "exclude_modules",
        "modules_to_save", "trainable_token_indices", "target_parameters",
    ];

    private static bool IsSet(JsonNode? node) => node switch
    {
        null => false,
        JsonValue v when v.TryGetValue(out bool b) => b,
        JsonArray a => a.Count > 0,
        JsonObject o => o.Count > 0,
        _ => true,
    };

    /// <summary>
    /// Reads PEFT's <c>adapter_config.json</c>; unsupported settings (DoRA, per-layer ranks, biases, layer selection,
    /// extra trained modules, …) → <see cref="InputException"/>. Fields that only matter when creating an adapter are ignored.
    /// </summary>
    public static LoraConfig FromPeftJson(string json, string source)
    {
        JsonObject obj;
        try { obj = JsonNode.Parse(json) as JsonObject ?? throw new InputException(source, "expected a JSON object"); }
        catch (JsonException e) { throw new InputException(source, $"not valid JSON: {e.Message}", e); }
        string? Str(string key) => obj[key] is JsonValue v && v.TryGetValue(out string? s) ? s : null;
        double Num(string key, double fallback)
        {
            if (obj[key] is null) return fallback;
            if (obj[key] is JsonValue v && v.TryGetValue(out double d)) return d;
            throw new InputException(source, $"\"{key}\" must be a number");
        }
        bool Flag(string key) => obj[key] is JsonValue v && v.TryGetValue(out bool b) && b;

        if (Str("peft_type") is string type && type != "LORA") throw new InputException(source, $"peft_type \"{type}\" is not supported (only LORA)");
        if (Flag("use_dora")) throw new InputException(source, "DoRA adapters (use_dora) are not supported");
        if (Str("bias") is string bias && bias != "none") throw new InputException(source, $"bias \"{bias}\" is not supported (only \"none\")");
        foreach (string pattern in new[] { "rank_pattern", "alpha_pattern" })
            if (obj[pattern] is JsonObject p && p.Count > 0) throw new InputException(source, $"\"{pattern}\" is not supported");
        // Settings of newer PEFT versions (0.21 writes them all, null or false when unused) that change which weights
        // exist or how the adapter acts; any of them set → refuse rather than compute something else.
        foreach (string key in UnsupportedWhenSet)
            if (IsSet(obj[key])) throw new InputException(source, $"\"{key}\" is not supported (only plain LoRA adapters)");
        double r = Num("r", double.NaN);
        if (double.IsNaN(r) || r < 1 || r != Math.Floor(r)) throw new InputException(source, "\"r\" must be a positive integer");

        IReadOnlyList<string> modules = [];
        string? regex = null;
        switch (obj["target_modules"])
        {
            case JsonArray arr:
                modules = [.. arr.Select(n => n is JsonValue v && v.TryGetValue(out string? s) ? s : throw new InputException(source, "\"target_modules\" entries must be strings"))];
                break;
            case JsonValue v when v.TryGetValue(out string? s):
                regex = s;
                break;
            default:
                throw new InputException(source, "\"target_modules\" must be a list of names or a regular expression");
        }
        return new LoraConfig
        {
            R = (int)r, Alpha = Num("lora_alpha", 8), Dropout = Num("lora_dropout", 0), UseRsLora = Flag("use_rslora"),
            TargetModules = modules, TargetRegex = regex, BaseModel = Str("base_model_name_or_path"), FanInFanOut = Flag("fan_in_fan_out"),
        };
    }
}
