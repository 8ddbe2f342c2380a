using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using KeyValueLab.Models;
using KeyValueLab.Tokenization;
using TorchSharp;

namespace KeyValueLab.Organism;

/// <summary>Everything that determines an organism: its world, its model shape and how it is trained.</summary>
public sealed record OrganismSpec
{
    /// <summary>Bumped whenever a change of code changes what a spec builds, so old cache entries are not reused.</summary>
    public const string FormatVersion = "keyvaluelab-organism/3";  // 2: the classification tasks were redesigned (issue 10); 3: the corpus holds the template words

    public WorldConfig World { get; init; } = new();
    public OrganismModelConfig Model { get; init; } = new();
    public TrainingConfig Training { get; init; } = new();

    /// <summary>
    /// The default organism of an architecture: the default world and model; Llama trains 30 epochs, GPT-2 45
    /// (with learned positions and one FFN key matrix it memorises more slowly: at 30 epochs some relations stayed below 90%).
    /// </summary>
    public static OrganismSpec Default(string architecture = "llama") => new()
    {
        Model = new OrganismModelConfig { Architecture = architecture },
        Training = new TrainingConfig { Epochs = architecture == "gpt2" ? 45 : 30 },
    };

    /// <summary>Seed of the weights and the data order: <see cref="TrainingConfig.Seed"/>, else the world's seed.</summary>
    public long TrainingSeed => Training.Seed ?? World.Seed;

    /// <summary>The canonical text the cache key hashes.</summary>
    public string Canonical() =>
        $"{FormatVersion}\nworld {WorldExporter.ConfigJson(World).ToJsonString()}\nmodel {Model.Key()}\ntraining {Training.Key()} seed {TrainingSeed}\n";

    /// <summary>First 16 hex digits of SHA-256 over <see cref="Canonical"/>: the organism's folder name in the cache.</summary>
    public string Hash() => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(Canonical())))[..16];
}

/// <summary>A built (or reused) organism: where its files are and what it knows.</summary>
public sealed record OrganismBuild(
    string Folder, string ModelFolder, string DataFolder, string Hash, bool Reused,
    IReadOnlyList<RelationRecall> Recall, CounterFactBaseline CounterFact, double TrainingSeconds, double BuildSeconds)
{
    /// <summary>The model came from a shipped organism (<see cref="ShippedOrganisms"/>) rather than from training here.</summary>
    public bool Shipped { get; init; }
}

/// <summary>
/// Builds organisms into a per-user cache, one folder per <see cref="OrganismSpec.Hash"/>:
/// <c>model/</c> (a Hugging Face folder: config.json, model.safetensors, tokenizer.json, tokenizer_config.json),
/// <c>data/</c> (the world's exports, see <see cref="WorldExporter"/>), <c>report.json</c> (recall, CounterFact
/// baseline, timings; written last, so its presence means the organism is complete) and, while training,
/// <c>checkpoints/</c>, from which an interrupted build resumes. A spec whose hash is shipped with the tool
/// (<see cref="ShippedOrganisms"/>) is installed from the shipped model instead of trained.
/// </summary>
public static class OrganismBuilder
{
    public const string ReportFile = "report.json";

    /// <summary><c>organisms</c> under the user's KeyValueLab cache (<see cref="CachePaths"/>).</summary>
    public static string DefaultCacheRoot() => CachePaths.Of("organisms");

    /// <summary>The folder a spec builds into.</summary>
    public static string FolderOf(OrganismSpec spec, string? cacheRoot = null) => Path.Combine(cacheRoot ?? DefaultCacheRoot(), spec.Hash());

    /// <summary>
    /// Returns the organism of <paramref name="spec"/>: a complete one in the cache, else the shipped one of its hash
    /// installed into the cache (<see cref="ShippedOrganisms"/> under <paramref name="shipped"/>, null = next to the
    /// program, <see cref="ShippedOrganisms.None"/> = none), else one trained here. <paramref name="force"/> always trains.
    /// <paramref name="log"/> receives one-line messages; <paramref name="onProgress"/> the training progress.
    /// </summary>
    public static OrganismBuild Build(OrganismSpec spec, string? cacheRoot = null, bool force = false,
        Action<string>? log = null, Action<TrainingProgress>? onProgress = null, CancellationToken cancel = default, string? shipped = null)
    {
        ArgumentNullException.ThrowIfNull(spec);
        spec.World.Validate();
        spec.Model.Validate();
        spec.Training.Validate();
        var clock = Stopwatch.StartNew();
        string folder = FolderOf(spec, cacheRoot);
        string modelDir = Path.Combine(folder, "model"), dataDir = Path.Combine(folder, "data");
        string report = Path.Combine(folder, ReportFile);
        if (!force && File.Exists(report))
        {
            if (!WorldExporter.IsCurrent(dataDir)) RegenerateDatasets(spec, dataDir, log);
            return ReadReport(report, folder, modelDir, dataDir, spec.Hash(), clock.Elapsed.TotalSeconds);
        }
        if (force && File.Exists(report)) File.Delete(report);
        var copy = force ? null : ShippedOrganisms.Find(spec.Hash(), shipped);
        if (copy is not null && copy.Spec != spec.Canonical())
            throw new InputException(Path.Combine(copy.Folder, "spec.txt"), $"not the spec of hash {spec.Hash()} (re-ship with kvlab organism ship)");

        Directory.CreateDirectory(folder);
        WorldJson.WriteText(Path.Combine(folder, "spec.txt"), spec.Canonical());
        var world = World.Generate(spec.World);
        if (Directory.Exists(dataDir)) Directory.Delete(dataDir, recursive: true);
        WorldExporter.Export(world, dataDir);
        log?.Invoke($"world: {world.Subjects.Count} subjects × {world.Relations.Count} relations = {world.Facts.Count} facts; datasets in {dataDir}");
        if (copy is not null) return Install(spec, copy, world, folder, modelDir, dataDir, clock, log);

        var tokenizer = OrganismTokenizer.Build(world);
        var documents = Documents(world, tokenizer, spec.Model.Architecture);
        var config = spec.Model.ToConfigJson(tokenizer.VocabSize, tokenizer.BosId!.Value, tokenizer.EosId!.Value);
        TrainingResult trained;
        using (var loaded = ModelLoader.Create(Architectures.ParseConfig(config, "config.json"), spec.TrainingSeed))
        {
            long parameters = loaded.Model.parameters().Sum(p => p.numel());
            log?.Invoke($"model: {spec.Model.Key()}, vocabulary {tokenizer.VocabSize}, {parameters:N0} parameters; corpus {documents.Count} documents, {documents.Sum(d => d.Length):N0} tokens per epoch");
            string checkpoints = Path.Combine(folder, "checkpoints");
            trained = Pretrainer.Train(loaded, documents, spec.Training, spec.TrainingSeed, tokenizer.EosId!.Value, checkpoints, onProgress, cancel);
            if (trained.ResumedFromStep > 0) log?.Invoke($"resumed from step {trained.ResumedFromStep}");
            if (Directory.Exists(modelDir)) Directory.Delete(modelDir, recursive: true);
            loaded.Save(modelDir);
            WorldJson.WriteText(Path.Combine(modelDir, "tokenizer.json"), tokenizer.ToTokenizerJson());
            WorldJson.WriteText(Path.Combine(modelDir, "tokenizer_config.json"), OrganismTokenizer.TokenizerConfigJson());
            if (Directory.Exists(checkpoints)) Directory.Delete(checkpoints, recursive: true);
        }
        log?.Invoke($"trained {trained.Steps} steps in {trained.Elapsed.TotalSeconds:F1} s (final loss {trained.FinalLoss:F4}); evaluating");

        // Evaluate what was written, read back the way every other command reads it.
        using var model = ModelLoader.Load(modelDir);
        var tok = TokenizerLoader.Load(modelDir);
        var recall = OrganismEvaluation.Recall(model.Model, tok, world);
        var cf = OrganismEvaluation.CounterFact(model.Model, tok, WorldExporter.CounterFact(world).ToList());
        var build = new OrganismBuild(folder, modelDir, dataDir, spec.Hash(), false, recall, cf, trained.Elapsed.TotalSeconds, clock.Elapsed.TotalSeconds);
        WorldJson.WriteJson(report, ToJson(build, ParameterHash.Sha256(model.Model)));
        return build;
    }

    /// <summary>
    /// A complete entry whose datasets an older version of the code wrote (<see cref="WorldExporter.DatasetsVersion"/>): the
    /// datasets are written again from the world into a new folder that then replaces the old one; the model is kept (it
    /// depends on the spec only, which names the same world).
    /// </summary>
    private static void RegenerateDatasets(OrganismSpec spec, string dataDir, Action<string>? log)
    {
        string fresh = dataDir + ".new";
        if (Directory.Exists(fresh)) Directory.Delete(fresh, recursive: true);
        WorldExporter.Export(World.Generate(spec.World), fresh);
        if (Directory.Exists(dataDir)) Directory.Delete(dataDir, recursive: true);
        Directory.Move(fresh, dataDir);
        log?.Invoke($"datasets regenerated ({WorldExporter.DatasetsVersion}) in {dataDir}; model kept");
    }

    /// <summary>The shipped model into the cache, then evaluated and reported as a trained one would be (no training).</summary>
    private static OrganismBuild Install(OrganismSpec spec, ShippedOrganism copy, World world, string folder, string modelDir, string dataDir,
        Stopwatch clock, Action<string>? log)
    {
        string checkpoints = Path.Combine(folder, "checkpoints");
        if (Directory.Exists(checkpoints)) Directory.Delete(checkpoints, recursive: true);
        ShippedOrganisms.InstallModel(copy, modelDir);
        log?.Invoke($"installed the shipped organism {copy.Hash} (no training); evaluating");
        using var model = ModelLoader.Load(modelDir);
        var tok = TokenizerLoader.Load(modelDir);
        var recall = OrganismEvaluation.Recall(model.Model, tok, world);
        var cf = OrganismEvaluation.CounterFact(model.Model, tok, WorldExporter.CounterFact(world).ToList());
        var build = new OrganismBuild(folder, modelDir, dataDir, spec.Hash(), false, recall, cf, 0, clock.Elapsed.TotalSeconds) { Shipped = true };
        WorldJson.WriteJson(Path.Combine(folder, ReportFile), ToJson(build, ParameterHash.Sha256(model.Model)));
        return build;
    }

    /// <summary>
    /// Builds (or reuses) several organisms. When each trains on one torch thread (<see cref="TrainingConfig.Threads"/> = 1),
    /// they train side by side, one .NET thread each: the organism's ops are too small to gain from a second intra-op
    /// thread, but two organisms keep two cores busy, and one thread per organism keeps its weights what a lone
    /// one-thread build gives (tested). Otherwise they are built one after another. The callbacks get the spec's index
    /// and may be called from several threads at once.
    /// </summary>
    public static IReadOnlyList<OrganismBuild> BuildMany(IReadOnlyList<OrganismSpec> specs, string? cacheRoot = null,
        Action<int, string>? log = null, Action<int, TrainingProgress>? onProgress = null, CancellationToken cancel = default, string? shipped = null)
    {
        ArgumentNullException.ThrowIfNull(specs);
        OrganismBuild One(int i) => Build(specs[i], cacheRoot, false, log is null ? null : line => log(i, line),
            onProgress is null ? null : p => onProgress(i, p), cancel, shipped);
        // Two specs of one hash would share a folder: build each hash once.
        var first = specs.Select((s, i) => (Hash: s.Hash(), i)).GroupBy(x => x.Hash).ToDictionary(g => g.Key, g => g.First().i);
        var distinct = first.Values.Order().ToList();
        var built = new Dictionary<int, OrganismBuild>();
        if (distinct.Count < 2 || distinct.Any(i => specs[i].Training.Threads != 1))
        {
            foreach (int i in distinct) built[i] = One(i);
        }
        else
        {
            var results = new OrganismBuild?[specs.Count];
            var errors = new Exception?[specs.Count];
            var threads = distinct.Select(i => new Thread(() =>
            {
                try
                {
                    torch.set_num_threads(1);
                    results[i] = One(i);
                }
                catch (Exception e) { errors[i] = e; }
            }) { Name = $"organism {specs[i].Hash()}" }).ToList();
            foreach (var t in threads) t.Start();
            foreach (var t in threads) t.Join();
            if ((errors.FirstOrDefault(e => e is not null and not OperationCanceledException) ?? errors.FirstOrDefault(e => e is not null)) is { } error)
                System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(error);
            foreach (int i in distinct) built[i] = results[i]!;
        }
        return [.. specs.Select(s => built[first[s.Hash()]])];
    }

    /// <summary>Token ids of each training document: [BOS] (Llama only, as prompts are encoded) + text + EOS.</summary>
    public static List<int[]> Documents(World world, WordLevelTokenizer tokenizer, string architecture)
    {
        bool bos = architecture == "llama";
        return [.. world.TrainingDocuments().Select(d => (int[])[.. bos ? [tokenizer.BosId!.Value] : Array.Empty<int>(), .. tokenizer.Encode(d), tokenizer.EosId!.Value])];
    }

    private static JsonObject ToJson(OrganismBuild b, string parameterHash) => new()
    {
        ["hash"] = b.Hash,
        ["source"] = b.Shipped ? "shipped" : "trained",
        ["parameter_sha256"] = parameterHash,
        ["training_seconds"] = Math.Round(b.TrainingSeconds, 2),
        ["build_seconds"] = Math.Round(b.BuildSeconds, 2),
        ["recall"] = new JsonArray([.. b.Recall.Select(r => (JsonNode?)new JsonObject
        {
            ["relation_id"] = r.RelationId, ["name"] = r.Name,
            ["trained_correct"] = r.TrainedCorrect, ["trained_total"] = r.TrainedTotal,
            ["held_out_correct"] = r.HeldOutCorrect, ["held_out_total"] = r.HeldOutTotal,
        })]),
        ["counterfact"] = new JsonObject
        {
            ["cases"] = b.CounterFact.Cases, ["es"] = b.CounterFact.EfficacyScore,
            ["ps"] = b.CounterFact.ParaphraseScore, ["ns"] = b.CounterFact.NeighborhoodScore,
        },
    };

    private static OrganismBuild ReadReport(string path, string folder, string modelDir, string dataDir, string hash, double seconds)
    {
        try
        {
            var j = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
            var recall = j["recall"]!.AsArray().Select(n => new RelationRecall((string)n!["relation_id"]!, (string)n["name"]!,
                (int)n["trained_correct"]!, (int)n["trained_total"]!, (int)n["held_out_correct"]!, (int)n["held_out_total"]!)).ToList();
            var cf = j["counterfact"]!;
            static double D(JsonNode? n) => n is null ? double.NaN : (double)n;
            return new OrganismBuild(folder, modelDir, dataDir, hash, true, recall,
                new CounterFactBaseline((int)cf["cases"]!, D(cf["es"]), D(cf["ps"]), D(cf["ns"])), D(j["training_seconds"]), seconds)
            { Shipped = (string?)j["source"] == "shipped" };
        }
        catch (Exception e) when (e is System.Text.Json.JsonException or InvalidOperationException or NullReferenceException or FormatException)
        {
            throw new InputException(path, "unreadable organism report (delete the folder or rebuild with --force): " + e.Message, e);
        }
    }
}
