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
    /// <summary>A folder of ROME/MEMIT/AlphaEdit <c>layer_stats</c> .npz files (<see cref="SecondMoments.LayerStatsDir"/>).</summary>
    public string? LayerStatsDir { get; init; }
    /// <summary>Where computing statistics reports its samples, and its measured estimate (<see cref="SecondMoments"/>).</summary>
    public IProgress<WorkProgress>? Progress { get; init; }
    public Action<string>? Notice { get; init; }
}

/// <summary>Builds an editor from a method name, the model's family defaults and the user's choices.</summary>
public static class EditorFactory
{
    public static IReadOnlyList<string> Methods => ["ft", "ft-l", "ft-bf", "rome", "keyrome", "memit", "alphaedit", "keyalphaedit", "keymemit"];

    /// <summary>The folder of <c>hparams/</c> a method reads (<c>ft</c> → FT, <c>keyrome</c> → KeyROME, …); unknown → ArgumentException.</summary>
    public static string HparamsFolder(string method) => method.Trim().ToLowerInvariant() switch
    {
        "ft" => "FT",
        "ft-l" => "FT-L",
        "ft-bf" or "locft-bf" => "FT-BF",
        "rome" => "ROME",
        "keyrome" or "key-rome" => "KeyROME",
        "memit" => "MEMIT",
        "alphaedit" => "AlphaEdit",
        "keyalphaedit" or "key-alphaedit" => "KeyAlphaEdit",
        "keymemit" or "key-memit" => "KeyMEMIT",
        _ => throw new ArgumentException($"unknown method \"{method}\"; use one of {string.Join(", ", Methods)}"),
    };

    public static IKnowledgeEditor Create(CausalLM model, EditorChoice choice)
    {
        string family = model.Config.ModelType;
        string folder = HparamsFolder(choice.Method);
        // The file, then the user's overrides, then the typed choices: each a `with` expression on the record.
        int[]? layers = choice.Layers is null ? null : [.. EditScope.ParseLayers(choice.Layers)];
        if (folder is "FT" or "FT-L")
        {
            var hp = choice.Overrides.ApplyTo(HyperparameterFiles.Load<FtHyperparameters>(choice.HparamsFile, folder, family));
            hp = hp with
            {
                Layers = layers ?? hp.Layers,
                KeyKinds = choice.KeyKinds ?? hp.KeyKinds,
                Side = choice.Side is { } chosen ? chosen.ToString().ToLowerInvariant() : hp.Side,
            };
            return new FineTuneEditor(hp);
        }
        if (folder is "FT-BF")
        {
            var hp = choice.Overrides.ApplyTo(HyperparameterFiles.Load<BreadthFirstFtHyperparameters>(choice.HparamsFile, folder, family));
            hp = hp with
            {
                Layers = layers ?? hp.Layers,
                KeyKinds = choice.KeyKinds ?? hp.KeyKinds,
                Side = choice.Side is { } chosen ? chosen.ToString().ToLowerInvariant() : hp.Side,
            };
            return new BreadthFirstFtEditor(hp);
        }
        if (folder is "AlphaEdit" or "KeyAlphaEdit" or "KeyMEMIT") return CreateMultiLayer(folder, family, choice, layers);
        var lhp = Chosen(Read(choice, folder, family), choice, layers);
        var side = choice.Side;
        if (folder == "ROME" && side is EditSide.Keys) throw new ArgumentException("ROME edits the values; use --method keyrome for the keys");
        if (folder == "KeyROME" && side is EditSide.Values) throw new ArgumentException("Key-ROME edits the keys; use --method rome for the values");
        if (folder == "MEMIT" && side is EditSide.Keys) throw new ArgumentException("MEMIT edits the values");
        if (side is EditSide.Both && folder != "FT") throw new ArgumentException($"{folder} edits one side; --side both is for ft");
        var stats = Statistics(lhp, choice);
        return folder switch
        {
            "ROME" => new RomeEditor(lhp with { Method = "ROME" }, Single(lhp), stats),
            "KeyROME" => new KeyRomeEditor(lhp with { Method = "KeyROME" }, Single(lhp), EditScope.ParseKeyKinds(lhp.KeyKinds), stats),
            _ => new MemitEditor(lhp with { Method = "MEMIT" }, lhp.Layers, stats),
        };
    }

    /// <summary>AlphaEdit, Key-AlphaEdit, Key-MEMIT.</summary>
    private static IKnowledgeEditor CreateMultiLayer(string folder, string family, EditorChoice choice, int[]? layers)
    {
        var side = choice.Side;
        if (folder == "AlphaEdit" && side is EditSide.Keys) throw new ArgumentException("AlphaEdit edits the values; use --method keyalphaedit for the keys");
        if (folder != "AlphaEdit" && side is EditSide.Values) throw new ArgumentException($"{folder} edits the keys; use --method {(folder == "KeyMEMIT" ? "memit" : "alphaedit")} for the values");
        if (side is EditSide.Both) throw new ArgumentException($"{folder} edits one side; --side both is for ft");
        var hp = Chosen(Read(choice, folder, family), choice, layers) with { Method = folder };
        var nullSpace = NullSpaceSettings.From(hp, HyperparameterFiles.Source(choice.HparamsFile, folder, family));
        var stats = Statistics(hp, choice);
        var kinds = EditScope.ParseKeyKinds(hp.KeyKinds);
        return folder switch
        {
            "AlphaEdit" => new AlphaEditEditor(hp, nullSpace, hp.Layers, stats),
            "KeyAlphaEdit" => new KeyAlphaEditEditor(hp, nullSpace, hp.Layers, kinds, stats),
            _ => new KeyMemitEditor(hp, hp.Layers, kinds, stats),
        };
    }

    private static SecondMoments Statistics(LocateEditHyperparameters hp, EditorChoice choice) =>
        new(hp.Mom2Corpus, hp.Mom2NSamples, hp.Mom2SampleTokens, choice.StatsDir ?? SecondMoments.DefaultCacheDir())
        {
            LayerStatsDir = choice.LayerStatsDir, Progress = choice.Progress, Notice = choice.Notice,
        };

    /// <summary>
    /// The file's hyperparameters with the user's overrides; AlphaEdit's null-space pair only where the method uses it
    /// (a ROME or MEMIT file that sets it would otherwise be read without a word).
    /// </summary>
    private static LocateEditHyperparameters Read(EditorChoice choice, string folder, string modelType)
    {
        string source = HyperparameterFiles.Source(choice.HparamsFile, folder, modelType);
        var hp = choice.Overrides.ApplyTo(HyperparameterFiles.Load<LocateEditHyperparameters>(choice.HparamsFile, folder, modelType));
        if (folder is not ("AlphaEdit" or "KeyAlphaEdit") && (hp.NullspaceThreshold is not null || hp.L2 is not null || hp.NullspaceKeptFraction is not null || hp.L2Relative is not null))
            throw new InputException(source, $"nullspace_threshold, nullspace_kept_fraction, l2 and l2_relative are AlphaEdit's; {folder} does not use them");
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
