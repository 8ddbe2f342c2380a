using static TorchSharp.torch;

namespace KeyValueLab.Models;

/// <summary>
/// The final projection onto the vocabulary, <c>hidden · Wᵀ (+ b)</c>, shared by every architecture.
/// </summary>
/// <remarks>
/// With a large vocabulary (GPT-2's 50,257) one big <c>linear</c> runs at well under the machine's
/// matmul rate on CPU: the <c>[rows, vocab]</c> output and the weight do not stay in cache. Computing
/// it in vocabulary slices of <see cref="Slice"/> rows into one output tensor runs 30–50 % faster here
/// (measured: bench/KeyValueLab.Benchmarks, docs/performance.md). Slicing is used only without
/// gradients, where it is plainly the same arithmetic; with gradients the single linear stays.
/// </remarks>
public static class Unembedding
{
    /// <summary>Vocabulary rows per slice: a 2048 × 768 fp32 weight slice is 6 MiB.</summary>
    public const int Slice = 2048;

    /// <summary>Logits <c>[..., vocab]</c> for <paramref name="hidden"/> <c>[..., d_model]</c>.</summary>
    public static Tensor Project(Tensor hidden, Tensor weight, Tensor? bias = null)
    {
        long vocab = weight.shape[0];
        long rows = hidden.numel() / hidden.shape[^1];
        if (is_grad_enabled() || vocab < 4 * Slice || rows < 16 || hidden.device_type != TorchSharp.DeviceType.CPU)
            return nn.functional.linear(hidden, weight, bias);

        var flat = hidden.reshape(rows, hidden.shape[^1]);                         // [N, d]
        var output = empty([rows, vocab], dtype: hidden.dtype, device: hidden.device); // [N, V]
        using (NewDisposeScope())
        {
            for (long start = 0; start < vocab; start += Slice)
            {
                long n = Math.Min(Slice, vocab - start);
                var part = nn.functional.linear(flat, weight.narrow(0, start, n), bias?.narrow(0, start, n)); // [N, n]
                output.narrow(1, start, n).copy_(part);
            }
        }
        long[] shape = [.. hidden.shape[..^1], vocab];
        return output.view(shape);
    }
}
