using TorchSharp;
using static TorchSharp.torch;

namespace KeyValueLab.Tuning;

// 4-bit NormalFloat (Dettmers et al. 2023, QLoRA) in bitsandbytes' storage layout: the tensor is
// flattened row-major and cut into blocks of 64; each block is scaled by its absmax and every value
// replaced by the index of the nearest of 16 code values; two indices share a byte, the first in the
// HIGH nibble. Double quantisation stores the per-block absmax values minus their mean as 8-bit
// indices into bitsandbytes' signed dynamic map, in blocks of 256 with one fp32 absmax each.

/// <summary>The code tables: NF4's 16 values and bitsandbytes' 256-entry signed dynamic map.</summary>
public static class Nf4Codes
{
    /// <summary>The 16 NF4 code values (quantiles of N(0,1) scaled to [-1, 1], with an exact zero).</summary>
    public static readonly float[] Nf4 =
    [
        -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
        -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
        0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
        0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f,
    ];

    /// <summary>
    /// bitsandbytes' <c>create_dynamic_map(signed=True)</c> (7 exponent bits, 8 bits): for exponent i in 0..6,
    /// the 2^i midpoints of linspace(0.1, 1, 2^i + 1) (float32) times ±10^(i−6), then 0 and 1, sorted.
    /// </summary>
    public static float[] DynamicSigned { get; } = BuildDynamicSigned();

    private static float[] BuildDynamicSigned()
    {
        var data = new List<float>();
        for (int i = 0; i < 7; i++)
        {
            int items = (1 << i) + 1;
            float[] boundaries = Linspace(0.1f, 1f, items);
            float scale = (float)Math.Pow(10, -6 + i);
            for (int k = 0; k + 1 < items; k++)
            {
                float mean = (boundaries[k] + boundaries[k + 1]) / 2f;
                data.Add(scale * mean);
                data.Add(-scale * mean);
            }
        }
        data.Add(0f);
        data.Add(1f);
        data.Sort();
        return [.. data];
    }

    // torch.linspace in float32 (same library, so the same float32 values as bitsandbytes gets).
    private static float[] Linspace(float start, float end, int steps)
    {
        using var t = linspace(start, end, steps, dtype: ScalarType.Float32);
        return t.data<float>().ToArray();
    }

    /// <summary>Decision boundaries between neighbouring sorted codes: a value goes to the lower code on a tie.</summary>
    internal static float[] Midpoints(float[] sortedCodes) =>
        [.. sortedCodes.Zip(sortedCodes.Skip(1), (a, b) => (a + b) / 2f)];
}

/// <summary>
/// One NF4-quantised weight with double-quantised block scales, laid out as bitsandbytes'
/// <c>Params4bit</c> + <c>QuantState</c> (<c>quant_type="nf4"</c>, <c>blocksize=64</c>,
/// <c>compress_statistics=True</c>): <see cref="Packed"/> = the 4-bit weight bytes,
/// <see cref="QuantizedAbsmax"/> = <c>state.absmax</c> (uint8), <see cref="Offset"/> = <c>state.offset</c>,
/// <see cref="NestedAbsmax"/> = <c>state.state2.absmax</c>, nested code = <see cref="Nf4Codes.DynamicSigned"/>.
/// </summary>
public sealed class Nf4Tensor : IDisposable
{
    public const int BlockSize = 64;
    public const int NestedBlockSize = 256;

    private static readonly float[] Nf4Midpoints = Nf4Codes.Midpoints(Nf4Codes.Nf4);
    private static readonly float[] DynamicMidpoints = Nf4Codes.Midpoints(Nf4Codes.DynamicSigned);

    // For each byte value b: (code[b >> 4], code[b & 15]); one gather decodes both nibbles.
    private static readonly float[] BytePairs = [.. Enumerable.Range(0, 256).SelectMany(b => new[] { Nf4Codes.Nf4[b >> 4], Nf4Codes.Nf4[b & 15] })];

    private Nf4Tensor(long[] shape, Tensor packed, Tensor qAbsmax, Tensor nestedAbsmax, float offset)
    {
        Shape = shape;
        Packed = packed;
        QuantizedAbsmax = qAbsmax;
        NestedAbsmax = nestedAbsmax;
        Offset = offset;
    }

    /// <summary>Shape of the original tensor (e.g. <c>[out, in]</c>).</summary>
    public long[] Shape { get; }

    /// <summary>Number of weights.</summary>
    public long Count => Shape.Aggregate(1L, (a, b) => a * b);

    /// <summary>uint8 <c>[ceil(n/2)]</c>: code indices, element 2k in the high nibble of byte k, 2k+1 in the low one.</summary>
    public Tensor Packed { get; }

    /// <summary>uint8 <c>[ceil(n/64)]</c>: each block's absmax minus <see cref="Offset"/>, as an index into the signed dynamic map.</summary>
    public Tensor QuantizedAbsmax { get; }

    /// <summary>float32 <c>[ceil(n/64/256)]</c>: the absmax of each block of 256 (centred) block scales.</summary>
    public Tensor NestedAbsmax { get; }

    /// <summary>Mean of the block absmax values, subtracted before their 8-bit quantisation.</summary>
    public float Offset { get; }

    /// <summary>Bytes held: packed weights, 8-bit scales, nested fp32 scales and the offset (the shared 256-entry code table not counted).</summary>
    public long Bytes => Packed.NumberOfElements + QuantizedAbsmax.NumberOfElements + NestedAbsmax.NumberOfElements * 4 + 4;

    /// <summary>Quantises <paramref name="weight"/> (any shape, read as float32, flattened row-major).</summary>
    public static Nf4Tensor Quantize(Tensor weight)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        long n = weight.NumberOfElements;
        if (n == 0) throw new ArgumentException("cannot quantise an empty tensor", nameof(weight));
        var (indices, absmax) = QuantizeBlocks(weight.detach().to(ScalarType.Float32).cpu().flatten(), BlockSize, Nf4Midpoints);
        if (indices.shape[0] % 2 == 1) indices = cat([indices, zeros(1, ScalarType.Int64)]);
        var pairs = indices.view(-1, 2);
        var packed = (pairs.select(1, 0) * 16 + pairs.select(1, 1)).to(ScalarType.Byte);   // [ceil(n/2)]
        packed = packed.narrow(0, 0, (n + 1) / 2);

        float offset = absmax.mean().item<float>();
        var (qAbsmax, nested) = QuantizeBlocks(absmax - offset, NestedBlockSize, DynamicMidpoints);
        return new Nf4Tensor(weight.shape.ToArray(), packed.contiguous().MoveToOuterDisposeScope(),
            qAbsmax.to(ScalarType.Byte).MoveToOuterDisposeScope(), nested.MoveToOuterDisposeScope(), offset);
    }

    /// <summary>
    /// Blockwise absmax quantisation of flat <paramref name="x"/>: per block of <paramref name="blockSize"/> (the last may be short)
    /// the absmax, and per value the index of the nearest code (given by its sorted midpoints) to x/absmax.
    /// Returns the indices <c>[n]</c> (int64) and absmax <c>[blocks]</c>.
    /// </summary>
    private static (Tensor Indices, Tensor Absmax) QuantizeBlocks(Tensor x, int blockSize, float[] midpoints)
    {
        long n = x.shape[0], blocks = (n + blockSize - 1) / blockSize, padded = blocks * blockSize;
        var full = padded == n ? x : cat([x, zeros(padded - n, ScalarType.Float32)]);
        var rows = full.view(blocks, blockSize);                                         // [blocks, B]
        var absmax = rows.abs().amax([1L]);                                              // [blocks]
        var safe = where(absmax > 0, absmax, ones_like(absmax));
        var scaled = (rows / safe.unsqueeze(1)).clamp(-1f, 1f);
        // searchsorted(left): the number of midpoints strictly below the value = nearest code, ties to the lower one.
        var indices = searchsorted(tensor(midpoints), scaled.flatten().contiguous());
        return (indices.narrow(0, 0, n), absmax);
    }

    /// <summary>Block scales as float32 <c>[ceil(n/64)]</c>: dynamic-map value × nested absmax + offset.</summary>
    public Tensor Absmax()
    {
        using var scope = NewDisposeScope();
        var code = tensor(Nf4Codes.DynamicSigned);
        var values = code.index_select(0, QuantizedAbsmax.to(ScalarType.Int64));
        var scales = NestedAbsmax.repeat_interleave(NestedBlockSize).narrow(0, 0, values.shape[0]);
        // The offset as a 0-dim tensor and the sum with a held alpha: no temporary Scalar (see HeldScalars).
        var offset = tensor(Offset);
        return (values * scales).Plus(offset).MoveToOuterDisposeScope();
    }

    /// <summary>The float32 weights <c>code[index] × absmax[block]</c>, in the original shape.</summary>
    /// <remarks>Decoded by a plain loop over the bytes (both cores), straight from the packed tensor's memory into the new
    /// tensor's: several times faster than the equivalent tensor ops (which would first widen every byte to an int64 index),
    /// and without managed arrays, which on every forward and backward pass of every quantised linear would make large-object
    /// garbage and so frequent full GCs.</remarks>
    public unsafe Tensor Dequantize()
    {
        long n = Count;
        using var absmaxTensor = Absmax();
        var result = empty(Shape, ScalarType.Float32);
        long blocks = absmaxTensor.shape[0];
        nint packedAt = Address(Packed), absmaxAt = Address(absmaxTensor), resultAt = Address(result);
        const int blocksPerTask = 256;
        Parallel.For(0, (int)((blocks + blocksPerTask - 1) / blocksPerTask), task =>
        {
            byte* packed = (byte*)packedAt;
            float* absmax = (float*)absmaxAt, output = (float*)resultAt;
            fixed (float* pairs = BytePairs)
            {
                long firstBlock = (long)task * blocksPerTask, lastBlock = Math.Min(blocks, firstBlock + blocksPerTask);
                for (long block = firstBlock; block < lastBlock; block++)
                {
                    float scale = absmax[block];
                    long start = block * BlockSize, end = Math.Min(n, start + BlockSize);
                    for (long i = start; i < end; i += 2)
                    {
                        int b = packed[i >> 1];
                        output[i] = pairs[2 * b] * scale;
                        if (i + 1 < end) output[i + 1] = pairs[2 * b + 1] * scale;
                    }
                }
            }
        });
        GC.KeepAlive(Packed);
        return result;
    }

    /// <summary>Address of element 0 of a contiguous CPU tensor; valid while the tensor lives.</summary>
    private static unsafe nint Address(Tensor t)
    {
        if (!t.is_contiguous() || t.device_type != DeviceType.CPU || t.numel() == 0)
            throw new ArgumentException("expected a non-empty contiguous CPU tensor", nameof(t));
        // A one-element view: its byte span starts at the first element and has no 2 GiB limit to hit.
        using var flat = t.view(-1);
        using var first = flat.narrow(0, 0, 1);
        fixed (byte* p = first.bytes) return (nint)p;
    }

    public void Dispose()
    {
        Packed.Dispose();
        QuantizedAbsmax.Dispose();
        NestedAbsmax.Dispose();
    }
}
