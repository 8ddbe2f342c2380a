using TorchSharp.Modules;
using static TorchSharp.torch;
using ComponentName = TorchSharp.Utils.ComponentNameAttribute;

namespace KeyValueLab.Models;

/// <summary>
/// LayerNorm over the last dimension with <c>weight</c> and <c>bias</c> (Hugging Face names), computed as nn.LayerNorm does
/// (<c>layer_norm</c>) except on the <c>meta</c> device, which has no kernel for it (see <see cref="MetaDevice"/>).
/// </summary>
internal sealed class MetaSafeLayerNorm : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "weight")] private readonly Parameter _weight;
    [ComponentName(Name = "bias")] private readonly Parameter _bias;
    private readonly long[] _shape;
    private readonly double _eps;

    public MetaSafeLayerNorm(long size, double eps, Device? device) : base("layer_norm")
    {
        _weight = new Parameter(ones(size, ScalarType.Float32, device));
        _bias = new Parameter(zeros(size, ScalarType.Float32, device));
        (_shape, _eps) = ([size], eps);
        RegisterComponents();
    }

    public Parameter weight => _weight;
    public Parameter bias => _bias;

    public override Tensor forward(Tensor x) => MetaDevice.LayerNorm(x, _shape, _weight, _bias, _eps);
}
