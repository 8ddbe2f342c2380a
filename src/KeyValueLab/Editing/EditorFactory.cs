using KeyValueLab.Models;

namespace KeyValueLab.Editing;

/// <summary>What a user chose on the command line; null fields keep the hyperparameter file's values.</summary>
public sealed record EditorChoice
{
    /// <summary>ft, ft-l, rome, keyrome or memit.</summary>
    public required string Method { get; init; }
    public string? HparamsFile { get; init; }
    /// <summary>Parsed for <see cref="Method"/> (<see cref="HyperparameterOverrides.Parse"/>); applied on top of the file.</summary>
    public HyperparameterOverrides Overrides { get; init; } = HyperparameterOverrides.None;
    public EditSide? Side { get; init; }
    public string? Layers { get; init; }
    public string? KeyKinds { get; init; }
    public string? StatsCorpus { get; init; }
    public int? StatsSamples { get; init; }
    public int? StatsTokens { get; init; }
    public string? StatsDir { get; init; }
}

/// <summary>Builds an editor from a method name, the model's family defaults and the user's choices.</summary>
public static class EditorFactory
{
    public static IReadOnlyList<string> Methods => ["ft", "ft-l", "rome", "keyrome", "memit", "alphaedit", "keyalphaedit", "keymemit"];

    public static IKnowledgeEditor Create(CausalLM model, EditorChoice choice)
    {
        string family = model.Config.ModelType;
        string method = choice.Method.Trim().ToLowerInvariant();
        // The file, then the user's overrides, then the typed choices: each a `with` expression on the record.
        int[]? layers = choice.Layers is null ? null : [.. EditScope.ParseLayers(choice.Layers)];
        if (method is "ft" or "ft-l")
        {
            var hp = choice.Overrides.ApplyTo(HyperparameterFiles.Load<FtHyperparameters>(choice.HparamsFile, method == "ft" ? "FT" : "FT-L", family));
            hp = hp with
            {
                Layers = layers ?? hp.Layers,
                KeyKinds = choice.KeyKinds ?? hp.KeyKinds,
                Side = choice.Side is { } chosen ? chosen.ToString().ToLowerInvariant() : hp.Side,
            };
            return new FineTuneEditor(hp);
        }
        string folder = method switch
        {
            "rome" => "ROME",
            "keyrome" or "key-rome" => "KeyROME",
            "memit" => "MEMIT",
            "alphaedit" => "AlphaEdit",
            "keyalphaedit" or "key-alphaedit" => "KeyAlphaEdit",
            "keymemit" or "key-memit" => "KeyMEMIT",
            _ => throw new ArgumentException($"unknown method \"{choice.Method}\"; use one of {string.Join(", ", Methods)}"),
        };
        if (folder is "AlphaEdit" or "KeyAlphaEdit" or "KeyMEMIT") return CreateMultiLayer(folder, family, choice, layers);
        var lhp = Chosen(Read(choice, folder, family), choice, layers);
        var side = choice.Side;
        if (folder == "ROME" && side is EditSide.Keys) throw new ArgumentException("ROME edits the values; use --method keyrome for the keys");
        if (folder == "KeyROME" && side is EditSide.Values) throw new ArgumentException("Key-ROME edits the keys; use --method rome for the values");
        if (folder == "MEMIT" && side is EditSide.Keys) throw new ArgumentException("MEMIT edits the values");
        if (side is EditSide.Both && folder != "FT") throw new ArgumentException($"{folder} edits one side; --side both is for ft");
        var stats = new SecondMoments(lhp.Mom2Corpus, lhp.Mom2NSamples, lhp.Mom2SampleTokens, choice.StatsDir ?? SecondMoments.DefaultCacheDir());
        return folder switch
        {
            "ROME" => new RomeEditor(lhp with { Method = "ROME" }, Single(lhp), stats),
            "KeyROME" => new KeyRomeEditor(lhp with { Method = "KeyROME" }, Single(lhp), EditScope.ParseKeyKinds(lhp.KeyKinds), stats),
            _ => new MemitEditor(lhp with { Method = "MEMIT" }, lhp.Layers, stats),
        };
    }

    /// <summary>AlphaEdit, Key-AlphaEdit, Key-MEMIT; Llama-family models without their own file use the Llama one (Llama-3-8B's values).</summary>
    private static IKnowledgeEditor CreateMultiLayer(string folder, string family, EditorChoice choice, int[]? layers)
    {
        if (family is "mistral" or "qwen2" or "gemma") family = "llama";
        var side = choice.Side;
        if (folder == "AlphaEdit" && side is EditSide.Keys) throw new ArgumentException("AlphaEdit edits the values; use --method keyalphaedit for the keys");
        if (folder != "AlphaEdit" && side is EditSide.Values) throw new ArgumentException($"{folder} edits the keys; use --method {(folder == "KeyMEMIT" ? "memit" : "alphaedit")} for the values");
        if (side is EditSide.Both) throw new ArgumentException($"{folder} edits one side; --side both is for ft");
        var hp = Chosen(Read(choice, folder, family), choice, layers) with { Method = folder };
        var nullSpace = NullSpaceSettings.From(hp, choice.HparamsFile ?? $"hparams/{folder}/{family}.json");
        var stats = new SecondMoments(hp.Mom2Corpus, hp.Mom2NSamples, hp.Mom2SampleTokens, choice.StatsDir ?? SecondMoments.DefaultCacheDir());
        var kinds = EditScope.ParseKeyKinds(hp.KeyKinds);
        return folder switch
        {
            "AlphaEdit" => new AlphaEditEditor(hp, nullSpace, hp.Layers, stats),
            "KeyAlphaEdit" => new KeyAlphaEditEditor(hp, nullSpace, hp.Layers, kinds, stats),
            _ => new KeyMemitEditor(hp, hp.Layers, kinds, stats),
        };
    }

    /// <summary>
    /// The file's hyperparameters with the user's overrides; AlphaEdit's null-space pair only where the method uses it
    /// (a ROME or MEMIT file that sets it would otherwise be read without a word).
    /// </summary>
    private static LocateEditHyperparameters Read(EditorChoice choice, string folder, string family)
    {
        var hp = choice.Overrides.ApplyTo(HyperparameterFiles.Load<LocateEditHyperparameters>(choice.HparamsFile, folder, family));
        if (folder is not ("AlphaEdit" or "KeyAlphaEdit") && (hp.NullspaceThreshold is not null || hp.L2 is not null))
            throw new InputException(choice.HparamsFile ?? $"hparams/{folder}/{family}.json", $"nullspace_threshold and l2 are AlphaEdit's; {folder} does not use them");
        return hp;
    }

    /// <summary>The file's hyperparameters with the user's typed choices on top.</summary>
    private static LocateEditHyperparameters Chosen(LocateEditHyperparameters hp, EditorChoice choice, int[]? layers) => hp with
    {
        Layers = layers ?? hp.Layers,
        KeyKinds = choice.KeyKinds ?? hp.KeyKinds,
        Mom2Corpus = choice.StatsCorpus ?? hp.Mom2Corpus,
        Mom2NSamples = choice.StatsSamples ?? hp.Mom2NSamples,
        Mom2SampleTokens = choice.StatsTokens ?? hp.Mom2SampleTokens,
    };

    private static int Single(LocateEditHyperparameters hp) =>
        hp.Layers.Length == 1 ? hp.Layers[0] : throw new ArgumentException($"{hp.Method} edits one layer; got layers {string.Join(",", hp.Layers)}");
}
