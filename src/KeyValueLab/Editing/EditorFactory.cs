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
    public static IReadOnlyList<string> Methods => ["ft", "ft-l", "rome", "keyrome", "memit"];

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
        string folder = method switch
        {
            "rome" => "ROME",
            "keyrome" or "key-rome" => "KeyROME",
            "memit" => "MEMIT",
            _ => throw new ArgumentException($"unknown method \"{choice.Method}\"; use one of {string.Join(", ", Methods)}"),
        };
        var lhp = HyperparameterFiles.Load<LocateEditHyperparameters>(choice.HparamsFile, folder, family, choice.Overrides);
        lhp = lhp with
        {
            Layers = layers ?? lhp.Layers,
            KeyKinds = choice.KeyKinds ?? lhp.KeyKinds,
            Mom2Corpus = choice.StatsCorpus ?? lhp.Mom2Corpus,
            Mom2NSamples = choice.StatsSamples ?? lhp.Mom2NSamples,
            Mom2SampleTokens = choice.StatsTokens ?? lhp.Mom2SampleTokens,
        };
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

    private static int Single(LocateEditHyperparameters hp) =>
        hp.Layers.Length == 1 ? hp.Layers[0] : throw new ArgumentException($"{hp.Method} edits one layer; got layers {string.Join(",", hp.Layers)}");
}
