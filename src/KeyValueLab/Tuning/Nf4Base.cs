using KeyValueLab.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace KeyValueLab.Tuning;

/// <summary>
/// Freezes a model's linear layers in NF4 (QLoRA's "4-bit base"): each weight is replaced by an <see cref="Nf4Tensor"/>
/// through <see cref="FrozenLinear"/> (a zero-width placeholder parameter and forward hooks that add x·dequant(W)ᵀ with a
/// custom autograd function that dequantises again in the backward pass, as bitsandbytes' <c>MatMul4Bit</c> does). Only the
/// 4-bit bytes stay resident; the architectures keep their nn.Linear fields.
/// </summary>
/// <remarks>
/// As with <c>load_in_4bit</c> in Hugging Face transformers, <c>lm_head</c> stays in full precision.
/// Other forward hooks on a quantised linear (LoRA) read the real input with <see cref="InputOf"/>.
/// <see cref="ModelLoader.Load(string, LoadOptions?)"/> with <see cref="LoadOptions.FourBit"/> quantises each linear as it
/// is read (<see cref="Adopt"/>), so the fp32 model never exists; the bytes are those of <see cref="Quantize"/>.
/// </remarks>
public sealed class Nf4Base : IDisposable
{
    private readonly List<(string Name, Linear Module)> _layers = [];
    private readonly List<(string Name, FusedLinear Module)> _fused = [];  // fused linears, quantised whole (their parts are row views)
    private readonly bool _restoreOnDispose;

    private Nf4Base(bool restoreOnDispose) => _restoreOnDispose = restoreOnDispose;

    /// <summary>Linears quantised, by state-dict module name.</summary>
    public IReadOnlyList<string> Modules => [.. _layers.Select(l => l.Name), .. _fused.Select(f => f.Name)];

    /// <summary>Bytes the quantised weights take in fp32.</summary>
    public long Fp32Bytes => _layers.Sum(l => Of(l.Module)!.Count * 4) + _fused.Sum(f => Whole(f.Module).Count * 4);

    /// <summary>Bytes they take now (packed nibbles, 8-bit block scales, nested scales).</summary>
    public long Nf4Bytes => _layers.Sum(l => Of(l.Module)!.Bytes) + _fused.Sum(f => Whole(f.Module).Bytes);

    private static Nf4Tensor Whole(FusedLinear fused) => (Nf4Tensor)fused.Frozen!;

    /// <summary>
    /// Quantises every linear of <paramref name="model"/> except its head (<see cref="CausalLM.UnembeddingModule"/>:
    /// <c>lm_head</c> as in transformers, or GPT-NeoX's <c>embed_out</c>) and except those <paramref name="skip"/> names.
    /// </summary>
    public static Nf4Base Quantize(CausalLM model, Func<string, bool>? skip = null)
    {
        var result = new Nf4Base(restoreOnDispose: true);
        using var noGrad = no_grad();
        string? head = model.UnembeddingModule;
        foreach (var (name, module) in model.named_modules())
        {
            if (module is FusedLinear fused && !(skip?.Invoke(name) ?? false))
            {
                if (fused.Frozen is not null) throw new InvalidOperationException($"{name} is already quantised");
                QuantizeInto(fused, fused.weight, fused.weight.device);
                result._fused.Add((name, fused));
                continue;
            }
            if (module is not Linear linear || name == head || (skip?.Invoke(name) ?? false)) continue;
            if (Of(linear) is not null) throw new InvalidOperationException($"{name} is already quantised");
            if (FrozenLinear.Of(linear) is null) QuantizeInto(linear, linear.weight);
            else using (var fp32 = FrozenLinear.Weight(linear)) QuantizeInto(linear, fp32);
            result._layers.Add((name, linear));
        }
        return result;
    }

    /// <summary>
    /// Quantises <paramref name="fp32"/> <c>[out, in]</c> as the weight of <paramref name="linear"/> (frozen or plain), whose
    /// previous weight is released.
    /// </summary>
    internal static void QuantizeInto(Linear linear, Tensor fp32, Device? device = null)
    {
        var weight = Detached(Nf4Tensor.Quantize(fp32));
        if (FrozenLinear.Of(linear) is null) FrozenLinear.Freeze(linear, weight, device);
        else FrozenLinear.Replace(linear, weight);
    }

    /// <summary>
    /// Quantises <paramref name="fp32"/> <c>[sum(rows), in]</c> as the weight of a fused linear (Phi-3's <c>gate_up_proj</c>) in one
    /// NF4 tensor, as bitsandbytes quantises the one <c>nn.Linear</c> that holds it in transformers: blocks of 64 run on across
    /// the parts' rows and one offset and set of nested scales covers them all. Each part computes with its rows of it
    /// (<see cref="Nf4Tensor.RowView"/>), so the gate and up keys stay exactly the rows of the dequantised fused matrix.
    /// </summary>
    internal static void QuantizeInto(FusedLinear fused, Tensor fp32, Device device)
    {
        var whole = Detached(Nf4Tensor.Quantize(fp32));
        fused.Freeze(whole, whole.RowView, device);
    }

    /// <summary>The NF4 base of a model whose linears <paramref name="names"/> were quantised as they were loaded.</summary>
    /// <remarks>Its <see cref="Dispose"/> leaves them quantised: the fp32 weights never existed, and the
    /// <see cref="LoadedModel"/> releases them with the model.</remarks>
    internal static Nf4Base Adopt(CausalLM model, IEnumerable<string> names)
    {
        var result = new Nf4Base(restoreOnDispose: false);
        var modules = model.named_modules().ToDictionary(m => m.name, m => m.module, StringComparer.Ordinal);
        foreach (string name in names)
            if (modules[name] is FusedLinear { Frozen: Nf4Tensor } fused) result._fused.Add((name, fused));
            else result._layers.Add((name, modules[name] as Linear is { } l && Of(l) is not null ? l : throw new ArgumentException($"{name} is not a quantised linear", nameof(names))));
        return result;
    }

    /// <summary>The input of the current call of a quantised linear (its forward hooks see a zero-width view), or null.</summary>
    public static Tensor? InputOf(Linear linear) => FrozenLinear.InputOf(linear);

    /// <summary>The NF4 weight behind <paramref name="linear"/>, or null when it is not quantised.</summary>
    public static Nf4Tensor? Of(Linear linear) => FrozenLinear.Of(linear) as Nf4Tensor;

    /// <summary>
    /// Shape <c>[out, in]</c> of a linear's weight whether or not it is quantised.
    /// </summary>
    public static long[] WeightShape(Linear linear) => FrozenLinear.WeightShape(linear);

    /// <summary>The current fp32 weight of a linear: dequantised when quantised, else a copy.</summary>
    public static Tensor Weight(Linear linear) => FrozenLinear.Weight(linear);

    /// <summary>Replaces the weight of a linear: requantised when quantised (lossy, as PEFT's merge into 4-bit), else copied in place.</summary>
    public static void SetWeight(Linear linear, Tensor weight)
    {
        using var noGrad = no_grad();
        if (Of(linear) is null) { FrozenLinear.MakeMaster(linear).copy_(weight); return; }
        FrozenLinear.Replace(linear, Detached(Nf4Tensor.Quantize(weight)));
    }

    /// <summary>Takes the tensors of a new NF4 weight out of any dispose scope: they live as long as the linear holds them.</summary>
    private static Nf4Tensor Detached(Nf4Tensor weight)
    {
        foreach (var t in new[] { weight.Packed, weight.QuantizedAbsmax, weight.NestedAbsmax }) t.DetachFromDisposeScope();
        return weight;
    }

    /// <summary>Removes the hooks and puts the dequantised fp32 weights back (a base quantised at load stays quantised).</summary>
    public void Dispose()
    {
        if (_restoreOnDispose)
            foreach (var (_, linear) in _layers)
                if (Of(linear) is not null) FrozenLinear.MakeMaster(linear);
        if (_restoreOnDispose)
            foreach (var (_, fused) in _fused) fused.Thaw();
        _layers.Clear();
        _fused.Clear();
    }
}

/// <summary>
/// y = x·dequant(W)ᵀ with W frozen in NF4: the backward pass dequantises W again for dL/dx = dL/dy·W rather than
/// keeping the fp32 weight alive from the forward pass (bitsandbytes' MatMul4Bit does the same).
/// </summary>
internal sealed class Nf4LinearFunction : autograd.SingleTensorFunction<Nf4LinearFunction>
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
