using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using ComponentName = TorchSharp.Utils.ComponentNameAttribute;

namespace KeyValueLab.Models;

/// <summary>
/// A bias-free linear layer whose checkpoint stores several matrices stacked by rows in one <c>weight</c>
/// (Phi-3's <c>gate_up_proj</c> = [gate | up]), computed as its parts so that each part is a module of its own.
/// </summary>
/// <remarks>
/// Each part is a <see cref="Linear"/> whose weight is a view of rows of the one registered
/// <c>weight</c> (same storage), so the state dict keeps the Hugging Face name and shape, loading and
/// restoring fill the parts, and an edit of one part (FT's optimiser step on it, a rank-one update, a merged
/// LoRA) changes only its rows. Hooks on a part see that part's input and output, as on any key module.
/// The parts are not registered: their weights are not parameters of the model a second time. They do
/// not require gradients until an editor asks for them (see <c>FrozenParameters</c>); the registered weight
/// itself takes no part in autograd. Only in-place changes of <c>weight</c> reach the parts; the loader, which
/// builds the model on <c>meta</c> and puts each weight in place as it is read, hands the new tensor to
/// <see cref="Adopt"/> so that the parts become views of it.
/// </remarks>
internal sealed class FusedLinear : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "weight")] private Parameter _weight;
    private IReadOnlyList<(string Name, Linear Module)> _parts;  // not registered: views of _weight's rows

    /// <summary>A fused layer <c>[sum(rows), inFeatures]</c> with named parts of the given rows each, in order.</summary>
    public FusedLinear(long inFeatures, IReadOnlyList<(string Name, long Rows)> parts, Device? device) : base("fused")
    {
        _weight = new Parameter(zeros(parts.Sum(p => p.Rows), inFeatures, ScalarType.Float32, device));
        _parts = Views(_weight, [.. parts]);
        RegisterComponents();
    }

    private static List<(string, Linear)> Views(Tensor weight, IReadOnlyList<(string Name, long Rows)> parts)
    {
        var list = new List<(string, Linear)>();
        long offset = 0;
        foreach (var (name, n) in parts)
        {
            list.Add((name, nn.Linear(new Parameter(weight.detach().narrow(0, offset, n), requires_grad: false), null)));
            offset += n;
        }
        return list;
    }

    /// <summary>
    /// Makes <paramref name="weight"/> (already registered as this module's <c>weight</c> by the caller) the fused
    /// matrix, and the parts views of its rows; the old parts are disposed.
    /// </summary>
    internal void Adopt(Parameter weight)
    {
        var layout = _parts.Select(p => (p.Name, p.Module.weight!.shape[0])).ToList();
        foreach (var (_, part) in _parts) part.Dispose();
        _weight = weight;
        _parts = Views(weight, layout);
    }

    public Parameter weight => _weight;

    /// <summary>The whole weight in another form (NF4) after <see cref="Freeze"/>, or null while it is an fp32 parameter.</summary>
    public IFrozenWeight? Frozen { get; private set; }

    /// <summary>
    /// Keeps the weight in another form: <paramref name="whole"/> <c>[sum(rows), in]</c> (owned from now on) stands for it, each
    /// part becomes a frozen linear over <paramref name="rows"/>(start, count) of it (views that share its bytes), and the
    /// registered <c>weight</c> a zero-width placeholder <c>[sum(rows), 0]</c> on <paramref name="device"/>, as a frozen
    /// <see cref="Linear"/>'s. For NF4 at load (<c>Nf4Base.QuantizeInto</c>), so the fused matrix is quantised as one tensor.
    /// </summary>
    internal void Freeze(IFrozenWeight whole, Func<long, long, IFrozenWeight> rows, Device device)
    {
        if (Frozen is not null) throw new InvalidOperationException("the fused linear is already frozen");
        if (!whole.Shape.SequenceEqual(_weight.shape))
            throw new ArgumentException($"the weight is [{string.Join(", ", whole.Shape)}], the fused linear [{string.Join(", ", _weight.shape)}]", nameof(whole));
        long offset = 0;
        foreach (var (_, part) in _parts)
        {
            long n = part.weight!.shape[0];
            FrozenLinear.Freeze(part, rows(offset, n), device);
            offset += n;
        }
        _requiredGrad = _weight.requires_grad;
        var placeholder = new Parameter(empty([whole.Shape[0], 0], ScalarType.Float32, device), requires_grad: false);
        placeholder.DetachFromDisposeScope();  // lives with the module, not with the caller's scope
        Register(placeholder);
        Frozen = whole;
    }

    private bool _requiredGrad;

    /// <summary>Undoes <see cref="Freeze"/>: the weight becomes the fp32 matrix <see cref="Frozen"/> decodes to, the parts views of it again.</summary>
    internal void Thaw()
    {
        if (Frozen is null) return;
        var fp32 = new Parameter(Frozen.Widen(0, Frozen.Shape[0]), requires_grad: _requiredGrad);
        fp32.DetachFromDisposeScope();
        foreach (var (_, part) in _parts) FrozenLinear.Release(part);
        Register(fp32);
        Frozen.Dispose();
        Frozen = null;
        Adopt(fp32);
    }

    /// <summary>Registers <paramref name="weight"/> as this module's <c>weight</c> in place of the current one, which is disposed.</summary>
    private void Register(Parameter weight)
    {
        ConditionallyRegisterParameter("weight", weight);
        _weight.Dispose();
        _weight = weight;
    }

    /// <summary>The parts by name (Phi-3: <c>gate</c>, <c>up</c>), each a linear whose weight is rows of <see cref="weight"/>.</summary>
    public IReadOnlyList<(string Name, Linear Module)> Parts => _parts;

    /// <summary>Part <paramref name="index"/>.</summary>
    public Linear Part(int index) => _parts[index].Module;

    /// <summary>x·Wᵀ, as the parts' outputs side by side <c>[..., sum(rows)]</c>.</summary>
    public override Tensor forward(Tensor x) => cat([.. _parts.Select(p => p.Module.call(x))], dim: -1);

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            foreach (var (_, part) in _parts)
            {
                FrozenLinear.Release(part);
                part.Dispose();
            }
            Frozen?.Dispose();
        }
        base.Dispose(disposing);
    }
}
