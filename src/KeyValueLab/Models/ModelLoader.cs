using System.Text.Json.Nodes;
using KeyValueLab.Checkpoints;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace KeyValueLab.Models;

/// <summary>Where one model parameter lives in its checkpoint: stored name, dtype, shape, and whether it is stored transposed (GPT-2 Conv1D).</summary>
public sealed record StoredTensor(string Name, string DType, long[] Shape, bool Transposed);

/// <summary>
/// A model together with the layout of the checkpoint it came from, so <see cref="ModelLoader.Save"/>
/// writes back the same tensor names, dtypes and orientation. Disposing it disposes the model.
/// </summary>
public sealed class LoadedModel(CausalLM model, IReadOnlyDictionary<string, StoredTensor> layout, string? sourcePath, long? maxShardBytes,
    Tuning.Nf4Base? fourBit = null) : IDisposable
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

    /// <summary>The NF4 base when the model was loaded with <see cref="LoadOptions.FourBit"/>, else null.</summary>
    public Tuning.Nf4Base? FourBit { get; } = fourBit;

    public void Dispose()
    {
        FourBit?.Dispose();
        FrozenLinear.DisposeAll(Model);
        Model.Dispose();
    }
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
    /// <c>.bin</c> file, filling the parameters one stored tensor at a time. By default (<see cref="LoadOptions.Default"/>)
    /// linear weights stored as BF16/F16 stay BF16/F16 in memory (<see cref="FrozenLinear"/>, widened per call) and
    /// everything else is fp32; see <see cref="LoadOptions"/> for fp32, NF4 and the device.
    /// </summary>
    /// <remarks>
    /// The model is built on the <c>meta</c> device (no storage) and each parameter is materialised only when its tensor
    /// is read, so the fp32 model never exists when weights are kept as stored or quantised. Before anything is read, the
    /// resident size estimated from the headers (<see cref="EstimateBytes"/>) is compared with the memory available, and a
    /// model that does not fit is refused with one line.
    /// </remarks>
    /// <exception cref="InputException">Unreadable files, unsupported <c>model_type</c>, a config missing a
    /// field, tensors that do not fit the model (all missing/unexpected/mis-shaped names listed), or a model too large
    /// for the memory available.</exception>
    public static LoadedModel Load(string path, LoadOptions? options = null)
    {
        options ??= LoadOptions.Default;
        var (checkpoint, config) = OpenChecked(path);
        using var _ = checkpoint;
        long? maxShard = checkpoint is HfCheckpoint { Shards.Count: > 1 } sharded
            ? sharded.Shards.Max(s => s.Tensors.Sum(t => ByteCount(t)))
            : null;
        var model = Architectures.Build(config, META);
        try
        {
            var plan = Plan(model, checkpoint, options);
            if (options.CheckMemory) CheckFits(path, config, plan, options);
            var (layout, quantised) = Materialise(model, checkpoint, plan, options);
            var fourBit = options.FourBit ? Tuning.Nf4Base.Adopt(model, quantised) : null;
            return new LoadedModel(model, layout, path, maxShard, fourBit);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>Opens a checkpoint and reads its config, refusing sizes its tensors cannot hold; the caller disposes the checkpoint.</summary>
    private static (ICheckpoint Checkpoint, ModelConfig Config) OpenChecked(string path)
    {
        var checkpoint = Checkpoint.Open(path);
        try
        {
            string configSource = checkpoint is HfCheckpoint hf ? Path.Combine(hf.SourcePath, HfCheckpoint.ConfigFile) : checkpoint.SourcePath;
            var config = Architectures.ParseConfig(checkpoint.Config, configSource);
            CheckSizesFitTheTensors(config, checkpoint, configSource);
            return (checkpoint, config);
        }
        catch
        {
            checkpoint.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Refuses a config whose sizes the checkpoint cannot hold, before a model of that size is built (even on <c>meta</c>,
    /// building 2³¹ layers would not end; the config readers already refuse sizes that are not positive). The smallest
    /// model the sizes imply must fit in the values the checkpoint stores: every architecture has at least one
    /// hidden × hidden matrix per layer (its query projection; with the FFN a layer holds several times that) and a
    /// vocab × hidden embedding.
    /// </summary>
    private static void CheckSizesFitTheTensors(ModelConfig config, ITensorSource checkpoint, string configSource)
    {
        CheckPositions(config, configSource);
        double stored = checkpoint.Tensors.Sum(t => t.Shape.Aggregate(1.0, (a, b) => a * b));
        double least = (double)config.NumLayers * config.HiddenSize * config.HiddenSize + (double)config.VocabSize * config.HiddenSize;
        if (least > stored)
            throw new InputException(configSource,
                $"{config.NumLayers:N0} layers of width {config.HiddenSize:N0} with a vocabulary of {config.VocabSize:N0} need at least {least:N0} values, " +
                $"but the checkpoint stores {stored:N0}: the config does not describe these weights");
    }

    /// <summary>How one parameter is kept: an fp32 parameter, a linear weight kept in a narrow dtype, or NF4.</summary>
    internal enum Keeping { Fp32, Narrow, Nf4 }

    /// <summary>One parameter to fill: where it is stored, and how it is kept.</summary>
    internal sealed record PlannedParameter(string Name, TensorInfo Stored, bool Transposed, Keeping Keeping, ScalarType Narrow);

    /// <summary>Matches the model's parameters with the checkpoint and decides how each is kept, in file order.</summary>
    private static List<PlannedParameter> Plan(CausalLM model, ITensorSource source, LoadOptions options)
    {
        var parameters = model.named_parameters().ToDictionary(p => p.name, p => p.parameter, StringComparer.Ordinal);
        var transposed = parameters.Keys.Where(model.IsStoredTransposed).ToHashSet(StringComparer.Ordinal);
        var visible = model.Config.TieWordEmbeddings ? new HiddenTensors(source, "lm_head.weight") : source;
        var match = StateDictMatcher.Match(
            parameters.ToDictionary(p => p.Key, p => p.Value.shape, StringComparer.Ordinal), visible, transposed: transposed);
        var linears = model.named_modules().Where(m => m.module is Linear).Select(m => m.name).ToHashSet(StringComparer.Ordinal);
        var fused = model.named_modules().Where(m => m.module is FusedLinear).Select(m => m.name).ToHashSet(StringComparer.Ordinal);
        string? head = model.UnembeddingModule;
        var infos = source.Tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
        var fileOrder = source.Tensors.Select((t, i) => (t.Name, i)).ToDictionary(x => x.Name, x => x.i, StringComparer.Ordinal);
        var plan = new List<PlannedParameter>();
        foreach (var (name, stored) in match.OrderBy(m => fileOrder[m.Value]))
        {
            var info = infos[stored];
            string module = name.EndsWith(".weight", StringComparison.Ordinal) ? name[..^".weight".Length] : "";
            var keeping = Keeping.Fp32;
            var narrow = ScalarType.Float32;
            // The head (lm_head, embed_out) stays an fp32 parameter: architectures unembed with OutputEmbedding directly
            // (Unembedding.Project, sliced), not through the linear's call, so its weight must be a real matrix.
            if (linears.Contains(module) && module != head)
            {
                if (options.FourBit) keeping = Keeping.Nf4;
                else
                {
                    narrow = options.DType switch
                    {
                        WeightDType.BF16 => ScalarType.BFloat16,
                        WeightDType.F16 => ScalarType.Float16,
                        WeightDType.Stored when info.DType is SafetensorsDType.BF16 or SafetensorsDType.F16 => SafetensorsDType.ToScalarType(info.DType),
                        _ => ScalarType.Float32,
                    };
                    if (narrow != ScalarType.Float32) keeping = Keeping.Narrow;
                }
            }
            // A fused linear (Phi-3's gate_up_proj) is quantised whole, as bitsandbytes quantises the nn.Linear that holds it.
            else if (options.FourBit && fused.Contains(module)) keeping = Keeping.Nf4;
            plan.Add(new PlannedParameter(name, info, transposed.Contains(name), keeping, narrow));
        }
        return plan;
    }

    /// <summary>Bytes an NF4 tensor of <paramref name="n"/> values takes (see <see cref="Tuning.Nf4Tensor.Bytes"/>).</summary>
    private static long Nf4Bytes(long n)
    {
        long blocks = (n + Tuning.Nf4Tensor.BlockSize - 1) / Tuning.Nf4Tensor.BlockSize;
        return (n + 1) / 2 + blocks + 4 * ((blocks + Tuning.Nf4Tensor.NestedBlockSize - 1) / Tuning.Nf4Tensor.NestedBlockSize) + 4;
    }

    /// <summary>What the runtime itself takes besides the weights (libtorch, .NET, the tokenizer), measured at ~0.4 GB here.</summary>
    public const long RuntimeBytes = 512L << 20;

    /// <summary>
    /// The resident size of a loaded model, estimated from the checkpoint's headers and <paramref name="options"/>: the
    /// bytes every parameter is kept in (fp32, the narrow dtype, or NF4), plus <see cref="RuntimeBytes"/>, plus the scratch
    /// of the largest weight widened at once (for NF4 at load: its fp32 copy and the quantiser's temporaries, 16 bytes a value).
    /// Activations are not included: they depend on the work, and are small at the batch sizes used here.
    /// </summary>
    public static long EstimateBytes(string path, LoadOptions? options = null)
    {
        options ??= LoadOptions.Default;
        var (checkpoint, config) = OpenChecked(path);
        using var _ = checkpoint;
        using var model = Architectures.Build(config, META);
        return Estimate(Plan(model, checkpoint, options));
    }

    private static long Estimate(List<PlannedParameter> plan)
    {
        long total = RuntimeBytes, scratch = 0;
        foreach (var p in plan)
        {
            long n = p.Stored.Shape.Aggregate(1L, (a, b) => a * b);
            total += p.Keeping switch { Keeping.Nf4 => Nf4Bytes(n), Keeping.Narrow => n * 2, _ => n * 4 };
            long s = p.Keeping switch { Keeping.Nf4 => 16 * n, Keeping.Narrow => StoredWeight.BlockBytes * 2, _ => 0 };
            scratch = Math.Max(scratch, s);
        }
        return total + scratch;
    }

    private static void CheckFits(string path, ModelConfig config, List<PlannedParameter> plan, LoadOptions options)
    {
        long? available = options.MemoryLimit ?? AvailableMemory.Bytes();
        if (available is not long room) return;
        long estimate = Estimate(plan);
        if (estimate <= room) return;
        string kept = options.FourBit ? "4-bit NF4 linears" : options.DType switch
        {
            WeightDType.Stored => "linears as stored", WeightDType.F32 => "fp32 linears", WeightDType.BF16 => "bf16 linears", _ => "f16 linears",
        };
        string hint = options.FourBit ? "free memory or use a smaller model"
            : options.DType is WeightDType.Stored or WeightDType.BF16 or WeightDType.F16 && plan.Any(p => p.Keeping == Keeping.Narrow)
                ? "try --4bit"
                : "try --dtype bf16 or --4bit";
        throw new InputException(path,
            $"{config.ModelType} model with {config.NumLayers} layers needs about {Gb(estimate)} GB resident ({kept}) but {Gb(room)} GB is available; {hint}");
    }

    private static string Gb(long bytes) => (bytes / 1e9).ToString("F1", System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>Reads every planned parameter into <paramref name="model"/> (built on <c>meta</c>); returns the layout and the NF4 modules.</summary>
    private static (IReadOnlyDictionary<string, StoredTensor> Layout, List<string> Quantised) Materialise(
        CausalLM model, ITensorSource source, List<PlannedParameter> plan, LoadOptions options)
    {
        var device = options.Device ?? CPU;
        var owners = ParameterOwners(model);
        var layout = new Dictionary<string, StoredTensor>(StringComparer.Ordinal);
        var quantised = new List<string>();
        using var noGrad = no_grad();
        const double MiB = 1 << 20;
        int totalMiB = (int)Math.Ceiling(plan.Sum(p => ByteCount(p.Stored)) / MiB);
        string stage = options.FourBit ? "reading, linears to NF4" : "reading";
        long readBytes = 0;
        options.Progress?.Report(new WorkProgress("load", 0, totalMiB, stage));
        // In file order, so shards and files are read front to back, one tensor in memory at a time.
        foreach (var p in plan)
        {
            using var scope = NewDisposeScope();
            var (module, local) = owners[p.Name];
            var stored = source.ReadStored(p.Stored.Name);   // a view of a memory map for safetensors
            var value = p.Transposed ? stored.t() : stored;   // [out, in]
            switch (p.Keeping)
            {
                case Keeping.Nf4 when module is FusedLinear fusedLinear:
                    Tuning.Nf4Base.QuantizeInto(fusedLinear, value, device);
                    quantised.Add(p.Name[..^".weight".Length]);
                    break;
                case Keeping.Nf4:
                    Tuning.Nf4Base.QuantizeInto((Linear)module, value, device);
                    quantised.Add(p.Name[..^".weight".Length]);
                    break;
                case Keeping.Narrow:
                    var narrow = value.dtype == p.Narrow && value.is_contiguous() && device.type == DeviceType.CPU
                        ? value
                        : value.to(p.Narrow).to(device).contiguous();
                    FrozenLinear.Freeze((Linear)module, new StoredWeight(narrow), device);
                    break;
                default:
                    var parameter = new Parameter(empty(value.shape, ScalarType.Float32, device), requires_grad: false);
                    parameter.DetachFromDisposeScope();
                    parameter.copy_(value);
                    SetParameter(module, local, parameter);
                    if (module is FusedLinear fused) fused.Adopt(parameter);  // its parts are views of the weight
                    break;
            }
            layout[p.Name] = new StoredTensor(p.Stored.Name, p.Stored.DType, p.Stored.Shape, p.Transposed);
            readBytes += ByteCount(p.Stored);
            options.Progress?.Report(new WorkProgress("load", Math.Min(totalMiB, (int)Math.Ceiling(readBytes / MiB)), totalMiB, stage));
        }
        var left = model.named_parameters().Where(x => x.parameter.device_type == DeviceType.META && device.type != DeviceType.META).Select(x => x.name).ToList();
        if (left.Count > 0) throw new InvalidOperationException($"parameters left unfilled: {string.Join(", ", left)}");
        var frozen = FrozenLinear.FrozenIn(model).Select(f => f.Linear.weight.Handle)
            .Concat(model.modules().OfType<FusedLinear>().Where(f => f.Frozen is not null).Select(f => f.weight.Handle)).ToHashSet();
        foreach (var (_, param) in model.named_parameters())
            if (!frozen.Contains(param.Handle)) param.requires_grad = true;  // as a freshly built model's
        return (layout, quantised);
    }

    /// <summary>For every parameter name, the module that holds it and its name there.</summary>
    private static Dictionary<string, (nn.Module Module, string Local)> ParameterOwners(nn.Module model)
    {
        var owners = new Dictionary<string, (nn.Module, string)>(StringComparer.Ordinal);
        foreach (var (prefix, module) in model.named_modules())
            foreach (var (local, _) in module.named_parameters(recurse: false))
                owners[prefix.Length == 0 ? local : $"{prefix}.{local}"] = (module, local);
        return owners;
    }

    private static readonly System.Reflection.MethodInfo RegisterParameter = typeof(nn.Module).GetMethod(
        "ConditionallyRegisterParameter", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance,
        [typeof(string), typeof(Parameter)]) ?? throw new MissingMethodException("nn.Module.ConditionallyRegisterParameter");

    /// <summary>
    /// Puts <paramref name="value"/> in place of the module's parameter <paramref name="local"/>, as TorchSharp's own
    /// <c>Module.to</c> does: through a public settable property of that name, else by re-registering it and updating the
    /// field that held the old one. The old (meta) parameter is disposed.
    /// </summary>
    private static void SetParameter(nn.Module module, string local, Parameter value)
    {
        const System.Reflection.BindingFlags Instance = System.Reflection.BindingFlags.Instance | System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.NonPublic;
        var old = module.named_parameters(recurse: false).Single(p => p.name == local).parameter;
        var oldHandle = old.Handle;
        var property = module.GetType().GetProperty(local, System.Reflection.BindingFlags.Instance | System.Reflection.BindingFlags.Public);
        if (property is { CanWrite: true } && property.PropertyType.IsAssignableFrom(typeof(Parameter)))
        {
            property.SetValue(module, value);
            return;
        }
        RegisterParameter.Invoke(module, [local, value]);
        for (var type = module.GetType(); type is not null && type != typeof(nn.Module); type = type.BaseType)
            foreach (var field in type.GetFields(Instance | System.Reflection.BindingFlags.DeclaredOnly))
                if (typeof(Tensor).IsAssignableFrom(field.FieldType) && field.GetValue(module) is Tensor held && held.Handle == oldHandle)
                    field.SetValue(module, value);
        old.Dispose();
    }

    /// <summary>Copies every parameter of <paramref name="model"/> (fp32, already allocated) from <paramref name="source"/>; returns the layout found.</summary>
    public static IReadOnlyDictionary<string, StoredTensor> Fill(CausalLM model, ITensorSource source)
    {
        var parameters = model.named_parameters().ToDictionary(p => p.name, p => p.parameter, StringComparer.Ordinal);
        var plan = Plan(model, source, LoadOptions.Default with { DType = WeightDType.F32 });
        var layout = new Dictionary<string, StoredTensor>(StringComparer.Ordinal);
        using var noGrad = no_grad();
        foreach (var p in plan)
        {
            using var scope = NewDisposeScope();
            var value = source.ReadStored(p.Stored.Name);
            parameters[p.Name].copy_(p.Transposed ? value.t() : value);
            layout[p.Name] = new StoredTensor(p.Stored.Name, p.Stored.DType, p.Stored.Shape, p.Transposed);
        }
        return layout;
    }

    /// <summary>The most positions a config may name (Llama 4 Scout's 10M-token context fits).</summary>
    public const int MaxPositionsLimit = 1 << 24;

    /// <summary>
    /// Refuses a context length nothing could use before a model is built: a learned position table of 2³¹ rows, or a
    /// generation whose default length is the context, would allocate or run without end.
    /// </summary>
    private static void CheckPositions(ModelConfig config, string configSource)
    {
        if (config.MaxPositions > MaxPositionsLimit)
            throw new InputException(configSource, $"a context of {config.MaxPositions:N0} positions (n_positions / max_position_embeddings) is above the {MaxPositionsLimit:N0} this product supports");
    }

    /// <summary>
    /// A model with random weights for a config, initialised as Hugging Face does
    /// (weights ~ N(0, <c>initializer_range</c>, default 0.02), biases 0, norm scales 1), reproducibly from <paramref name="seed"/>.
    /// </summary>
    public static LoadedModel Create(ModelConfig config, long seed)
    {
        CheckPositions(config, "config.json");
        var model = Architectures.Build(config);
        double std = new ConfigReader(config.Raw, "config.json").Double("initializer_range", 0.02);
        using var generator = new Generator((ulong)seed);
        using (no_grad())
        {
            foreach (var (name, p) in model.named_parameters())
            {
                if (name.EndsWith(".bias", StringComparison.Ordinal)) p.zero_();
                else if (p.dim() == 1) p.fill_(1.0);
                else p.normal_(0.0, std, generator);  // (nn.init.normal_ ignores its generator in TorchSharp 0.107)
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
        var frozen = FrozenLinear.FrozenIn(model).ToDictionary(f => f.Name + ".weight", f => f.Linear, StringComparer.Ordinal);
        foreach (var (name, p) in model.named_parameters())
        {
            if (frozen.TryGetValue(name, out var linear))
            {
                // Widened one matrix at a time while it is written (bf16/f16 → fp32 → the same dtype is exact).
                var s0 = loaded.Layout[name];
                tensors.Add(TensorToSave.Lazy(s0.Name, s0.Shape, s0.DType, () =>
                {
                    var w = FrozenLinear.Weight(linear);
                    if (!s0.Transposed) return w;
                    using (w) return w.t().contiguous();
                }));
                continue;
            }
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
        public Tensor ReadStored(string name) => inner.ReadStored(name);
        public void Dispose() { }
    }
}
