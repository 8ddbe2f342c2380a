using System.Runtime.CompilerServices;
using KeyValueLab.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace KeyValueLab.Tuning;

/// <summary>
/// Freezes a model's linear layers in NF4 (QLoRA's "4-bit base"): each weight is replaced by an <see cref="Nf4Tensor"/>
/// and a zero-width placeholder <c>[out, 0]</c>. A forward pre-hook keeps the real input and hands the linear a zero-width
/// view of it (so nn.Linear computes only its bias); a forward hook adds x·dequant(W)ᵀ through <see cref="Nf4LinearFunction"/>,
/// a custom autograd function that dequantises again in the backward pass instead of keeping the fp32 weight, as
/// bitsandbytes' <c>MatMul4Bit</c> does. Only the 4-bit bytes stay resident; the architectures keep their nn.Linear fields.
/// </summary>
/// <remarks>
/// As with <c>load_in_4bit</c> in Hugging Face transformers, <c>lm_head</c> stays in full precision.
/// Other forward hooks on a quantised linear (LoRA) read the real input with <see cref="InputOf"/>.
/// </remarks>
public sealed class Nf4Base : IDisposable
{
    private static readonly ConditionalWeakTable<Linear, Nf4Tensor> Quantized = new();
    private static readonly ConditionalWeakTable<Linear, Tensor> Inputs = new();
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
            var fp32 = linear.weight!;
            linear.weight = Placeholder(weight.Shape[0]);
            fp32.Dispose();  // free the fp32 storage now, not at the next GC
            Quantized.Add(linear, weight);
            result._layers.Add((name, linear));
            var before = linear.register_forward_pre_hook((m, x) =>
            {
                Inputs.AddOrUpdate((Linear)m, x);
                return x.narrow(-1, 0, 0);  // [.., 0]: nn.Linear then yields just its bias
            });
            var after = linear.register_forward_hook((m, _, y) =>
            {
                var lin = (Linear)m;
                return y.Plus(Nf4LinearFunction.Apply(InputOf(lin)!, Of(lin)!));  // [.., out]; held alpha (see HeldScalars)
            });
            result._unhook.Add(() => { before.remove(); after.remove(); });
        }
        return result;
    }

    /// <summary>The input of the current call of a quantised linear (its forward hooks see a zero-width view), or null.</summary>
    public static Tensor? InputOf(Linear linear) => Inputs.TryGetValue(linear, out var x) ? x : null;

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

    private static Parameter Placeholder(long outFeatures) => new(empty(outFeatures, 0, ScalarType.Float32), requires_grad: false);

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
            Inputs.Remove(linear);
            weight.Dispose();
        }
        _layers.Clear();
    }
}

/// <summary>
/// y = x·dequant(W)ᵀ with W frozen in NF4: the backward pass dequantises W again for dL/dx = dL/dy·W rather than
/// keeping the fp32 weight alive from the forward pass (bitsandbytes' MatMul4Bit does the same).
/// </summary>
public sealed class Nf4LinearFunction : autograd.SingleTensorFunction<Nf4LinearFunction>
{
    public override string Name => nameof(Nf4LinearFunction);

    /// <summary>x <c>[.., in]</c> → <c>[.., out]</c>; plain dequantise-then-matmul when no gradient is needed.</summary>
    public static Tensor Apply(Tensor x, Nf4Tensor weight)
    {
        if (!is_grad_enabled() || !x.requires_grad)
        {
            using var w = weight.Dequantize();
            return nn.functional.linear(x, w);
        }
        return apply(x, weight);
    }

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var (x, weight) = ((Tensor)vars[0], (Nf4Tensor)vars[1]);
        ctx.save_data("weight", weight);
        using var w = weight.Dequantize();
        return nn.functional.linear(x, w);
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
    {
        var weight = (Nf4Tensor)ctx.get_data("weight");
        using var w = weight.Dequantize();
        return [gradOutput.matmul(w), null!];  // [.., out]·[out, in]; no gradient for the frozen weight
    }
}
