using System.Runtime.CompilerServices;
using KeyValueLab.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace KeyValueLab.Tuning;

/// <summary>
/// Freezes a model's linear layers in NF4 (QLoRA's "4-bit base"): each weight is replaced by an
/// <see cref="Nf4Tensor"/> and an empty placeholder; a forward pre-hook puts the dequantised fp32 weight
/// back for the duration of the call and a forward hook removes it again, so between calls only the
/// 4-bit bytes stay resident. The architectures keep their <c>nn.Linear</c> fields unchanged.
/// </summary>
/// <remarks>
/// As with <c>load_in_4bit</c> in Hugging Face transformers, <c>lm_head</c> stays in full precision.
/// Gradients still flow to the inputs (LoRA adapters upstream), but autograd keeps each dequantised
/// weight until the backward pass, so training holds fp32 copies of the layers it passes through.
/// </remarks>
public sealed class Nf4Base : IDisposable
{
    private static readonly ConditionalWeakTable<Linear, Nf4Tensor> Quantized = new();
    private readonly List<(string Name, Linear Module)> _layers = [];
    private readonly List<Action> _unhook = [];

    private Nf4Base() { }

    /// <summary>Linears quantised, by state-dict module name.</summary>
    public IReadOnlyList<string> Modules => [.. _layers.Select(l => l.Name)];

    /// <summary>Bytes the quantised weights took in fp32.</summary>
    public long Fp32Bytes { get; private set; }

    /// <summary>Bytes they take now (packed nibbles, 8-bit block scales, nested scales).</summary>
    public long Nf4Bytes => _layers.Sum(l => Of(l.Module)!.Bytes);

    /// <summary>Quantises every linear of <paramref name="model"/> except <c>lm_head</c> (and except those <paramref name="skip"/> names).</summary>
    public static Nf4Base Quantize(CausalLM model, Func<string, bool>? skip = null)
    {
        var result = new Nf4Base();
        foreach (var (name, module) in model.named_modules())
        {
            if (module is not Linear linear || name == "lm_head" || (skip?.Invoke(name) ?? false)) continue;
            if (Quantized.TryGetValue(linear, out _)) throw new InvalidOperationException($"{name} is already quantised");
            var weight = Nf4Tensor.Quantize(linear.weight!);
            result.Fp32Bytes += linear.weight!.NumberOfElements * 4;
            linear.weight = Placeholder();
            Quantized.Add(linear, weight);
            result._layers.Add((name, linear));
            var before = linear.register_forward_pre_hook((m, x) =>
            {
                ((Linear)m).weight = new Parameter(Of((Linear)m)!.Dequantize(), requires_grad: false);
                return x;
            });
            var after = linear.register_forward_hook((m, _, y) =>
            {
                ((Linear)m).weight = Placeholder();
                return y;
            });
            result._unhook.Add(() => { before.remove(); after.remove(); });
        }
        return result;
    }

    /// <summary>The NF4 weight behind <paramref name="linear"/>, or null when it is not quantised.</summary>
    public static Nf4Tensor? Of(Linear linear) => Quantized.TryGetValue(linear, out var w) ? w : null;

    /// <summary>
    /// Shape <c>[out, in]</c> of a linear's weight whether or not it is quantised.
    /// </summary>
    public static long[] WeightShape(Linear linear) => Of(linear)?.Shape ?? linear.weight!.shape;

    /// <summary>The current fp32 weight of a linear: dequantised when quantised, else a copy.</summary>
    public static Tensor Weight(Linear linear) => Of(linear)?.Dequantize() ?? linear.weight!.detach().clone();

    /// <summary>Replaces the weight of a linear: requantised when quantised (lossy, as PEFT's merge into 4-bit), else copied in place.</summary>
    public static void SetWeight(Linear linear, Tensor weight)
    {
        using var noGrad = no_grad();
        var old = Of(linear);
        if (old is null) { linear.weight!.copy_(weight); return; }
        Quantized.AddOrUpdate(linear, Nf4Tensor.Quantize(weight));
        old.Dispose();
    }

    private static Parameter Placeholder() => new(empty(0, ScalarType.Float32), requires_grad: false);

    /// <summary>Removes the hooks and puts the dequantised fp32 weights back.</summary>
    public void Dispose()
    {
        foreach (var unhook in _unhook) unhook();
        _unhook.Clear();
        foreach (var (_, linear) in _layers)
        {
            var weight = Of(linear)!;
            linear.weight = new Parameter(weight.Dequantize(), requires_grad: false);
            Quantized.Remove(linear);
            weight.Dispose();
        }
        _layers.Clear();
    }
}
