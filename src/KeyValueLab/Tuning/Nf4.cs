using KeyValueLab.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace KeyValueLab.Tuning;

// 4-bit NormalFloat (Dettmers et al. 2023, QLoRA) in bitsandbytes' storage layout: the tensor is
// flattened row-major and cut into blocks of 64; each block is scaled by its absmax and every value
// replaced by the index of the nearest of 16 code values; two indices share a byte, the first in the
// HIGH nibble. Double quantisation stores the per-block absmax values minus their mean as 8-bit
// indices into bitsandbytes' signed dynamic map, in blocks of 256 with one fp32 absmax each.
//
// The rounding details follow bitsandbytes' CUDA kernel (kQuantizeBlockwise), checked byte for byte against it
// (tests/KeyValueLab.Tests/Tuning/PythonReferenceTests.cs): values are multiplied by the reciprocal of the block
// absmax (not divided by it); the NF4 decision thresholds are the kernel's float constants (four of them one ulp
// away from the float32 midpoints); a value equal to a threshold takes the lower code (in the 8-bit map's binary
// search, the even one of the two); a block whose absmax is 0 gets index 0 everywhere (the kernel computes
// 0 · (1/0) = NaN, which falls through every comparison to index 0; it dequantises to 0 all the same); an odd count
// is padded with 0.0, whose index fills the last low nibble.

/// <summary>The code tables: NF4's 16 values and bitsandbytes' 256-entry signed dynamic map.</summary>
internal static class Nf4Codes
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

    /// <summary>
    /// The 15 NF4 decision thresholds as bitsandbytes' CUDA kernel (<c>dQuantizeNF4</c>) stores them: the float32 nearest
    /// to its decimal constants, which are the exact midpoints of neighbouring codes. Thresholds 0, 8, 12 and 14 lie one ulp
    /// from the float32 midpoint <c>(a + b) / 2</c> (the exact midpoint falls halfway between two floats and the decimal
    /// constant rounds away from the even one). A value above threshold k takes code k + 1 or higher.
    /// </summary>
    public static readonly float[] Nf4Thresholds =
    [
        -0.8480964303016663f, -0.6106328964233398f, -0.4599952697753906f, -0.33967941999435425f,
        -0.23460739850997925f, -0.13791173696517944f, -0.045525018125772476f, 0.03979014977812767f,
        0.1202552542090416f, 0.2035212516784668f, 0.2920137643814087f, 0.3893125355243683f,
        0.5016633868217468f, 0.6427869200706482f, 0.8614783883094788f,
    ];

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
public sealed class Nf4Tensor : IFrozenWeight
{
    public const int BlockSize = 64;
    public const int NestedBlockSize = 256;

    private static readonly float[] Nf4Midpoints = Nf4Codes.Nf4Thresholds;
    private static readonly float[] DynamicMidpoints = Nf4Codes.Midpoints(Nf4Codes.DynamicSigned);

    // For each byte value b: (code[b >> 4], code[b & 15]); one gather decodes both nibbles.
    private static readonly float[] BytePairs = [.. Enumerable.Range(0, 256).SelectMany(b => new[] { Nf4Codes.Nf4[b >> 4], Nf4Codes.Nf4[b & 15] })];

    private Nf4Tensor(long[] shape, Tensor packed, Tensor qAbsmax, Tensor nestedAbsmax, float offset, long first = 0, bool isView = false)
    {
        Shape = shape;
        (_first, IsRowView) = (first, isView);
        Packed = packed;
        QuantizedAbsmax = qAbsmax;
        NestedAbsmax = nestedAbsmax;
        Offset = offset;
    }

    private readonly long _first;  // element of the quantised tensor where a row view starts (0 for a whole tensor)

    /// <summary>
    /// True for <see cref="RowView"/>: rows of another NF4 tensor (a fused weight's part), sharing its bytes; <see cref="Packed"/>,
    /// the scales and <see cref="Offset"/> are then those of the whole tensor.
    /// </summary>
    public bool IsRowView { get; }

    /// <summary>Shape of the original tensor (e.g. <c>[out, in]</c>); for a row view, its rows.</summary>
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

    /// <summary>
    /// Bytes held: packed weights, 8-bit scales, nested fp32 scales and the offset (the shared 256-entry code table not counted);
    /// 0 for a row view, whose bytes are the whole tensor's.
    /// </summary>
    public long Bytes => IsRowView ? 0 : Packed.NumberOfElements + QuantizedAbsmax.NumberOfElements + NestedAbsmax.NumberOfElements * 4 + 4;

    /// <summary>
    /// Rows <c>[start, start + count)</c> of this 2-D tensor as an NF4 tensor of their own that shares these bytes (new handles
    /// to the same storage, so either can be disposed first): how a fused weight quantised whole, as bitsandbytes quantises a
    /// fused <c>nn.Linear</c>, serves its parts. Dequantising it gives exactly those rows of <see cref="Dequantize"/>.
    /// </summary>
    internal Nf4Tensor RowView(long start, long count)
    {
        if (Shape.Length != 2 || IsRowView || start < 0 || count < 1 || start + count > Shape[0])
            throw new ArgumentException($"rows [{start}, {start + count}) of an NF4 tensor [{string.Join(", ", Shape)}]{(IsRowView ? " that is a view" : "")}");
        // New handles, out of any dispose scope: they live as long as the view.
        return new Nf4Tensor([count, Shape[1]], Packed.detach().DetachFromDisposeScope(), QuantizedAbsmax.detach().DetachFromDisposeScope(),
            NestedAbsmax.detach().DetachFromDisposeScope(), Offset, start * Shape[1], isView: true);
    }

    /// <summary>Quantises <paramref name="weight"/> (any shape, read as float32, flattened row-major).</summary>
    public static Nf4Tensor Quantize(Tensor weight) => Quantize(weight, blockReciprocals: null);

    /// <summary>
    /// As <see cref="Quantize(Tensor)"/>; <paramref name="blockReciprocals"/> replaces the IEEE reciprocals 1/absmax of the
    /// 64-value blocks (a test seam: bitsandbytes' kernel uses the GPU's approximate reciprocal, which differs in the last bit
    /// for some absmax values).
    /// </summary>
    internal static Nf4Tensor Quantize(Tensor weight, Tensor? blockReciprocals)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        long n = weight.NumberOfElements;
        if (n == 0) throw new ArgumentException("cannot quantise an empty tensor", nameof(weight));
        var flat = weight.detach().reshape(-1);  // a view when contiguous (e.g. a memory-mapped BF16 weight): widened chunk by chunk below
        long blocks = (n + BlockSize - 1) / BlockSize;
        var inverse = blockReciprocals?.to(ScalarType.Float32).cpu().flatten();
        if (inverse is not null && inverse.shape[0] != blocks) throw new ArgumentException($"{inverse.shape[0]} reciprocals for {blocks} blocks", nameof(blockReciprocals));
        var packed = empty((n + 1) / 2, ScalarType.Byte);
        var absmax = empty(blocks, ScalarType.Float32);
        // Chunks of whole blocks: each block's arithmetic is independent, so the bytes are those of one pass over the whole
        // tensor, while the temporaries (int64 indices: 8 bytes a value) stay a few MB instead of several times the weight.
        for (long start = 0; start < n; start += QuantizeChunk)
        {
            using var chunkScope = NewDisposeScope();
            long count = Math.Min(QuantizeChunk, n - start), firstBlock = start / BlockSize, chunkBlocks = (count + BlockSize - 1) / BlockSize;
            var part = flat.narrow(0, start, count).to(ScalarType.Float32).cpu();
            // An odd count (only the last chunk can have one) is padded with one 0.0 inside the last block: its index fills the last low nibble.
            if (count % 2 == 1) part = cat([part, zeros(1, ScalarType.Float32)]);
            QuantizeNf4Blocks(part.contiguous(), inverse?.narrow(0, firstBlock, chunkBlocks).contiguous(),
                packed.narrow(0, start / 2, (part.shape[0] + 1) / 2), absmax.narrow(0, firstBlock, chunkBlocks));
        }

        float offset = absmax.mean().item<float>();
        var (qAbsmax, nested) = QuantizeBlocks(absmax - tensor(offset), NestedBlockSize, DynamicMidpoints, tiesToEven: true);
        return new Nf4Tensor(weight.shape.ToArray(), packed.MoveToOuterDisposeScope(),
            qAbsmax.to(ScalarType.Byte).MoveToOuterDisposeScope(), nested.MoveToOuterDisposeScope(), offset);
    }

    /// <summary>
    /// The NF4 stage of <see cref="QuantizeBlocks"/> as a plain loop (both cores) writing packed bytes and block absmax
    /// straight into <paramref name="packed"/> and <paramref name="absmax"/>: the same float32 operations as the kernel
    /// (absmax, its IEEE reciprocal, x · (1/absmax), the count of thresholds strictly below; index 0 in a block whose
    /// absmax is 0), an order of magnitude faster than the tensor ops, which widen every index to int64.
    /// </summary>
    private static unsafe void QuantizeNf4Blocks(Tensor values, Tensor? reciprocals, Tensor packed, Tensor absmax)
    {
        long n = values.shape[0], blocks = absmax.shape[0];
        nint valuesAt = Address(values), packedAt = Address(packed), absmaxAt = Address(absmax), inverseAt = reciprocals is null ? 0 : Address(reciprocals);
        const int blocksPerTask = 256;
        Parallel.For(0, (int)((blocks + blocksPerTask - 1) / blocksPerTask), task =>
        {
            float* x = (float*)valuesAt, scales = (float*)absmaxAt, given = (float*)inverseAt;
            byte* output = (byte*)packedAt;
            fixed (float* thresholds = Nf4Midpoints)
            {
                long firstBlock = (long)task * blocksPerTask, lastBlock = Math.Min(blocks, firstBlock + blocksPerTask);
                for (long block = firstBlock; block < lastBlock; block++)
                {
                    long start = block * BlockSize, end = Math.Min(n, start + BlockSize);
                    float max = 0f;
                    for (long i = start; i < end; i++) max = MathF.Max(max, MathF.Abs(x[i]));
                    scales[block] = max;
                    float inverse = given is null ? 1f / max : given[block];
                    for (long i = start; i < end; i += 2)
                    {
                        int hi = max == 0f ? 0 : Code(x[i] * inverse, thresholds);
                        int lo = i + 1 < end && max != 0f ? Code(x[i + 1] * inverse, thresholds) : 0;
                        output[i >> 1] = (byte)(hi << 4 | lo);
                    }
                }
            }
        });
        GC.KeepAlive(values); GC.KeepAlive(packed); GC.KeepAlive(absmax); GC.KeepAlive(reciprocals);

        static int Code(float v, float* thresholds)
        {
            int k = 0;
            while (k < 15 && thresholds[k] < v) k++;
            return k;
        }
    }

    /// <summary>Values quantised at a time: 2²⁰, a multiple of the block size (and even, so bytes never straddle chunks).</summary>
    private const long QuantizeChunk = 1 << 20;

    /// <summary>
    /// An NF4 tensor from bitsandbytes' stored state (<c>Params4bit</c> data and <c>QuantState</c> with
    /// <c>blocksize=64</c>, nested <c>blocksize=256</c>, the signed dynamic map): <paramref name="packed"/> uint8 <c>[ceil(n/2)]</c>
    /// (any shape with that many elements, e.g. <c>[ceil(n/2), 1]</c>), <paramref name="quantizedAbsmax"/> uint8 <c>[ceil(n/64)]</c>
    /// (<c>state.absmax</c>), <paramref name="nestedAbsmax"/> float32 <c>[ceil(n/64/256)]</c> (<c>state.state2.absmax</c>) and
    /// <paramref name="offset"/> (<c>state.offset</c>). The tensors are copied.
    /// </summary>
    public static Nf4Tensor FromState(long[] shape, Tensor packed, Tensor quantizedAbsmax, Tensor nestedAbsmax, float offset)
    {
        long n = shape.Aggregate(1L, (a, b) => a * b);
        if (n <= 0) throw new ArgumentException("the shape must have at least one element", nameof(shape));
        long blocks = (n + BlockSize - 1) / BlockSize, nestedBlocks = (blocks + NestedBlockSize - 1) / NestedBlockSize;
        Check(packed, ScalarType.Byte, (n + 1) / 2, nameof(packed));
        Check(quantizedAbsmax, ScalarType.Byte, blocks, nameof(quantizedAbsmax));
        Check(nestedAbsmax, ScalarType.Float32, nestedBlocks, nameof(nestedAbsmax));
        return new Nf4Tensor([.. shape], packed.detach().cpu().flatten().clone(), quantizedAbsmax.detach().cpu().flatten().clone(),
            nestedAbsmax.detach().cpu().flatten().clone(), offset);

        static void Check(Tensor t, ScalarType dtype, long count, string name)
        {
            if (t.dtype != dtype || t.NumberOfElements != count)
                throw new ArgumentException($"{name} must be {dtype} with {count} elements, not {t.dtype} with {t.NumberOfElements}", name);
        }
    }

    /// <summary>
    /// Blockwise absmax quantisation of flat <paramref name="x"/> as bitsandbytes' kernel (the nested 8-bit stage; NF4 uses <see cref="QuantizeNf4Blocks"/>): per block of <paramref name="blockSize"/>
    /// (the last may be short) the absmax, and per value the number of <paramref name="thresholds"/> strictly below
    /// x · (1/absmax), so a value on a threshold takes the lower code — except with <paramref name="tiesToEven"/> (the 8-bit
    /// map, whose binary search ends on an even index and keeps it on a tie). A block with absmax 0 gets index 0 throughout.
    /// Returns the indices <c>[n]</c> (int64) and absmax <c>[blocks]</c>.
    /// </summary>
    private static (Tensor Indices, Tensor Absmax) QuantizeBlocks(Tensor x, int blockSize, float[] thresholds, bool tiesToEven = false)
    {
        long n = x.shape[0], blocks = (n + blockSize - 1) / blockSize, padded = blocks * blockSize;
        var full = padded == n ? x : cat([x, zeros(padded - n, ScalarType.Float32)]);
        var rows = full.view(blocks, blockSize);                                         // [blocks, B]
        var absmax = rows.abs().amax([1L]);                                              // [blocks]
        var zero = absmax.eq(tensor(0f));
        var inverse = where(zero, zeros_like(absmax), absmax.reciprocal());
        var scaled = (rows * inverse.unsqueeze(1)).flatten().contiguous();             // x · (1/absmax), as the kernel
        var bounds = tensor(thresholds);
        var indices = searchsorted(bounds, scaled);                                      // thresholds strictly below
        if (tiesToEven)
        {
            // (0-dim tensors rather than implicit Scalars: see Absmax)
            var below = minimum(indices, tensor((long)thresholds.Length - 1));
            var odd = indices.remainder(tensor(2L)).eq(tensor(1L));
            var tie = bounds.index_select(0, below).eq(scaled).logical_and(odd);
            indices = indices + tie.to(ScalarType.Int64);
        }
        indices = where(zero.repeat_interleave(blockSize), zeros_like(indices), indices); // the kernel's NaN → index 0
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

    /// <summary>Dequantised whole: NF4 blocks run across rows, so the matrix (or row view) is decoded at once.</summary>
    long IFrozenWeight.BlockRows => Shape[0];

    /// <summary>Rows of the dequantised weight (all of them in one piece, as <see cref="IFrozenWeight.BlockRows"/> asks).</summary>
    Tensor IFrozenWeight.Widen(long start, long count)
    {
        if (start == 0 && count == Shape[0]) return Dequantize();
        using var all = Dequantize();
        return all.narrow(0, start, count).clone();
    }

    /// <summary>The float32 weights <c>code[index] × absmax[block]</c>, in the original shape (a row view: its rows).</summary>
    /// <remarks>Decoded by a plain loop over the bytes (both cores), straight from the packed tensor's memory into the new
    /// tensor's: several times faster than the equivalent tensor ops (which would first widen every byte to an int64 index),
    /// and without managed arrays, which on every forward and backward pass of every quantised linear would make large-object
    /// garbage and so frequent full GCs.</remarks>
    public unsafe Tensor Dequantize()
    {
        long n = Count, first = _first, last = first + n;  // elements [first, last) of the quantised tensor
        using var absmaxTensor = Absmax();
        var result = empty(Shape, ScalarType.Float32);
        long firstBlockOfAll = first / BlockSize, blocks = (last + BlockSize - 1) / BlockSize - firstBlockOfAll;
        nint packedAt = Address(Packed), absmaxAt = Address(absmaxTensor), resultAt = Address(result);
        const int blocksPerTask = 256;
        Parallel.For(0, (int)((blocks + blocksPerTask - 1) / blocksPerTask), task =>
        {
            byte* packed = (byte*)packedAt;
            float* absmax = (float*)absmaxAt, output = (float*)resultAt;
            fixed (float* pairs = BytePairs)
            {
                long firstBlock = firstBlockOfAll + (long)task * blocksPerTask, lastBlock = Math.Min(firstBlockOfAll + blocks, firstBlock + blocksPerTask);
                for (long block = firstBlock; block < lastBlock; block++)
                {
                    float scale = absmax[block];
                    long start = Math.Max(first, block * BlockSize), end = Math.Min(last, block * BlockSize + BlockSize);
                    for (long i = start; i < end; i++)
                        output[i - first] = pairs[2 * packed[i >> 1] + (i & 1)] * scale;  // element 2k: high nibble of byte k
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
