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
/// itself takes no part in autograd. Only in-place changes of <c>weight</c> reach the parts: replacing
/// the tensor (another dtype or device) would cut them off, which this CPU/fp32 code base never does.
/// </remarks>
public sealed class FusedLinear : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "weight")] private readonly Parameter _weight;
    private readonly IReadOnlyList<Linear> _parts;  // not registered: views of _weight's rows

    /// <summary>A fused layer <c>[sum(rows), inFeatures]</c> with parts of <paramref name="rows"/> rows each, in order.</summary>
    public FusedLinear(long inFeatures, IReadOnlyList<long> rows, Device? device) : base("fused")
    {
        _weight = new Parameter(zeros(rows.Sum(), inFeatures, ScalarType.Float32, device));
        var parts = new List<Linear>();
        long offset = 0;
        foreach (long n in rows)
        {
            parts.Add(nn.Linear(new Parameter(_weight.detach().narrow(0, offset, n), requires_grad: false), null));
            offset += n;
        }
        _parts = parts;
        RegisterComponents();
    }

    public Parameter weight => _weight;

    /// <summary>Part <paramref name="index"/>: a linear whose weight is rows of <see cref="weight"/>.</summary>
    public Linear Part(int index) => _parts[index];

    /// <summary>x·Wᵀ, as the parts' outputs side by side <c>[..., sum(rows)]</c>.</summary>
    public override Tensor forward(Tensor x) => cat([.. _parts.Select(p => p.call(x))], dim: -1);

    protected override void Dispose(bool disposing)
    {
        if (disposing)
            foreach (var part in _parts) part.Dispose();
        base.Dispose(disposing);
    }
}
