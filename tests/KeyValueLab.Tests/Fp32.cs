using static TorchSharp.torch;

namespace KeyValueLab.Tests;

/// <summary>
/// How far two float32 computations of the same quantity may differ when they take different paths: cached vs
/// uncached decoding, a padded batch vs one row, a sliced vs a whole projection, our code on another CPU than the
/// one that wrote a stored reference.
/// </summary>
/// <remarks>
/// Each path rounds after every multiply-add, and BLAS kernels pick their blocking (so their summation order) by
/// matrix shape and by CPU (AVX2 vs AVX-512, AMD vs Intel, ARM64 NEON). The rounding error of a length-n fp32 sum
/// is about √n·ε of its magnitude in practice (n·ε in the worst case), compounded over the few layers of a
/// fixture model. 256 ulps of the largest magnitude compared covers sums of up to 4,096 terms (√4096 = 64) with a
/// factor 4 for compounding; a measured cross-CPU difference of 1.09e-5 on logits near 10 (where 1e-5 failed) sits
/// at about a tenth of it. A real bug (a wrong position, mask, cache slot or scale) moves results by 1e-2 of
/// their magnitude or more, far above the bound. Values near zero are compared at the bound for magnitude 1.
/// </remarks>
internal static class Fp32
{
    /// <summary>The spacing of float32 numbers at 1 (2⁻²³).</summary>
    public const double Epsilon = 1.0 / (1 << 23);

    public const double Ulps = 256;

    /// <summary>The bound for quantities whose largest absolute value is <paramref name="magnitude"/>.</summary>
    public static double Tolerance(double magnitude) => Ulps * Epsilon * Math.Max(1.0, Math.Abs(magnitude));

    public static double Tolerance(Tensor reference) => Tolerance(reference.abs().max().item<float>());

    public static double ToleranceOf(IEnumerable<float> reference) => Tolerance(reference.Select(Math.Abs).DefaultIfEmpty(0f).Max());

    public static double ToleranceOf(IEnumerable<double> reference) => Tolerance(reference.Select(Math.Abs).DefaultIfEmpty(0.0).Max());
}
