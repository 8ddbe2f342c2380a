using TorchSharp.Modules;
using static TorchSharp.torch;
using ComponentName = TorchSharp.Utils.ComponentNameAttribute;

namespace KeyValueLab.Models;

/// <summary>
/// A lookup table <c>weight</c> <c>[count, dim]</c> (token or position embeddings). TorchSharp's
/// nn.Embedding always builds and initialises its table on the CPU before moving it, which for real
/// vocabularies costs seconds even on the meta device; this one allocates where it is asked to.
/// </summary>
internal sealed class TokenEmbedding : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "weight")] private readonly Parameter _weight;

    public TokenEmbedding(long count, long dim, Device? device) : base("embedding")
    {
        _weight = new Parameter(zeros(count, dim, ScalarType.Float32, device));
        RegisterComponents();
    }

    public Parameter weight => _weight;

    /// <summary>Rows of the table for <paramref name="ids"/> <c>[...]</c> → <c>[..., dim]</c>.</summary>
    public override Tensor forward(Tensor ids) => MetaDevice.Rows(_weight, ids);
}
