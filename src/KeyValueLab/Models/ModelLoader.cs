using System.Text.Json.Nodes;
using KeyValueLab.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace KeyValueLab.Models;

/// <summary>Where one model parameter lives in its checkpoint: stored name, dtype, shape, and whether it is stored transposed (GPT-2 Conv1D).</summary>
public sealed record StoredTensor(string Name, string DType, long[] Shape, bool Transposed);

/// <summary>
/// A model together with the layout of the checkpoint it came from, so <see cref="ModelLoader.Save"/>
/// writes back the same tensor names, dtypes and orientation. Disposing it disposes the model.
/// </summary>
public sealed class LoadedModel(CausalLM model, IReadOnlyDictionary<string, StoredTensor> layout, string? sourcePath, long? maxShardBytes) : IDisposable
{
    public CausalLM Model { get; } = model;
    public ModelConfig Config => Model.Config;

    /// <summary>The folder or <c>.bin</c> file the weights came from; null for a model built from a config.</summary>
    public string? SourcePath { get; } = sourcePath;

    /// <summary>Parameter name (Hugging Face, canonical <c>[out, in]</c>) → how the checkpoint stores it.</summary>
    public IReadOnlyDictionary<string, StoredTensor> Layout { get; } = layout;

    /// <summary>The largest shard of the source (data bytes) when it was sharded; Save shards the same way.</summary>
    public long? MaxShardBytes { get; } = maxShardBytes;

    /// <summary>Saves as a Hugging Face folder; see <see cref="ModelLoader.Save"/>.</summary>
    public IReadOnlyList<string> Save(string folder, bool overwrite = false) => ModelLoader.Save(this, folder, overwrite);

    public void Dispose() => Model.Dispose();
}

/// <summary>
/// Builds models from checkpoints (Hugging Face folders, llama2.c <c>.bin</c> files) or from a config
/// alone, and saves them back as Hugging Face folders.
/// </summary>
public static class ModelLoader
{
    /// <summary>Files copied along when a model loaded from a folder is saved to a new one.</summary>
    private static readonly string[] CompanionFiles =
        ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt", "tokenizer.model", "generation_config.json"];

    /// <summary>
    /// Loads a Hugging Face folder (<c>config.json</c> + safetensors, single or sharded) or a llama2.c
    /// <c>.bin</c> file onto the CPU in fp32, filling the parameters one stored tensor at a time.
    /// </summary>
    /// <exception cref="InputException">Unreadable files, unsupported <c>model_type</c>, a config missing a
    /// field, or tensors that do not fit the model (all missing/unexpected/mis-shaped names listed).</exception>
    public static LoadedModel Load(string path)
    {
        using var checkpoint = Checkpoint.Open(path);
        string configSource = checkpoint is HfCheckpoint hf ? Path.Combine(hf.SourcePath, HfCheckpoint.ConfigFile) : checkpoint.SourcePath;
        var config = Architectures.ParseConfig(checkpoint.Config, configSource);
        long? maxShard = checkpoint is HfCheckpoint { Shards.Count: > 1 } sharded
            ? sharded.Shards.Max(s => s.Tensors.Sum(t => ByteCount(t)))
            : null;
        var model = Architectures.Build(config);
        try
        {
            var layout = Fill(model, checkpoint);
            return new LoadedModel(model, layout, path, maxShard);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>Copies every parameter of <paramref name="model"/> from <paramref name="source"/>; returns the layout found.</summary>
    public static IReadOnlyDictionary<string, StoredTensor> Fill(CausalLM model, ITensorSource source)
    {
        var parameters = model.named_parameters().ToDictionary(p => p.name, p => p.parameter, StringComparer.Ordinal);
        var transposed = parameters.Keys.Where(model.IsStoredTransposed).ToHashSet(StringComparer.Ordinal);
        // A tied model has no lm_head parameter; some checkpoints still store the (identical) head.
        var visible = model.Config.TieWordEmbeddings ? new HiddenTensors(source, "lm_head.weight") : source;
        var match = StateDictMatcher.Match(
            parameters.ToDictionary(p => p.Key, p => p.Value.shape, StringComparer.Ordinal), visible, transposed: transposed);

        var infos = source.Tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
        var fileOrder = source.Tensors.Select((t, i) => (t.Name, i)).ToDictionary(x => x.Name, x => x.i, StringComparer.Ordinal);
        var layout = new Dictionary<string, StoredTensor>(StringComparer.Ordinal);
        using var noGrad = no_grad();
        // In file order, so shards and files are read front to back, one tensor in memory at a time.
        foreach (var (name, stored) in match.OrderBy(m => fileOrder[m.Value]))
        {
            using var scope = NewDisposeScope();
            bool t = transposed.Contains(name);
            var value = source.ReadFloat32(stored);
            parameters[name].copy_(t ? value.t() : value);
            var info = infos[stored];
            layout[name] = new StoredTensor(stored, info.DType, info.Shape, t);
        }
        return layout;
    }

    /// <summary>
    /// A model with random weights for a config, initialised as Hugging Face does
    /// (weights ~ N(0, <c>initializer_range</c>, default 0.02), biases 0, norm scales 1), reproducibly from <paramref name="seed"/>.
    /// </summary>
    public static LoadedModel Create(ModelConfig config, long seed)
    {
        var model = Architectures.Build(config);
        double std = new ConfigReader(config.Raw, "config.json").Double("initializer_range", 0.02);
        using var generator = new Generator((ulong)seed);
        using (no_grad())
        {
            foreach (var (name, p) in model.named_parameters())
            {
                if (name.EndsWith(".bias", StringComparison.Ordinal)) p.zero_();
                else if (p.dim() == 1) p.fill_(1.0);
                else nn.init.normal_(p, 0.0, std, generator);
            }
        }
        return new LoadedModel(model, DefaultLayout(model), null, null);
    }

    /// <summary>As <see cref="Create(ModelConfig, long)"/> from <c>config.json</c> text.</summary>
    public static LoadedModel Create(string configJson, long seed, string source = "config.json") =>
        Create(Architectures.ParseConfig(configJson, source), seed);

    /// <summary>
    /// The model's structure on the <c>meta</c> device: every parameter has its name and shape but no
    /// storage, so real sizes (7B and up) can be checked instantly.
    /// </summary>
    public static CausalLM CreateOnMeta(ModelConfig config) => Architectures.Build(config, META);

    /// <summary>Layout of a model that was not loaded: Hugging Face names as the parameters, F32, GPT-2 Conv1D weights transposed.</summary>
    public static IReadOnlyDictionary<string, StoredTensor> DefaultLayout(CausalLM model) =>
        model.named_parameters().ToDictionary(
            p => p.name,
            p =>
            {
                bool t = model.IsStoredTransposed(p.name);
                long[] shape = p.parameter.shape;
                return new StoredTensor(p.name, SafetensorsDType.F32, t ? [shape[1], shape[0]] : shape, t);
            },
            StringComparer.Ordinal);

    /// <summary>Name, dtype and shape of every tensor <see cref="Save"/> would write, in parameter order.</summary>
    public static IReadOnlyList<TensorInfo> CheckpointTensors(CausalLM model, IReadOnlyDictionary<string, StoredTensor>? layout = null)
    {
        layout ??= DefaultLayout(model);
        return model.named_parameters().Select(p => Stored(model, layout, p.name, p.parameter)).Select(s => new TensorInfo(s.Name, s.DType, s.Shape)).ToList();
    }

    /// <summary>
    /// Writes the model as a Hugging Face folder (<c>config.json</c> + safetensors) with the names, dtypes,
    /// orientation and shard size of the checkpoint it came from, atomically (see <see cref="HfCheckpointWriter"/>).
    /// Tokenizer files beside the source folder are copied along. Returns the weight files written.
    /// </summary>
    public static IReadOnlyList<string> Save(LoadedModel loaded, string folder, bool overwrite = false)
    {
        var model = loaded.Model;
        var tensors = new List<TensorToSave>();
        foreach (var (name, p) in model.named_parameters())
        {
            var s = Stored(model, loaded.Layout, name, p);
            var value = p.detach();
            tensors.Add(new TensorToSave(s.Name, s.Transposed ? value.t() : value, s.DType));  // views: no copy until written
        }
        try
        {
            var companions = loaded.SourcePath is { } src && Directory.Exists(src)
                ? CompanionFiles.Select(f => Path.Combine(src, f)).Where(File.Exists).Where(f => !SameFolder(src, folder)).ToList()
                : [];
            return HfCheckpointWriter.Save(folder, (JsonObject)model.Config.Raw.DeepClone(), tensors, loaded.MaxShardBytes, overwrite, extraFiles: companions);
        }
        finally
        {
            foreach (var t in tensors) t.Tensor?.Dispose();
        }
    }

    private static StoredTensor Stored(CausalLM model, IReadOnlyDictionary<string, StoredTensor> layout, string name, Tensor p)
    {
        if (layout.TryGetValue(name, out var s)) return s;
        bool t = model.IsStoredTransposed(name);
        return new StoredTensor(name, SafetensorsDType.F32, t ? [p.shape[1], p.shape[0]] : p.shape, t);
    }

    private static bool SameFolder(string a, string b) =>
        string.Equals(Path.TrimEndingDirectorySeparator(Path.GetFullPath(a)), Path.TrimEndingDirectorySeparator(Path.GetFullPath(b)), StringComparison.Ordinal);

    private static long ByteCount(TensorInfo t) =>
        t.Shape.Aggregate(1L, (a, b) => a * b) * (SafetensorsDType.IsKnown(t.DType) ? SafetensorsDType.ElementSize(t.DType) : 4);

    /// <summary>A view of a tensor source without some names (not disposed with it).</summary>
    private sealed class HiddenTensors(ITensorSource inner, params string[] hidden) : ITensorSource
    {
        public string SourcePath => inner.SourcePath;
        public IReadOnlyList<TensorInfo> Tensors { get; } = inner.Tensors.Where(t => !hidden.Contains(t.Name)).ToList();
        public Tensor ReadFloat32(string name) => inner.ReadFloat32(name);
        public void Dispose() { }
    }
}
