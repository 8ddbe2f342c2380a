using KeyValueLab.Models;

namespace KeyValueLab.Editing;

/// <summary>What a user chose on the command line; null fields keep the hyperparameter file's values.</summary>
public sealed record EditorChoice
{
    /// <summary>ft, ft-l, rome, keyrome or memit.</summary>
    public required string Method { get; init; }
    public string? HparamsFile { get; init; }
    public IReadOnlyList<string> Overrides { get; init; } = [];
    public string? Side { get; init; }
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
    public static IReadOnlyList<string> Methods => ["ft", "ft-l", "ft-bf", "rome", "keyrome", "memit", "alphaedit", "keyalphaedit", "keymemit"];

    public static IKnowledgeEditor Create(CausalLM model, EditorChoice choice)
    {
        string family = model.Config.ModelType;
        string method = choice.Method.Trim().ToLowerInvariant();
        // The user's name=value overrides are text and parsed with the file; the typed choices then go on as `with` expressions.
        int[]? layers = choice.Layers is null ? null : [.. EditScope.ParseLayers(choice.Layers)];
        if (method is "ft" or "ft-l")
        {
            var hp = HyperparameterFiles.Load<FtHyperparameters>(choice.HparamsFile, method == "ft" ? "FT" : "FT-L", family, choice.Overrides);
            hp = hp with
            {
                Layers = layers ?? hp.Layers,
                KeyKinds = choice.KeyKinds ?? hp.KeyKinds,
                Side = choice.Side is null ? hp.Side : EditScope.ParseSide(choice.Side).ToString().ToLowerInvariant(),
            };
            return new FineTuneEditor(hp);
        }
        if (method is "ft-bf" or "locft-bf")
        {
            // Llama-family models without their own file take Llama-3-8B's (LocFT ships Llama-3, Qwen2.5 and Mistral).
            string bfFamily = family is "gemma" or "gemma2" or "phi3" ? "llama" : family;
            var hp = HyperparameterFiles.Load<BreadthFirstFtHyperparameters>(choice.HparamsFile, "FT-BF", bfFamily, choice.Overrides);
            hp = hp with
            {
                Layers = layers ?? hp.Layers,
                KeyKinds = choice.KeyKinds ?? hp.KeyKinds,
                Side = choice.Side is null ? hp.Side : EditScope.ParseSide(choice.Side).ToString().ToLowerInvariant(),
            };
            return new BreadthFirstFtEditor(hp);
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
        var lhp = Chosen(HyperparameterFiles.Load<LocateEditHyperparameters>(choice.HparamsFile, folder, family, choice.Overrides), choice, layers);
        var side = choice.Side is null ? (EditSide?)null : EditScope.ParseSide(choice.Side);
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
        var side = choice.Side is null ? (EditSide?)null : EditScope.ParseSide(choice.Side);
        if (folder == "AlphaEdit" && side is EditSide.Keys) throw new ArgumentException("AlphaEdit edits the values; use --method keyalphaedit for the keys");
        if (folder != "AlphaEdit" && side is EditSide.Values) throw new ArgumentException($"{folder} edits the keys; use --method {(folder == "KeyMEMIT" ? "memit" : "alphaedit")} for the values");
        if (side is EditSide.Both) throw new ArgumentException($"{folder} edits one side; --side both is for ft");
        string source = choice.HparamsFile ?? $"hparams/{folder}/{family}.json";
        if (choice.HparamsFile is not null && !File.Exists(choice.HparamsFile)) throw new InputException(choice.HparamsFile, "no such hyperparameter file");
        string text = choice.HparamsFile is null ? HyperparameterFiles.Builtin(folder, family) : File.ReadAllText(choice.HparamsFile);
        var overrides = choice.Overrides.ToList();
        var (remaining, nullSpace) = NullSpaceSettings.Split(text, source, overrides);
        var hp = Chosen(HyperparameterFiles.Parse<LocateEditHyperparameters>(remaining, source, overrides), choice, layers) with { Method = folder };
        var stats = new SecondMoments(hp.Mom2Corpus, hp.Mom2NSamples, hp.Mom2SampleTokens, choice.StatsDir ?? SecondMoments.DefaultCacheDir());
        var kinds = EditScope.ParseKeyKinds(hp.KeyKinds);
        return folder switch
        {
            "AlphaEdit" => new AlphaEditEditor(hp, nullSpace, hp.Layers, stats),
            "KeyAlphaEdit" => new KeyAlphaEditEditor(hp, nullSpace, hp.Layers, kinds, stats),
            _ => new KeyMemitEditor(hp, hp.Layers, kinds, stats),
        };
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
