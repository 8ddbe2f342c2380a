using Microsoft.Win32.SafeHandles;
using TorchSharp;

namespace KeyValueLab.Checkpoints;

/// <summary>
/// Moves raw little-endian bytes between files and the storage of contiguous CPU tensors, without a
/// managed copy: file reads land directly in the tensor's memory. Large tensors go in chunks because
/// a span is limited to 2 GiB.
/// </summary>
internal static class TensorBytes
{
    /// <summary>Largest chunk moved at once; internal so tests can make it small to exercise chunking.</summary>
    internal static int ChunkBytes = 1 << 28;

    /// <summary>Fills the contiguous CPU tensor <paramref name="dest"/> with bytes read from <paramref name="offset"/>.</summary>
    public static void ReadInto(SafeFileHandle file, long offset, torch.Tensor dest, string path, string tensorName)
    {
        foreach (var (part, _) in Chunks(dest))
        {
            using (part)
            {
                Span<byte> span = part.bytes;
                while (!span.IsEmpty)
                {
                    int n = RandomAccess.Read(file, span, offset);
                    if (n == 0) throw new InputException(path, $"file ended while reading tensor {tensorName} (was it truncated after opening?)");
                    span = span[n..];
                    offset += n;
                }
            }
        }
    }

    /// <summary>Writes the storage bytes of a contiguous CPU tensor to <paramref name="stream"/>.</summary>
    public static void WriteTo(Stream stream, torch.Tensor source)
    {
        foreach (var (part, _) in Chunks(source))
            using (part) stream.Write(part.bytes);
    }

    /// <summary>Splits a contiguous tensor into flat views of at most <see cref="ChunkBytes"/> bytes each.</summary>
    private static IEnumerable<(torch.Tensor part, long start)> Chunks(torch.Tensor t)
    {
        if (!t.is_contiguous()) throw new ArgumentException("tensor must be contiguous", nameof(t));
        long count = t.numel();
        if (count == 0) yield break;
        long perChunk = Math.Max(1, ChunkBytes / t.ElementSize);
        using var flat = t.view(-1);
        for (long start = 0; start < count; start += perChunk)
            yield return (flat.narrow(0, start, Math.Min(perChunk, count - start)), start);
    }
}
