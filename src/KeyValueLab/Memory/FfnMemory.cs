using KeyValueLab.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace KeyValueLab.Memory;

/// <summary>
/// Which key matrix of an FFN block: GPT-2 <c>c_fc</c>, GPT-J <c>fc_in</c> and GPT-NeoX <c>dense_h_to_4h</c> are
/// <see cref="Fc"/>; the gated architectures (Llama, Qwen2, Mistral, Gemma, Gemma 2, Phi-3) have <see cref="Gate"/>
/// and <see cref="Up"/> (for Phi-3 the two halves of the fused <c>gate_up_proj</c>).
/// </summary>
public enum KeyKind { Fc, Gate, Up }

/// <summary>
/// The feed-forward blocks of a model seen as key-value memories (Geva et al. 2021):
/// FFN(h) = f(h·Kᵀ)·Vᵀ with keys K <c>[memories × d_model]</c> and values V <c>[d_model × memories]</c>
/// (for Llama, f(h·K_gateᵀ) ⊙ (h·K_upᵀ)). Row i of K is memory i's key; column i of V the vector it writes.
/// </summary>
/// <remarks>
/// Every linear weight is stored <c>[out, in]</c> (GPT-2's Conv1D weights are transposed at load), so
/// <see cref="Keys"/> and <see cref="Values"/> ARE the live parameters, in exactly these orientations:
/// editing them in place (under <c>torch.no_grad()</c>) edits the model. A weight kept in its stored dtype
/// (<see cref="FrozenLinear"/>) is made an fp32 master the first time it is asked for, so what an editor changes is
/// always fp32; the other matrices stay as stored. Use
/// <see cref="WeightSnapshot"/> for copies. The memory coefficients f(h·Kᵀ) are the input of the value
/// module; <see cref="Coefficients(int, Tensor, Tensor?, Tensor?)"/> and <see cref="Record"/> read them
/// with a forward pre-hook on that module.
/// </remarks>
public sealed class FfnMemory(CausalLM model)
{
    private static readonly Dictionary<KeyKind, string> ModuleNames = new()
    {
        [KeyKind.Fc] = "", [KeyKind.Gate] = "gate_proj", [KeyKind.Up] = "up_proj",
    };

    public CausalLM Model { get; } = model;

    public int Layers => Model.Config.NumLayers;

    /// <summary>d_model, the width of the residual stream.</summary>
    public int ModelDim => Model.Config.HiddenSize;

    /// <summary>Memories per layer (the FFN's inner width).</summary>
    public int Memories => Model.Config.IntermediateSize;

    /// <summary>The key matrices this architecture has: <c>[Fc]</c> (GPT-2, GPT-J) or <c>[Gate, Up]</c> (Llama).</summary>
    public IReadOnlyList<KeyKind> KeyKinds => Model.Ffn(0).Keys.Count == 1 ? [KeyKind.Fc] : [KeyKind.Gate, KeyKind.Up];

    /// <summary>Keys of <paramref name="layer"/> <c>[memories, d_model]</c>: the live weight. Llama needs <paramref name="kind"/> Gate or Up.</summary>
    public Parameter Keys(int layer, KeyKind? kind = null) => FrozenLinear.MakeMaster(KeyModule(layer, kind));

    /// <summary>The key bias <c>[memories]</c>, or null (Llama).</summary>
    public Parameter? KeyBias(int layer, KeyKind? kind = null) => KeyModule(layer, kind).bias;

    /// <summary>Values of <paramref name="layer"/> <c>[d_model, memories]</c>: the live weight; column i is memory i's value vector.</summary>
    public Parameter Values(int layer) => FrozenLinear.MakeMaster(ValueModule(layer));

    /// <summary>The value bias <c>[d_model]</c>, or null (Llama).</summary>
    public Parameter? ValueBias(int layer) => ValueModule(layer).bias;

    /// <summary>The key module (e.g. <c>c_fc</c>); hooks on it see h and f's argument.</summary>
    public Linear KeyModule(int layer, KeyKind? kind = null) => Key(layer, kind).Module;

    /// <summary>The value module (e.g. <c>c_proj</c>); its input is the memory coefficients.</summary>
    public Linear ValueModule(int layer) => Model.Ffn(layer).Value;

    /// <summary>State-dict name of a key weight, e.g. <c>transformer.h.3.mlp.c_fc.weight</c>.</summary>
    /// <remarks>For Phi-3's halves this is the fused <c>gate_up_proj.weight</c> they are rows of, so snapshots and hashes cover them.</remarks>
    public string KeysName(int layer, KeyKind? kind = null) => $"{Model.Ffn(layer).Prefix}.{Model.Ffn(layer).KeyWeightName(Key(layer, kind).Name)}";

    /// <summary>State-dict name of a value weight, e.g. <c>model.layers.3.mlp.down_proj.weight</c>.</summary>
    public string ValuesName(int layer) => $"{Model.Ffn(layer).Prefix}.{Model.Ffn(layer).ValueName}.weight";

    /// <summary>
    /// State-dict names of the FFN parameters of <paramref name="layers"/>: keys (every kind), values, and optionally
    /// their biases; a fused parameter holding several key matrices (Phi-3's <c>gate_up_proj</c>) is listed once.
    /// </summary>
    public IReadOnlyList<string> ParameterNames(IEnumerable<int> layers, bool keys = true, bool values = true, bool biases = false)
    {
        var names = new List<string>();
        foreach (int layer in layers)
        {
            var ffn = Model.Ffn(layer);
            var entries = new List<(string Weight, string Bias, Linear Module)>();
            if (keys) entries.AddRange(ffn.Keys.Select(k => ($"{ffn.Prefix}.{ffn.KeyWeightName(k.Key)}", $"{ffn.Prefix}.{k.Key}.bias", k.Value)));
            if (values) entries.Add(($"{ffn.Prefix}.{ffn.ValueName}.weight", $"{ffn.Prefix}.{ffn.ValueName}.bias", ffn.Value));
            foreach (var (weight, bias, module) in entries)
            {
                if (!names.Contains(weight)) names.Add(weight);
                if (biases && module.bias is not null) names.Add(bias);
            }
        }
        return names;
    }

    /// <summary>
    /// Memory coefficients f(h·Kᵀ) of <paramref name="layer"/> for every token, <c>[B, T, memories]</c>
    /// (Llama: act(gate)·up), from one forward pass without gradients.
    /// </summary>
    public Tensor Coefficients(int layer, Tensor inputIds, Tensor? attentionMask = null, Tensor? positionIds = null)
    {
        using var recorder = Record(layer);
        using (no_grad())
        using (NewDisposeScope())
            Model.Forward(inputIds, attentionMask, positionIds);
        return recorder[layer].alias();
    }

    /// <summary>Coefficients at the given token <paramref name="positions"/> only, <c>[B, P, memories]</c>.</summary>
    public Tensor Coefficients(int layer, Tensor inputIds, long[] positions, Tensor? attentionMask = null)
    {
        using var scope = NewDisposeScope();
        var all = Coefficients(layer, inputIds, attentionMask);
        return all.index_select(1, tensor(positions)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Records the coefficients of <paramref name="layers"/> during whatever forward passes run until
    /// disposed (the last pass wins). Recorded tensors are detached copies owned by the recorder.
    /// </summary>
    public CoefficientRecorder Record(params int[] layers) => new(this, layers);

    private (string Name, Linear Module) Key(int layer, KeyKind? kind)
    {
        var keys = Model.Ffn(layer).Keys;
        if (keys.Count == 1)
        {
            if (kind is not null and not KeyKind.Fc)
                throw new ArgumentException($"{Model.Config.ModelType} has one key matrix per layer ({keys.Keys.Single()}); {kind} is a Llama key", nameof(kind));
            var only = keys.Single();
            return (only.Key, only.Value);
        }
        if (kind is null or KeyKind.Fc)
            throw new ArgumentException($"{Model.Config.ModelType} has two key matrices per layer; pass KeyKind.Gate or KeyKind.Up", nameof(kind));
        string name = ModuleNames[kind.Value];
        return (name, keys[name]);
    }
}

/// <summary>Forward pre-hooks on value modules that keep a copy of their input (the memory coefficients).</summary>
public sealed class CoefficientRecorder : IDisposable
{
    private readonly Dictionary<int, Tensor> _recorded = [];
    private readonly List<Linear.HookRemover> _hooks = [];

    internal CoefficientRecorder(FfnMemory memory, IEnumerable<int> layers)
    {
        foreach (int layer in layers.Distinct())
        {
            var module = memory.ValueModule(layer);
            _hooks.Add(module.register_forward_pre_hook((_, input) =>
            {
                var copy = FrozenLinear.Input(module, input).detach().clone().DetachFromDisposeScope();
                if (_recorded.Remove(layer, out var old)) old.Dispose();
                _recorded[layer] = copy;
                return input;
            }));
        }
    }

    /// <summary>The coefficients <c>[B, T, memories]</c> recorded for <paramref name="layer"/> by the last forward pass (owned by the recorder).</summary>
    public Tensor this[int layer] =>
        _recorded.TryGetValue(layer, out var t) ? t : throw new InvalidOperationException($"no forward pass has reached layer {layer}'s value module while recording");

    public bool Has(int layer) => _recorded.ContainsKey(layer);

    public void Dispose()
    {
        foreach (var hook in _hooks) hook.remove();
        _hooks.Clear();
        foreach (var t in _recorded.Values) t.Dispose();
        _recorded.Clear();
    }
}
