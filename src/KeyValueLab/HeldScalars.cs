using TorchSharp;
using static TorchSharp.torch;

namespace KeyValueLab;

/// <summary>
/// Scalars that stay alive while libtorch reads them, for the code that runs every training or generation step.
/// </summary>
/// <remarks>
/// <para>
/// TorchSharp 0.107 turns numbers into <see cref="Scalar"/> objects implicitly (<c>x * 0.5</c>, <c>x + 1e-6</c>,
/// <c>x.pow(2)</c>, <c>x.square()</c>, and even <c>a + b</c> of two tensors or <c>x.add(scalar)</c>, whose <c>alpha = 1</c> is
/// such a Scalar)
/// and hands <c>scalar.Handle</c> to native code without <c>GC.KeepAlive</c>. After the handle is read the temporary
/// is garbage: a GC at that moment (any thread may start one) lets the finalizer thread free the native
/// <c>c10::Scalar</c> while libtorch is still reading it, and the op fails with "Unknown scalar type" or a
/// <c>Scalar::toFloat</c> check (dotnet/TorchSharp#1434, #1496). The more garbage the process makes, the likelier.
/// </para>
/// <para>
/// On per-step paths we therefore pass only Scalars that are reachable for the whole native call: the static ones
/// here (never freed), readonly fields of the object that uses them, or <c>using</c> locals (freed after the call),
/// and add tensors with <see cref="Plus"/>. Code that runs once per command or per edit (loading, quantising, a closed-form update) keeps the
/// plain operators. The rule follows how often code runs, not its namespace: the editors' optimisation loops (FT, the
/// ROME/Key-ROME/MEMIT target vectors) are per-step code too and use <c>AdamWOptimizer.Adam</c> instead of <c>optim.Adam</c>;
/// <c>TemporaryScalarTests</c> reads the IL of all of it.
/// </para>
/// <para>
/// The upstream fix that retires this rule (and its audit): dotnet/TorchSharp#1496, which includes #1434, makes TorchSharp's
/// operators and methods dispose the Scalars they convert after the native call returns, so they stay alive while libtorch
/// reads them. Both pull requests were open when this was written; once a TorchSharp release contains #1496, update the
/// package and drop the held Scalars where they only serve this rule.
/// </para>
/// </remarks>
internal static class HeldScalars
{
    /// <summary>1 as an integer Scalar: a valid <c>alpha</c> for float and integer tensors alike. Never disposed.</summary>
    public static readonly Scalar One = 1L.ToScalar();

    /// <summary>2 as an integer Scalar, for <c>x.pow(Two)</c>: what TorchSharp's <c>square()</c> computes, without its temporary.</summary>
    public static readonly Scalar Two = 2L.ToScalar();

    /// <summary><paramref name="a"/> + <paramref name="b"/> with the held <see cref="One"/> as alpha (TorchSharp's <c>+</c> makes a temporary one).</summary>
    public static Tensor Plus(this Tensor a, Tensor b) => a.add(b, One);

    /// <summary>In-place <paramref name="a"/> += <paramref name="b"/> with the held <see cref="One"/> as alpha.</summary>
    public static Tensor PlusInPlace(this Tensor a, Tensor b) => a.add_(b, One);

    /// <summary><c>torch.arange(start, stop, step)</c> over integers, its Scalars held until it returns.</summary>
    public static Tensor Arange(long start, long stop, long step, ScalarType dtype, Device? device)
    {
        using Scalar from = start, to = stop, by = step;
        return arange(from, to, by, dtype, device);
    }
}
