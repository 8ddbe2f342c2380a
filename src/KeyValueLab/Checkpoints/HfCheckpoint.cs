using System.Text.Json;
using System.Text.Json.Nodes;
using TorchSharp;

namespace KeyValueLab.Checkpoints;

/// <summary>A checkpoint: the model's Hugging Face <c>config.json</c> and its tensors.</summary>
public interface ICheckpoint : ITensorSource
{
    /// <summary>The Hugging Face config (for llama2.c files, one synthesised from the header).</summary>
    JsonObject Config { get; }
}

/// <summary>Opens any supported checkpoint by path.</summary>
public static class Checkpoint
{
    /// <summary>
    /// A Hugging Face folder (<see cref="HfCheckpoint"/>) or a llama2.c <c>.bin</c> file
    /// (<see cref="Llama2cCheckpoint"/>).
    /// </summary>
    /// <exception cref="InputException">Missing path, unknown layout or malformed files.</exception>
    public static ICheckpoint Open(string path)
    {
        if (Directory.Exists(path)) return HfCheckpoint.Open(path);
        if (File.Exists(path))
        {
            if (Path.GetFileName(path) is "config.json" or "model.safetensors" or "model.safetensors.index.json")
                return HfCheckpoint.Open(Path.GetDirectoryName(Path.GetFullPath(path))!);
            if (path.EndsWith(".bin", StringComparison.OrdinalIgnoreCase)) return Llama2cCheckpoint.Open(path);
            if (path.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase)) return GgufCheckpoint.Open(path);
            throw new InputException(path, "not a checkpoint: expected a Hugging Face folder, a llama2.c .bin file or a .gguf file");
        }
        throw new InputException(path, "no such file or folder");
    }
}

/// <summary>
/// A Hugging Face model folder: <c>config.json</c> plus <c>model.safetensors</c>, or shards listed in
/// <c>model.safetensors.index.json</c>. Tensor names are kept exactly as stored.
/// </summary>
/// <remarks>
/// Opening reads config.json and every shard's header (small), and checks that the index and the
/// shards agree. Tensor data is read only by <see cref="ReadStored"/> (a view of a memory map of that one tensor) or
/// <see cref="ReadFloat32"/>, one tensor at a time, so a model can be filled shard by shard without holding two copies
/// of the weights.
/// </remarks>
public sealed class HfCheckpoint : ICheckpoint
{
    public const string ConfigFile = "config.json";
    public const string SingleFile = "model.safetensors";
    public const string IndexFile = "model.safetensors.index.json";

    private readonly Dictionary<string, SafetensorsFile> _shardOf;

    /// <summary>The folder.</summary>
    public string SourcePath { get; }

    public JsonObject Config { get; }

    /// <summary>The safetensors files, sorted by file name (model-00001-of-… first).</summary>
    public IReadOnlyList<SafetensorsFile> Shards { get; }

    /// <summary>Every tensor, shard by shard, in file order within each shard.</summary>
    public IReadOnlyList<TensorInfo> Tensors { get; }

    private HfCheckpoint(string folder, JsonObject config, IReadOnlyList<SafetensorsFile> shards, Dictionary<string, SafetensorsFile> shardOf)
    {
        SourcePath = folder;
        Config = config;
        Shards = shards;
        _shardOf = shardOf;
        // A name stored in two shards counts once, from the shard the index assigns it to.
        Tensors = shards.SelectMany(s => s.Tensors.Where(t => ReferenceEquals(shardOf[t.Name], s))).ToArray();
    }

    /// <summary>Opens and validates a Hugging Face folder.</summary>
    /// <exception cref="InputException">Missing or malformed config, index or safetensors file.</exception>
    public static HfCheckpoint Open(string folder)
    {
        if (!Directory.Exists(folder)) throw new InputException(folder, "folder not found");
        var config = ReadConfig(Path.Combine(folder, ConfigFile));

        string single = Path.Combine(folder, SingleFile);
        string index = Path.Combine(folder, IndexFile);
        if (File.Exists(single))
        {
            var file = SafetensorsFile.Open(single);
            return new HfCheckpoint(folder, config, [file], file.Tensors.ToDictionary(t => t.Name, _ => file, StringComparer.Ordinal));
        }
        if (File.Exists(index)) return OpenSharded(folder, config, index);

        string hint = File.Exists(Path.Combine(folder, "pytorch_model.bin")) || File.Exists(Path.Combine(folder, "pytorch_model.bin.index.json"))
            ? " (pytorch_model.bin is not supported: convert it to safetensors)"
            : "";
        throw new InputException(folder, $"no {SingleFile} or {IndexFile}{hint}");
    }

    /// <summary>Largest JSON file read (configs and indexes are kilobytes; this only bounds a wrong file).</summary>
    private const long MaxJsonBytes = 64 << 20;

    /// <summary>Reads a JSON object file, turning every problem into an <see cref="InputException"/> naming it.</summary>
    internal static JsonObject ReadJsonObject(string path)
    {
        RegularFile.Require(path);
        JsonNode? node;
        try
        {
            long length = new FileInfo(path).Length;
            if (length > MaxJsonBytes) throw new InputException(path, $"is {length} bytes, too large for a JSON config (limit {MaxJsonBytes})");
            byte[] bytes = File.ReadAllBytes(path);
            if (!System.Text.Unicode.Utf8.IsValid(bytes)) throw new InputException(path, "not valid JSON: invalid UTF-8 bytes");
            node = JsonNode.Parse(bytes, documentOptions: new JsonDocumentOptions { MaxDepth = 64 });
            Materialise(node); // JsonObject builds its dictionary lazily; surface duplicate keys now.
        }
        catch (JsonException e)
        {
            throw new InputException(path, $"not valid JSON: {e.Message}", e);
        }
        catch (ArgumentException e)
        {
            throw new InputException(path, $"not valid JSON: duplicate key ({e.Message})", e);
        }
        catch (InvalidOperationException e)
        {
            throw new InputException(path, $"not valid JSON: a text value is not valid Unicode ({e.Message})", e);
        }
        catch (IOException e)
        {
            throw new InputException(path, $"cannot read: {e.Message}", e);
        }
        return node as JsonObject ?? throw new InputException(path, $"must be a JSON object, found {node?.GetValueKind().ToString() ?? "null"}");
    }

    private static void Materialise(JsonNode? node)
    {
        if (node is JsonObject o) foreach (var (_, child) in o) Materialise(child);
        else if (node is JsonArray a) foreach (var child in a) Materialise(child);
        else if (node is JsonValue v && v.GetValueKind() == System.Text.Json.JsonValueKind.String) v.GetValue<string>();  // a lone surrogate escape throws here, not later
    }

    private static JsonObject ReadConfig(string path) => ReadJsonObject(path);

    private static HfCheckpoint OpenSharded(string folder, JsonObject config, string indexPath)
    {
        var index = ReadJsonObject(indexPath);
        if (index["weight_map"] is not JsonObject weightMap)
            throw new InputException(indexPath, "has no weight_map object");

        string fullFolder = Path.GetFullPath(folder);
        var shardsByFile = new Dictionary<string, SafetensorsFile>(StringComparer.Ordinal);
        var order = new List<SafetensorsFile>();
        var shardOf = new Dictionary<string, SafetensorsFile>(StringComparer.Ordinal);
        foreach (var (name, value) in weightMap)
        {
            string? file = value is JsonValue v && v.TryGetValue(out string? s) ? s : null;
            if (string.IsNullOrEmpty(file))
                throw new InputException(indexPath, $"weight_map entry of tensor {name} must be a shard file name");
            if (!shardsByFile.TryGetValue(file, out var shard))
            {
                string shardPath = Path.GetFullPath(Path.Combine(folder, file));
                if (!shardPath.StartsWith(fullFolder + Path.DirectorySeparatorChar, StringComparison.Ordinal))
                    throw new InputException(indexPath, $"shard {file} (for tensor {name}) is outside the checkpoint folder");
                if (!File.Exists(shardPath))
                    throw new InputException(indexPath, $"shard {file} named for tensor {name} does not exist");
                shard = SafetensorsFile.Open(Path.Combine(folder, file));
                shardsByFile.Add(file, shard);
                order.Add(shard);
            }
            if (!shard.Contains(name))
                throw new InputException(indexPath, $"tensor {name} is mapped to shard {file}, which does not contain it");
            shardOf[name] = shard;
        }
        if (order.Count == 0) throw new InputException(indexPath, "weight_map is empty");

        // A tensor stored in a shard but absent from the index would be silently dropped by other loaders.
        foreach (var shard in order)
            foreach (var t in shard.Tensors)
                if (!shardOf.ContainsKey(t.Name))
                    throw new InputException(shard.SourcePath, $"holds tensor {t.Name}, which {IndexFile} does not list");

        order.Sort((a, b) => string.CompareOrdinal(a.SourcePath, b.SourcePath));
        return new HfCheckpoint(folder, config, order, shardOf);
    }

    /// <summary>The shard holding a tensor.</summary>
    public SafetensorsFile ShardOf(string name) =>
        _shardOf.TryGetValue(name, out var shard) ? shard : throw new KeyNotFoundException($"{SourcePath}: no tensor named {name}");

    /// <summary>Reads one tensor in its stored dtype.</summary>
    public torch.Tensor ReadStored(string name) => ShardOf(name).ReadStored(name);

    /// <inheritdoc/>
    public torch.Tensor ReadFloat32(string name) => ShardOf(name).ReadFloat32(name);

    public void Dispose()
    {
        foreach (var shard in Shards) shard.Dispose();
    }
}
