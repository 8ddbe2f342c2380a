using System.Security.Cryptography;
using System.Text.Json.Nodes;
using KeyValueLab.Models;
using KeyValueLab.Tokenization;
using TorchSharp;

namespace KeyValueLab.Organism;

/// <summary>One shipped organism: its folder and what its manifest says.</summary>
public sealed record ShippedOrganism(string Folder, string Hash, string Spec, string ModelSha256, string ParameterSha256, int TrainingThreads)
{
    public string ModelFolder => Path.Combine(Folder, "model");
}

/// <summary>How far one tensor of a retrained organism is from the shipped one.</summary>
public sealed record TensorDifference(string Name, double MaxAbsDifference);

/// <summary>A retrained organism next to the shipped one of the same spec (<see cref="ShippedOrganisms.Check"/>).</summary>
public sealed record OrganismCheck(
    string Hash, string ShippedParameterSha256, string RetrainedParameterSha256, IReadOnlyList<TensorDifference> Tensors,
    IReadOnlyList<RelationRecall> ShippedRecall, CounterFactBaseline ShippedCounterFact,
    IReadOnlyList<RelationRecall> RetrainedRecall, CounterFactBaseline RetrainedCounterFact)
{
    public bool SameParameters => ShippedParameterSha256 == RetrainedParameterSha256;
}

/// <summary>
/// Organisms that come with the tool, so that the default study runs on the same weights on every machine: a CPU's
/// float rounding trains a slightly different model, and the study's verdicts should not depend on it (issue 10).
/// A shipped organism is a folder named by its spec hash (<see cref="OrganismSpec.Hash"/>) holding <c>model/</c> (the
/// Hugging Face files of the trained model), <c>spec.txt</c> and <see cref="ManifestFile"/>. Only the model is shipped:
/// the world's datasets are regenerated from the spec (deterministic, tested), and recall is measured on the installed
/// model. A spec that changes in any way has another hash, finds no shipped copy and trains as before.
/// </summary>
public static class ShippedOrganisms
{
    public const string ManifestFile = "organism.json";

    /// <summary>Pass as the shipped root to ignore shipped organisms (train or reuse the cache only).</summary>
    public const string None = "";

    /// <summary>The model files a shipped organism carries, as <see cref="OrganismBuilder"/> writes them.</summary>
    public static IReadOnlyList<string> ModelFiles { get; } = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"];

    /// <summary><c>organisms/</c> next to the program (the CLI's build copies the repository's <c>organisms/</c> folder there).</summary>
    public static string DefaultRoot => Path.Combine(AppContext.BaseDirectory, "organisms");

    /// <summary>The shipped organism of <paramref name="hash"/> under <paramref name="root"/> (null = <see cref="DefaultRoot"/>), if any.</summary>
    public static ShippedOrganism? Find(string hash, string? root = null)
    {
        root ??= DefaultRoot;
        if (root.Length == 0) return null;
        string folder = Path.Combine(root, hash);
        return File.Exists(Path.Combine(folder, ManifestFile)) ? Read(folder) : null;
    }

    /// <summary>Every shipped organism under <paramref name="root"/>, in hash order.</summary>
    public static IReadOnlyList<ShippedOrganism> List(string? root = null)
    {
        root ??= DefaultRoot;
        if (root.Length == 0 || !Directory.Exists(root)) return [];
        return [.. Directory.GetDirectories(root).Order(StringComparer.Ordinal)
            .Where(d => File.Exists(Path.Combine(d, ManifestFile))).Select(Read)];
    }

    /// <summary>
    /// Writes <paramref name="build"/> (a complete organism of <paramref name="spec"/>) as a shipped organism under
    /// <paramref name="root"/>, replacing an earlier copy of the same hash. The folder is written under a temporary name
    /// and renamed, so a shipped folder is always whole.
    /// </summary>
    public static ShippedOrganism Ship(OrganismSpec spec, OrganismBuild build, string root)
    {
        ArgumentNullException.ThrowIfNull(spec);
        ArgumentNullException.ThrowIfNull(build);
        if (spec.Hash() != build.Hash) throw new ArgumentException($"organism {build.Hash} was not built from spec {spec.Hash()}", nameof(build));
        Directory.CreateDirectory(root);
        string folder = Path.Combine(root, build.Hash);
        string temporary = Path.Combine(root, $".{build.Hash}.{Environment.ProcessId}.{Guid.NewGuid():N}");
        string modelDir = Path.Combine(temporary, "model");
        Directory.CreateDirectory(modelDir);
        try
        {
            foreach (string file in ModelFiles) File.Copy(Path.Combine(build.ModelFolder, file), Path.Combine(modelDir, file));
            string parameters;
            using (var model = ModelLoader.Load(modelDir)) parameters = ParameterHash.Sha256(model.Model);
            WorldJson.WriteText(Path.Combine(temporary, "spec.txt"), spec.Canonical());
            WorldJson.WriteJson(Path.Combine(temporary, ManifestFile), new JsonObject
            {
                ["hash"] = build.Hash,
                ["model_sha256"] = FileSha256(Path.Combine(modelDir, "model.safetensors")),
                ["parameter_sha256"] = parameters,
                ["training_threads"] = spec.Training.Threads,
                ["training_seconds"] = Math.Round(build.TrainingSeconds, 1),
            });
            if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
            Directory.Move(temporary, folder);
        }
        finally
        {
            if (Directory.Exists(temporary)) Directory.Delete(temporary, recursive: true);
        }
        return Read(folder);
    }

    /// <summary>
    /// Copies the shipped model into <paramref name="modelDir"/> (replacing what is there) and checks that
    /// model.safetensors has the manifest's SHA-256; a damaged shipped copy is an <see cref="InputException"/>.
    /// </summary>
    public static void InstallModel(ShippedOrganism shipped, string modelDir)
    {
        ArgumentNullException.ThrowIfNull(shipped);
        if (Directory.Exists(modelDir)) Directory.Delete(modelDir, recursive: true);
        Directory.CreateDirectory(modelDir);
        foreach (string file in ModelFiles)
        {
            string source = Path.Combine(shipped.ModelFolder, file);
            if (!File.Exists(source)) throw new InputException(source, "shipped organism file missing (re-ship with kvlab organism ship)");
            File.Copy(source, Path.Combine(modelDir, file));
        }
        string weights = Path.Combine(modelDir, "model.safetensors");
        if (FileSha256(weights) != shipped.ModelSha256)
        {
            Directory.Delete(modelDir, recursive: true);
            throw new InputException(Path.Combine(shipped.ModelFolder, "model.safetensors"),
                $"SHA-256 differs from {ManifestFile}'s model_sha256 (a damaged shipped organism; re-ship with kvlab organism ship)");
        }
    }

    /// <summary>
    /// Retrains the organism of <paramref name="spec"/> into <paramref name="retrainCache"/> (ignoring shipped copies; a
    /// complete retrained one there is reused) and compares it with the shipped one: max |Δw| per tensor, parameter
    /// SHA-256, recall and CounterFact baseline of both, measured here.
    /// </summary>
    public static OrganismCheck Check(OrganismSpec spec, string retrainCache, string? root = null,
        Action<string>? log = null, Action<TrainingProgress>? onProgress = null, CancellationToken cancel = default)
    {
        ArgumentNullException.ThrowIfNull(spec);
        string hash = spec.Hash();
        var shipped = Find(hash, root) ?? throw new InputException(Path.Combine(root ?? DefaultRoot, hash), "no shipped organism of this spec");
        var retrained = OrganismBuilder.Build(spec, retrainCache, false, log, onProgress, cancel, None);
        var world = World.Generate(spec.World);
        var cases = WorldExporter.CounterFact(world).ToList();
        using var ours = ModelLoader.Load(shipped.ModelFolder);
        using var theirs = ModelLoader.Load(retrained.ModelFolder);
        var tokenizer = TokenizerLoader.Load(shipped.ModelFolder);
        var other = theirs.Model.named_parameters().ToDictionary(p => p.name, p => p.parameter, StringComparer.Ordinal);
        var tensors = new List<TensorDifference>();
        foreach (var (name, p) in ours.Model.named_parameters().OrderBy(p => p.name, StringComparer.Ordinal))
        {
            using var scope = torch.NewDisposeScope();
            var q = other.TryGetValue(name, out var found) ? found : throw new InputException(retrained.ModelFolder, $"the retrained model has no parameter {name}");
            tensors.Add(new TensorDifference(name, (p.detach() - q.detach()).abs().max().item<float>()));
        }
        return new OrganismCheck(hash, ParameterHash.Sha256(ours.Model), ParameterHash.Sha256(theirs.Model), tensors,
            OrganismEvaluation.Recall(ours.Model, tokenizer, world), OrganismEvaluation.CounterFact(ours.Model, tokenizer, cases),
            retrained.Recall, retrained.CounterFact);
    }

    internal static string FileSha256(string path)
    {
        using var stream = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(stream));
    }

    private static ShippedOrganism Read(string folder)
    {
        string manifest = Path.Combine(folder, ManifestFile);
        try
        {
            var j = JsonNode.Parse(File.ReadAllText(manifest))!.AsObject();
            string hash = (string)j["hash"]!;
            if (hash != Path.GetFileName(folder)) throw new InputException(manifest, $"hash {hash} is not the folder's name");
            string spec = File.ReadAllText(Path.Combine(folder, "spec.txt"));
            return new ShippedOrganism(folder, hash, spec, (string)j["model_sha256"]!, (string)j["parameter_sha256"]!, (int)j["training_threads"]!);
        }
        catch (Exception e) when (e is System.Text.Json.JsonException or InvalidOperationException or NullReferenceException or FormatException or IOException)
        {
            throw new InputException(manifest, "unreadable shipped organism manifest: " + e.Message, e);
        }
    }
}
