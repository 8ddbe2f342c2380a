using System.Reflection;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace KeyValueLab.Editing;

/// <summary>What the fine-tuning editor's loss covers: <c>target</c> (teacher-forced CE over the target tokens) or <c>prompt_last</c> (every target token at the last prompt position).</summary>
public enum FtObjective { Target, PromptLast }

/// <summary>Where a closed-form edit looks up its key: <c>subject_last</c> (ROME's default) or <c>last</c> (the prompt's last token).</summary>
public enum FactToken { SubjectLast, Last }

/// <summary>
/// Hyperparameters of the fine-tuning editor (SPEC §4: ROME's FT/FT+L, EasyEdit's FT-M/FT-L).
/// Files in <c>hparams/FT*/</c> hold the published values per model family.
/// </summary>
public sealed record FtHyperparameters : IFineTuneHyperparameters
{
    public string Method { get; init; } = "FT";
    public string? ModelFamily { get; init; }
    /// <summary>Where the values come from (paper or repository).</summary>
    public string? Source { get; init; }
    public int[] Layers { get; init; } = [0];
    /// <summary>keys, values or both.</summary>
    public string Side { get; init; } = "values";
    /// <summary>Llama keys: gate, up or both (null = both).</summary>
    public string? KeyKinds { get; init; }
    public int Steps { get; init; } = 25;
    public double Lr { get; init; } = 5e-4;
    public double WeightDecay { get; init; }
    /// <summary>L∞ radius ε around the original weights (FT+L); null = unconstrained.</summary>
    public double? NormConstraint { get; init; }
    /// <summary>Stop before a step once the loss is below this.</summary>
    public double EarlyStopLoss { get; init; } = 1e-2;
    public FtObjective Objective { get; init; } = FtObjective.Target;
}

/// <summary>
/// Hyperparameters shared by the closed-form editors ROME, Key-ROME and MEMIT (SPEC §4), with ROME's names.
/// </summary>
public sealed record LocateEditHyperparameters
{
    public string Method { get; init; } = "ROME";
    public string? ModelFamily { get; init; }
    public string? Source { get; init; }
    /// <summary>ROME/Key-ROME: one layer; MEMIT: the range, the last of which holds the target z.</summary>
    public int[] Layers { get; init; } = [0];
    /// <summary>Key-ROME on Llama: gate, up or both (null = both).</summary>
    public string? KeyKinds { get; init; }
    public FactToken FactToken { get; init; } = FactToken.SubjectLast;
    public int VNumGradSteps { get; init; } = 20;
    public double VLr { get; init; } = 0.5;
    public double VWeightDecay { get; init; } = 0.5;
    public double ClampNormFactor { get; init; } = 4;
    public double KlFactor { get; init; } = 0.0625;
    /// <summary>Stop the target-vector optimisation once the total loss is below this (ROME: 5e-2).</summary>
    public double EarlyStopLoss { get; init; } = 5e-2;
    /// <summary>Use C⁻¹ (ROME's mom2_adjustment); false = identity.</summary>
    public bool Mom2Adjustment { get; init; } = true;
    /// <summary>MEMIT's λ in Δ = R Kᵀ(λC + K Kᵀ)⁻¹.</summary>
    public double Mom2UpdateWeight { get; init; } = 15000;
    /// <summary>
    /// Text the second moments are computed over: <c>generated</c> (text the model samples itself, seeded)
    /// or the path of a UTF-8 text file (one sample per non-empty line). ROME used Wikipedia, which we do not ship.
    /// </summary>
    public string Mom2Corpus { get; init; } = "generated";
    public int Mom2NSamples { get; init; } = 100000;
    /// <summary>Tokens per corpus sample (generated length, or truncation of file lines).</summary>
    public int Mom2SampleTokens { get; init; } = 128;
    /// <summary>[length, count] pairs of generated context prefixes, as ROME's context_template_length_params.</summary>
    public int[][] ContextTemplateLengthParams { get; init; } = [[5, 10], [10, 10]];
    /// <summary>Prompts whose next-token distribution the KL term keeps (ROME: "{} is a").</summary>
    public string[] KlPrompts { get; init; } = ["{} is a"];
    /// <summary>AlphaEdit, Key-AlphaEdit: keep the directions of C whose singular value is below this (AlphaEdit: 2e-2); refused elsewhere.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public double? NullspaceThreshold { get; init; }
    /// <summary>AlphaEdit, Key-AlphaEdit: the ridge term of the update's solve (AlphaEdit: 10); refused elsewhere.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public double? L2 { get; init; }
    /// <summary>AlphaEdit, Key-AlphaEdit: keep this share of C's directions (smallest eigenvalues) instead of an absolute threshold; refused elsewhere.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public double? NullspaceKeptFraction { get; init; }
    /// <summary>AlphaEdit, Key-AlphaEdit: L2 = this × kept directions × largest kept eigenvalue (or threshold), instead of an absolute L2; refused elsewhere.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public double? L2Relative { get; init; }
}

/// <summary>
/// Reads hyperparameter files: the defaults shipped in <c>hparams/{METHOD}/{model_type}.json</c> (embedded in
/// the library), or a user's file. Unknown names are errors; overrides are <see cref="HyperparameterOverrides"/>.
/// </summary>
public static class HyperparameterFiles
{
    private static readonly JsonSerializerOptions Options = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
        AllowDuplicateProperties = false,
        ReadCommentHandling = JsonCommentHandling.Skip,
        WriteIndented = true,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower, allowIntegerValues: false) },
    };

    /// <summary>The shipped file text for a method and a model family (Hugging Face <c>model_type</c>).</summary>
    public static string Builtin(string method, string modelFamily)
    {
        string name = $"hparams/{method}/{modelFamily}.json";
        var assembly = typeof(HyperparameterFiles).Assembly;
        string? resource = assembly.GetManifestResourceNames().FirstOrDefault(n => string.Equals(n.Replace('\\', '/'), name, StringComparison.OrdinalIgnoreCase));
        if (resource is null)
            throw new ArgumentException($"no built-in hyperparameters for {method} on {modelFamily}; pass a file (shipped: {string.Join(", ", assembly.GetManifestResourceNames().Where(n => n.StartsWith("hparams/", StringComparison.Ordinal)))})");
        using var stream = assembly.GetManifestResourceStream(resource)!;
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }

    /// <summary>
    /// The family whose shipped file <paramref name="method"/> reads for <paramref name="modelType"/>: its own where there is
    /// one, else its architecture's <see cref="Models.Architecture.HyperparameterFallback"/> (the Llama-family models → Llama).
    /// Neither shipped: an <see cref="InputException"/> naming the file looked for.
    /// </summary>
    public static string Family(string method, string modelType)
    {
        if (Has(method, modelType)) return modelType;
        string? fallback = Models.Architectures.Supported.Contains(modelType) ? Models.Architectures.Of(modelType).HyperparameterFallback : null;
        if (fallback is not null && Has(method, fallback)) return fallback;
        var shipped = typeof(HyperparameterFiles).Assembly.GetManifestResourceNames().Select(n => n.Replace('\\', '/'))
            .Where(n => n.StartsWith($"hparams/{method}/", StringComparison.OrdinalIgnoreCase)).Select(n => Path.GetFileNameWithoutExtension(n)).Order();
        throw new InputException($"hparams/{method}/{modelType}.json",
            $"not shipped{(fallback is null ? "" : $", nor its fallback hparams/{method}/{fallback}.json")} ({method} ships {string.Join(", ", shipped)}); pass --hparams FILE");
    }

    /// <summary>Where <see cref="Load{T}"/> reads from: <paramref name="path"/>, or the shipped file of the method for the model type.</summary>
    public static string Source(string? path, string method, string modelType) => path ?? $"hparams/{method}/{Family(method, modelType)}.json";

    private static bool Has(string method, string family) =>
        typeof(HyperparameterFiles).Assembly.GetManifestResourceNames().Any(n => string.Equals(n.Replace('\\', '/'), $"hparams/{method}/{family}.json", StringComparison.OrdinalIgnoreCase));

    /// <summary>Parses <paramref name="json"/> (from <paramref name="source"/>) as <typeparamref name="T"/>.</summary>
    public static T Parse<T>(string json, string source)
    {
        try
        {
            return JsonSerializer.Deserialize<T>(json, Options) ?? throw new InputException(source, "expected a JSON object of hyperparameters");
        }
        catch (JsonException e)
        {
            throw new InputException(source, $"bad hyperparameters: {e.Message}");
        }
    }

    /// <summary>
    /// Loads a user's file, or when <paramref name="path"/> is null the shipped one for <paramref name="modelType"/> (<see cref="Family"/>),
    /// every value checked with the rules of <c>--set</c> (<see cref="HyperparameterOverrides.Validate"/>).
    /// </summary>
    public static T Load<T>(string? path, string method, string modelType) where T : notnull
    {
        if (path is not null && !File.Exists(path)) throw new InputException(path, "no such hyperparameter file");
        string source = Source(path, method, modelType);
        string text = path is null ? Builtin(method, Family(method, modelType)) : File.ReadAllText(path);
        return HyperparameterOverrides.Validate(Parse<T>(text, source), source);
    }

    /// <summary>The record as a JSON object (snake_case), for params.json.</summary>
    public static JsonObject ToJson<T>(T value) => (JsonObject)JsonSerializer.SerializeToNode(value, Options)!;
}
