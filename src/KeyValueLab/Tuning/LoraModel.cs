using System.Globalization;
using System.Text.Json;
using KeyValueLab.Checkpoints;
using KeyValueLab.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace KeyValueLab.Tuning;

/// <summary>One adapted linear: A <c>[r, in]</c>, B <c>[out, r]</c>, y = W·x + scale·B·A·dropout(x).</summary>
public sealed record LoraLayer(string Name, Linear Base, Parameter A, Parameter B)
{
    /// <summary>
    /// The fused module (Phi-3's <c>model.layers.0.mlp.gate_up_proj</c>) when this layer is one of its parts and the
    /// adapter targets the fused module as a whole: then its parts share one A and their B's are the row blocks of
    /// PEFT's one <c>lora_B</c>, which is exactly PEFT's LoRA on the fused linear. Null otherwise.
    /// </summary>
    public string? FusedModule { get; init; }

    /// <summary>PEFT's key of A in <c>adapter_model.safetensors</c>, e.g. <c>base_model.model.model.layers.0.mlp.up_proj.lora_A.weight</c>.</summary>
    public string KeyA => $"{LoraModel.PeftPrefix}{FusedModule ?? Name}.lora_A.weight";
    public string KeyB => $"{LoraModel.PeftPrefix}{FusedModule ?? Name}.lora_B.weight";
}

/// <summary>
/// LoRA adapters (Hu et al. 2021) on the linears of a <see cref="CausalLM"/> chosen by a <see cref="LoraConfig"/>,
/// as PEFT builds them: A kaiming-uniform(a=√5), B zero, so the adapted model starts equal to the base.
/// The adapters are forward hooks on the existing <c>nn.Linear</c> modules, which therefore keep their
/// names and types (and may be NF4-quantised by <see cref="Nf4Base"/>). The base model is frozen.
/// </summary>
public sealed class LoraModel : IDisposable
{
    /// <summary>PEFT's prefix before module names in adapter files (the adapter name "default" is dropped).</summary>
    public const string PeftPrefix = "base_model.model.";
    public const string ConfigFile = "adapter_config.json";
    public const string WeightsFile = "adapter_model.safetensors";

    private readonly List<Action> _unhook = [];

    // The hooks' constants as Scalars held for the adapters' life, not temporaries made on every call (see HeldScalars).
    private readonly Scalar _scale, _dropoutP, _keepProbability;

    private LoraModel(CausalLM model, LoraConfig config, List<LoraLayer> layers)
    {
        Model = model;
        Config = config;
        Layers = layers;
        _scale = config.Scale.ToScalar();
        _dropoutP = config.Dropout.ToScalar();
        _keepProbability = (1 - config.Dropout).ToScalar();
    }

    public CausalLM Model { get; }
    public LoraConfig Config { get; }
    public IReadOnlyList<LoraLayer> Layers { get; }

    /// <summary>Dropout on the adapter input is active only while training.</summary>
    public bool Training { get; set; }

    /// <summary>
    /// Source of the dropout masks while training. A private generator, so seeded training does not
    /// depend on (or disturb) torch's global random state; null uses the global generator.
    /// </summary>
    public torch.Generator? DropoutGenerator
    {
        get => _dropoutGenerator;
        set
        {
            // A checkpointed model recomputes each layer in the backward pass from this generator's saved state.
            if (_dropoutGenerator is not null) Model.CheckpointGenerators.Remove(_dropoutGenerator);
            _dropoutGenerator = value;
            if (value is not null) Model.CheckpointGenerators.Add(value);
        }
    }

    private torch.Generator? _dropoutGenerator;

    /// <summary>True after <see cref="Merge"/>: B·A is inside W and the hooks add nothing.</summary>
    public bool Merged { get; private set; }

    /// <summary>
    /// Freezes <paramref name="model"/> and adds adapters to every linear whose state-dict module name the config selects
    /// (no match → <see cref="ArgumentException"/> naming the model's linears). A is drawn from a generator seeded with <paramref name="seed"/>.
    /// </summary>
    public static LoraModel Attach(CausalLM model, LoraConfig config, long seed = 0)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(config.R, 1);
        foreach (var p in model.parameters()) p.requires_grad = false;
        // The parts of a fused layer (Phi-3's gate_up_proj.gate and .up) are linears of their own, so an adapter on
        // one part changes only its rows; an adapter on the whole fused layer is an adapter on each part.
        // A fused layer targeted by its own name (PEFT's "gate_up_proj") is PEFT's one adapter on it: one A shared by the parts.
        var linears = model.named_modules().SelectMany(m => m.module switch
        {
            Linear linear => [(name: m.name, linear, fused: (string?)null)],
            FusedLinear fused => fused.Parts.Select(p => (name: $"{m.name}.{p.Name}", linear: p.Module, fused: config.Matches(m.name) ? m.name : null)),
            _ => Enumerable.Empty<(string name, Linear linear, string? fused)>(),
        }).ToList();
        var chosen = linears.Where(l => l.fused is not null || config.Matches(l.name)).ToList();
        if (chosen.Count == 0)
        {
            string targets = config.TargetRegex ?? string.Join(", ", config.TargetModules);
            var kinds = linears.Select(l => l.name.Split('.')[^1]).Distinct();
            throw new ArgumentException($"LoRA targets [{targets}] match no linear of this {model.Config.ModelType} model (its linears: {string.Join(", ", kinds)})");
        }
        var generator = new Generator((ulong)seed);
        var layers = new List<LoraLayer>();
        foreach (var (name, linear, fused) in chosen)
        {
            long[] shape = Nf4Base.WeightShape(linear);  // [out, in]
            long outF = shape[0], inF = shape[1];
            // kaiming_uniform_(a=√5): gain √(2/(1+5)), bound gain·√(3/fan_in) = 1/√in.
            double bound = 1.0 / Math.Sqrt(inF);
            var shared = fused is null ? null : layers.FirstOrDefault(l => l.FusedModule == fused)?.A;
            // A is drawn on the CPU (the generator's device, the same draws everywhere) and moved to the linear's device.
            var device = linear.weight.device;
            var a = shared ?? new Parameter((rand([config.R, inF], generator: generator) * (2 * bound) - bound).to(device).detach(), requires_grad: true);
            var b = new Parameter(zeros(outF, config.R, device: device), requires_grad: true);
            layers.Add(new LoraLayer(name, linear, a, b) { FusedModule = fused });
        }
        var lora = new LoraModel(model, config, layers);
        lora.Hook();
        return lora;
    }

    /// <summary>Inverted dropout as PyTorch's, with masks drawn from <see cref="DropoutGenerator"/>.</summary>
    private Tensor Dropout(Tensor x, double p)
    {
        if (DropoutGenerator is null) return nn.functional.dropout(x, p, training: true);
        var keep = torch.rand(x.shape, dtype: x.dtype, device: x.device, generator: DropoutGenerator).ge(_dropoutP);
        return (x * keep.to(x.dtype)).div(_keepProbability);
    }

    private void Hook()
    {
        double p = Config.Dropout;
        foreach (var layer in Layers)
        {
            var (a, b) = (layer.A, layer.B);
            var hook = layer.Base.register_forward_hook((_, x, y) =>
            {
                if (Merged) return y;
                x = FrozenLinear.Input(layer.Base, x);  // a frozen (NF4 or stored-dtype) base hands hooks a zero-width view
                var input = Training && p > 0 ? Dropout(x, p) : x;
                return y.Plus(nn.functional.linear(nn.functional.linear(input, a), b).mul(_scale));  // [.., out]
            });
            _unhook.Add(hook.remove);
        }
    }

    /// <summary>The adapter parameters (A, B per layer; a shared A once), in a fixed order.</summary>
    public IReadOnlyList<Parameter> Parameters() => [.. Layers.SelectMany(l => new[] { l.A, l.B }).Distinct(ReferenceEqualityComparer.Instance).Cast<Parameter>()];

    /// <summary>Number of trainable (adapter) parameters.</summary>
    public long TrainableCount => Parameters().Sum(p => p.NumberOfElements);

    /// <summary>Parameters of the base model (frozen 4-bit or stored-dtype weights counted as the weights they stand for) plus the adapters.</summary>
    public long AllCount
    {
        get
        {
            long count = Model.parameters().Sum(p => p.NumberOfElements);
            foreach (var (_, module) in Model.named_modules())
                if (module is Linear linear && FrozenLinear.Of(linear) is { } frozen) count += frozen.Shape[0] * frozen.Shape[1] - linear.weight.NumberOfElements;
            return count + TrainableCount;
        }
    }

    /// <summary>PEFT's <c>print_trainable_parameters()</c> line.</summary>
    public string TrainableSummary() => string.Create(CultureInfo.InvariantCulture,
        $"trainable params: {TrainableCount:N0} || all params: {AllCount:N0} || trainable%: {100.0 * TrainableCount / AllCount:F4}");

    /// <summary>W += scale·B·A for every adapted linear (4-bit weights are dequantised, updated and requantised).</summary>
    public void Merge()
    {
        if (Merged) throw new InvalidOperationException("the adapters are already merged");
        AddDelta(+1);
        Merged = true;
    }

    /// <summary>W −= scale·B·A, undoing <see cref="Merge"/> (exactly up to float rounding for fp32 weights).</summary>
    public void Unmerge()
    {
        if (!Merged) throw new InvalidOperationException("the adapters are not merged");
        AddDelta(-1);
        Merged = false;
    }

    private void AddDelta(double sign)
    {
        using var noGrad = no_grad();
        foreach (var layer in Layers)
        {
            using var scope = NewDisposeScope();
            var delta = layer.B.matmul(layer.A) * (sign * Config.Scale);  // [out, in]
            if (Nf4Base.Of(layer.Base) is null) FrozenLinear.MakeMaster(layer.Base).add_(delta);
            else Nf4Base.SetWeight(layer.Base, Nf4Base.Weight(layer.Base) + delta);
        }
    }

    /// <summary>Writes PEFT's <c>adapter_config.json</c> and <c>adapter_model.safetensors</c> (fp32) into <paramref name="folder"/>.</summary>
    public void Save(string folder)
    {
        Directory.CreateDirectory(folder);
        var config = Config with
        {
            TargetModules = Config.TargetRegex is null ? [.. Config.TargetModules.OrderBy(t => t, StringComparer.Ordinal)] : [],
            FanInFanOut = Architectures.Of(Model.Config.ModelType).FanInFanOut,
        };
        File.WriteAllText(Path.Combine(folder, ConfigFile), config.ToPeftJson().ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        // A fused module's parts as PEFT stores its one adapter: the shared A, and the parts' B stacked by rows.
        var tensors = Layers.GroupBy(l => l.KeyA).SelectMany(g => new TensorToSave[]
            {
                new(g.Key, g.First().A.detach()),
                new(g.First().KeyB, g.Count() == 1 ? g.First().B.detach() : cat(g.Select(l => l.B.detach()).ToArray(), 0)),
            })
            .OrderBy(t => t.Name, StringComparer.Ordinal).ToList();
        try { SafetensorsWriter.Write(Path.Combine(folder, WeightsFile), tensors, new Dictionary<string, string> { ["format"] = "pt" }); }
        finally { foreach (var t in tensors) t.Tensor?.Dispose(); }
    }

    /// <summary>
    /// Attaches the adapter saved in <paramref name="folder"/> (ours or PEFT's) to <paramref name="model"/>. Missing or
    /// unexpected keys and wrong shapes → <see cref="InputException"/>; PEFT's "default" adapter names are accepted.
    /// </summary>
    public static LoraModel Load(CausalLM model, string folder)
    {
        string configPath = Path.Combine(folder, ConfigFile), weightsPath = Path.Combine(folder, WeightsFile);
        if (!File.Exists(configPath)) throw new InputException(configPath, "no adapter_config.json in the adapter folder");
        if (!File.Exists(weightsPath)) throw new InputException(weightsPath, "no adapter_model.safetensors in the adapter folder");
        var config = LoraConfig.FromPeftJson(File.ReadAllText(configPath), configPath);
        LoraModel lora;
        try { lora = Attach(model, config); }
        catch (ArgumentException e) { throw new InputException(configPath, e.Message, e); }
        try
        {
            lora.LoadWeights(weightsPath);
            return lora;
        }
        catch
        {
            lora.Dispose();
            throw;
        }
    }

    /// <summary>Copies A and B from a PEFT <c>adapter_model.safetensors</c> into these adapters.</summary>
    public void LoadWeights(string path)
    {
        using var file = SafetensorsFile.Open(path);
        var byName = file.Tensors.ToDictionary(t => t.Name.Replace(".default.weight", ".weight", StringComparison.Ordinal), t => t.Name, StringComparer.Ordinal);
        var expected = Layers.SelectMany(l => new[] { l.KeyA, l.KeyB }).ToHashSet(StringComparer.Ordinal);
        var missing = expected.Where(k => !byName.ContainsKey(k)).ToList();
        var unexpected = byName.Keys.Where(k => !expected.Contains(k)).ToList();
        if (missing.Count > 0 || unexpected.Count > 0)
            throw new InputException(path, $"adapter keys do not fit the model: missing [{string.Join(", ", missing.Take(4))}{(missing.Count > 4 ? ", …" : "")}], " +
                                           $"unexpected [{string.Join(", ", unexpected.Take(4))}{(unexpected.Count > 4 ? ", …" : "")}]");
        using var noGrad = no_grad();
        foreach (var group in Layers.GroupBy(l => l.KeyA))
        {
            var first = group.First();
            // B of a fused module: the parts' row blocks, in order.
            long rows = group.Sum(l => l.B.shape[0]);
            foreach (var (key, shape) in new[] { (first.KeyA, first.A.shape), (first.KeyB, new[] { rows, first.B.shape[1] }) })
            {
                using var stored = file.ReadFloat32(byName[key]);
                if (!stored.shape.SequenceEqual(shape))
                    throw new InputException(path, $"{key} has shape [{string.Join(", ", stored.shape)}], the model needs [{string.Join(", ", shape)}]");
                if (key == first.KeyA) { first.A.copy_(stored); continue; }
                long offset = 0;
                foreach (var layer in group)
                {
                    using var block = stored.narrow(0, offset, layer.B.shape[0]);
                    layer.B.copy_(block);
                    offset += layer.B.shape[0];
                }
            }
        }
    }

    /// <summary>Removes the hooks (unmerging first) and frees the adapters.</summary>
    public void Dispose()
    {
        if (Merged) Unmerge();
        DropoutGenerator = null;
        foreach (var unhook in _unhook) unhook();
        _unhook.Clear();
        foreach (var p in Parameters()) p.Dispose();
        _scale.Dispose();
        _dropoutP.Dispose();
        _keepProbability.Dispose();
    }
}
