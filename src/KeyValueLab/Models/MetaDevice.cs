using TorchSharp;
using static TorchSharp.torch;

namespace KeyValueLab.Models;

/// <summary>
/// The few places where TorchSharp's <c>meta</c> device (shapes, no storage) needs another route than the CPU, so that a
/// forward pass, an edit and a training step can run on <c>meta</c> to prove that every tensor the code creates is on the
/// model's device (tests/…/Models/MetaDeviceTests.cs).
/// </summary>
/// <remarks>
/// libtorch 2.10's CPU build has no meta kernel for <c>index_select</c>, <c>native_batch_norm</c> (which <c>layer_norm</c> reaches on <c>meta</c>),
/// <c>where.self</c> (inside <c>scaled_dot_product_attention</c>), <c>abs</c> (inside <c>logsumexp</c>) or <c>var</c> (which aborts the process instead of throwing),
/// and a meta tensor has no values to read back. Only <c>meta</c> takes the composites below: on every other device the
/// fused ops run unchanged, so the CPU numerics are those of before, bit for bit. The composites compute the same
/// function in another summation order; nothing reads their (absent) values.
/// </remarks>
internal static class MetaDevice
{
    /// <summary>True when <paramref name="t"/> is on <c>meta</c>.</summary>
    public static bool Is(Tensor t) => t.device_type == DeviceType.META;

    /// <summary>The value of a one-element tensor, or NaN on <c>meta</c> (no value), so loops that stop early run their fixed steps there.</summary>
    public static double Read(Tensor t) => Is(t) ? double.NaN : t.item<float>();

    /// <summary>
    /// Rows of <paramref name="table"/> <c>[count, dim]</c> for <paramref name="ids"/> <c>[...]</c> → <c>[..., dim]</c>: <c>index_select</c>,
    /// on <c>meta</c> advanced indexing (the same rows; its backward sums the gradients of repeated ids in another order,
    /// measured different in the last bits on the CPU, so the CPU keeps <c>index_select</c>).
    /// </summary>
    public static Tensor Rows(Tensor table, Tensor ids) =>
        Is(table) ? table.index(ids) : table.index_select(0, ids.reshape(-1)).view([.. ids.shape, table.shape[1]]);

    /// <summary>log Σ exp over <paramref name="dim"/>; on <c>meta</c> written out (<c>logsumexp</c> reaches <c>abs</c>, which has no meta kernel).</summary>
    public static Tensor LogSumExp(Tensor x, long dim) => Is(x) ? x.exp().sum(dim).log() : x.logsumexp(dim);

    /// <summary>
    /// layer_norm over the last dimension; on <c>meta</c> as mean and mean square deviation (no <c>var</c>: see remarks).
    /// </summary>
    public static Tensor LayerNorm(Tensor x, long[] shape, Tensor weight, Tensor? bias, double eps)
    {
        if (!Is(x)) return nn.functional.layer_norm(x, shape, weight, bias, eps);
        using Scalar epsilon = eps;
        var centred = x.Plus(x.mean([-1L], keepdim: true).neg());  // held Scalars: a forward pass is per-step code (see HeldScalars)
        var variance = centred.mul(centred).mean([-1L], keepdim: true);
        var y = centred.mul(variance.add(epsilon, HeldScalars.One).rsqrt()).mul(weight);
        return bias is null ? y : y.Plus(bias);
    }

    /// <summary>
    /// scaled_dot_product_attention of <c>[B, H, T, d]</c> queries over <c>[B, H, Tk, d]</c> keys and values; on <c>meta</c>
    /// as softmax(q·kᵀ/√d + mask)·v (the causal mask from comparisons: no <c>where</c>).
    /// </summary>
    public static Tensor Attention(Tensor q, Tensor k, Tensor v, Tensor? mask, bool isCausal)
    {
        if (!Is(q)) return nn.functional.scaled_dot_product_attention(q, k, v, mask, is_casual: isCausal);
        using Scalar scale = 1.0 / Math.Sqrt(q.shape[^1]), lowest = float.MinValue;
        var scores = q.matmul(k.transpose(-2, -1)).mul(scale);  // [B, H, T, Tk]
        if (mask is not null) scores = scores.Plus(mask);
        if (isCausal)
        {
            long t = q.shape[^2], tk = k.shape[^2];
            var queryAt = HeldScalars.Arange(tk - t, tk, 1, ScalarType.Int64, q.device).unsqueeze(1);  // [T, 1]
            var keyAt = HeldScalars.Arange(0, tk, 1, ScalarType.Int64, q.device).unsqueeze(0);          // [1, Tk]
            scores = scores.masked_fill(keyAt.gt(queryAt), lowest);
        }
        return nn.functional.softmax(scores, -1).matmul(v);
    }
}
