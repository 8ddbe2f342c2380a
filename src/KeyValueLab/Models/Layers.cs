using TorchSharp.Modules;
using static TorchSharp.torch;

namespace KeyValueLab.Models;

/// <summary>
/// Linear layers allocated directly on the requested device and filled with zeros. Architectures are
/// built empty and then filled (<see cref="ModelLoader.Load"/>) or initialised
/// (<see cref="ModelLoader.Create(ModelConfig, long)"/>); TorchSharp's nn.Linear would first spend
/// seconds on a Kaiming initialisation that is thrown away (≈9 s for GPT-2 XL on two cores).
/// </summary>
internal static class Layers
{
    /// <summary>y = x·Wᵀ + b with W <c>[outFeatures, inFeatures]</c>.</summary>
    public static Linear Linear(long inFeatures, long outFeatures, bool hasBias, Device? device) =>
        nn.Linear(
            new Parameter(zeros(outFeatures, inFeatures, ScalarType.Float32, device)),
            hasBias ? new Parameter(zeros(outFeatures, ScalarType.Float32, device)) : null);
}
