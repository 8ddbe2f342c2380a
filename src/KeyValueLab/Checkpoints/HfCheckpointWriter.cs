using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace KeyValueLab.Checkpoints;

/// <summary>
/// Saves a model as a Hugging Face folder: <c>config.json</c> plus <c>model.safetensors</c>, or shards
/// <c>model-0000i-of-0000n.safetensors</c> with <c>model.safetensors.index.json</c> when a maximum
/// shard size is given and the weights exceed it.
/// </summary>
/// <remarks>
/// Everything is first written into a hidden staging folder beside the target. A new target is then
/// created by one rename. An existing target (only with <c>overwrite</c>) is updated file by file, each
/// by an atomic rename, after every new file is complete; weight files of the old layout that the new
/// one does not use are then removed, and other files (tokenizer, README) are kept. Renames never
/// change the bytes of the files they replace, so saving over the folder a checkpoint was read from is
/// safe once its tensors are in memory, and a reader holding an old file open still sees old bytes.
/// </remarks>
public static class HfCheckpointWriter
{
    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>
    /// Writes every tensor of <paramref name="source"/> into a Hugging Face folder, reading one tensor at a
    /// time (e.g. a llama2.c file converted to the Hugging Face layout, or a checkpoint re-stored as BF16).
    /// </summary>
    /// <param name="source">The tensors, written under their stored names.</param>
    /// <param name="folder">The target folder.</param>
    /// <param name="config">Written as config.json.</param>
    /// <param name="dtype">The dtype to store; null keeps each tensor's stored dtype (bytes copied exactly).</param>
    /// <param name="maxShardBytes">As in <see cref="Save"/>.</param>
    /// <param name="overwrite">As in <see cref="Save"/>.</param>
    /// <param name="metadata">As in <see cref="Save"/>.</param>
    /// <param name="extraFiles">As in <see cref="Save"/>.</param>
    public static IReadOnlyList<string> SaveFrom(
        ITensorSource source,
        string folder,
        JsonObject config,
        string? dtype = null,
        long? maxShardBytes = null,
        bool overwrite = false,
        IReadOnlyDictionary<string, string>? metadata = null,
        IEnumerable<string>? extraFiles = null)
    {
        var tensors = source.Tensors.Select(info =>
        {
            string target = dtype ?? info.DType;
            bool exact = target == info.DType && source is HfCheckpoint or SafetensorsFile;
            return TensorToSave.Lazy(info.Name, info.Shape, target, () => exact ? ReadStored(source, info.Name) : source.ReadFloat32(info.Name));
        });
        return Save(folder, config, tensors, maxShardBytes, overwrite, metadata, extraFiles);
    }

    private static TorchSharp.torch.Tensor ReadStored(ITensorSource source, string name) => source switch
    {
        HfCheckpoint h => h.ReadStored(name),
        SafetensorsFile f => f.ReadStored(name),
        _ => source.ReadFloat32(name),
    };

    /// <summary>Writes the folder. Returns the paths of the weight files written.</summary>
    /// <param name="folder">The target folder.</param>
    /// <param name="config">Written as config.json.</param>
    /// <param name="tensors">Tensors in state-dict order (shards are filled in this order).</param>
    /// <param name="maxShardBytes">If given and the data exceed it, shard so that no shard holds more
    /// (a single larger tensor gets a shard of its own), as Hugging Face's <c>max_shard_size</c>.</param>
    /// <param name="overwrite">Replace the weights and config of an existing folder; without it an existing non-empty folder is refused.</param>
    /// <param name="metadata">Stored as <c>__metadata__</c> in every file (Hugging Face writes {"format": "pt"}).</param>
    /// <param name="extraFiles">Files copied into the folder as they are (e.g. tokenizer files).</param>
    /// <exception cref="InputException">The target exists and <paramref name="overwrite"/> is false, or is a file.</exception>
    public static IReadOnlyList<string> Save(
        string folder,
        JsonObject config,
        IEnumerable<TensorToSave> tensors,
        long? maxShardBytes = null,
        bool overwrite = false,
        IReadOnlyDictionary<string, string>? metadata = null,
        IEnumerable<string>? extraFiles = null)
    {
        var list = tensors.ToList();
        if (list.Count == 0) throw new ArgumentException("nothing to save", nameof(tensors));
        if (maxShardBytes is <= 0) throw new ArgumentOutOfRangeException(nameof(maxShardBytes), "must be positive");
        metadata ??= new Dictionary<string, string> { ["format"] = "pt" };

        string target = Path.TrimEndingDirectorySeparator(Path.GetFullPath(folder));
        if (File.Exists(target)) throw new InputException(folder, "is a file; the checkpoint must go into a folder");
        bool exists = Directory.Exists(target);
        if (exists && !overwrite && Directory.EnumerateFileSystemEntries(target).Any())
            throw new InputException(folder, "already exists and is not empty; choose a new folder or allow overwriting");

        string parent = Path.GetDirectoryName(target) ?? throw new InputException(folder, "cannot save into a filesystem root");
        Directory.CreateDirectory(parent);
        string staging = Path.Combine(parent, $".{Path.GetFileName(target)}.saving-{Guid.NewGuid():N}");
        Directory.CreateDirectory(staging);
        try
        {
            var weightFiles = WriteWeights(staging, list, maxShardBytes, metadata);
            foreach (var extra in extraFiles ?? [])
                File.Copy(extra, Path.Combine(staging, Path.GetFileName(extra)), overwrite: true);
            File.WriteAllText(Path.Combine(staging, HfCheckpoint.ConfigFile), config.ToJsonString(Indented) + "\n");

            if (!exists)
            {
                Directory.Move(staging, target);
            }
            else
            {
                // Weights first, index after its shards, config last: a crash midway leaves complete files.
                var order = Directory.GetFiles(staging).Select(Path.GetFileName).OfType<string>()
                    .OrderBy(f => f == HfCheckpoint.ConfigFile ? 2 : f == HfCheckpoint.IndexFile ? 1 : 0)
                    .ThenBy(f => f, StringComparer.Ordinal).ToList();
                foreach (var file in order)
                    File.Move(Path.Combine(staging, file), Path.Combine(target, file), overwrite: true);
                RemoveStaleWeights(target, weightFiles.ToHashSet(StringComparer.Ordinal));
            }
            return weightFiles.Select(f => Path.Combine(target, f)).ToList();
        }
        finally
        {
            if (Directory.Exists(staging)) Directory.Delete(staging, recursive: true);
        }
    }

    /// <summary>Writes single or sharded weights into <paramref name="dir"/>; returns the file names written.</summary>
    private static List<string> WriteWeights(string dir, List<TensorToSave> tensors, long? maxShardBytes, IReadOnlyDictionary<string, string> metadata)
    {
        long total = SafetensorsWriter.DataBytes(tensors);
        if (maxShardBytes is null || total <= maxShardBytes)
        {
            WriteFile(Path.Combine(dir, HfCheckpoint.SingleFile), tensors, metadata);
            return [HfCheckpoint.SingleFile];
        }

        var shards = new List<List<TensorToSave>> { new() };
        long current = 0;
        foreach (var t in tensors)
        {
            if (current > 0 && current + t.ByteCount > maxShardBytes)
            {
                shards.Add([]);
                current = 0;
            }
            shards[^1].Add(t);
            current += t.ByteCount;
        }

        var names = new List<string>();
        var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
        for (int i = 0; i < shards.Count; i++)
        {
            string name = $"model-{i + 1:00000}-of-{shards.Count:00000}.safetensors";
            WriteFile(Path.Combine(dir, name), shards[i], metadata);
            names.Add(name);
            foreach (var t in shards[i]) weightMap[t.Name] = name;
        }
        var index = new JsonObject
        {
            ["metadata"] = new JsonObject { ["total_size"] = total },
            ["weight_map"] = new JsonObject(weightMap.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)kv.Value))),
        };
        File.WriteAllText(Path.Combine(dir, HfCheckpoint.IndexFile), index.ToJsonString(Indented) + "\n");
        names.Add(HfCheckpoint.IndexFile);
        return names;
    }

    private static void WriteFile(string path, List<TensorToSave> tensors, IReadOnlyDictionary<string, string> metadata)
    {
        using var stream = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20);
        SafetensorsWriter.WriteTo(stream, tensors, metadata);
        stream.Flush(flushToDisk: true);
    }

    /// <summary>Removes weight files of another layout (old single file, old index, old shards).</summary>
    private static void RemoveStaleWeights(string target, HashSet<string> keep)
    {
        foreach (var path in Directory.GetFiles(target))
        {
            string name = Path.GetFileName(path);
            bool isWeights = name == HfCheckpoint.SingleFile || name == HfCheckpoint.IndexFile
                || (name.StartsWith("model-", StringComparison.Ordinal) && name.EndsWith(".safetensors", StringComparison.Ordinal));
            if (isWeights && !keep.Contains(name)) File.Delete(path);
        }
    }
}
