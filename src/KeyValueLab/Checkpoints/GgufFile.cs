using System.Text;
using TorchSharp;

namespace KeyValueLab.Checkpoints;

/// <summary>GGUF metadata value types (ggml gguf.h <c>gguf_type</c>).</summary>
public enum GgufType : uint
{
    UInt8 = 0, Int8 = 1, UInt16 = 2, Int16 = 3, UInt32 = 4, Int32 = 5, Float32 = 6, Bool = 7, String = 8, Array = 9,
    UInt64 = 10, Int64 = 11, Float64 = 12,
}

/// <summary>The ggml tensor types this project reads (F32, F16, BF16, Q8_0) and writes (F32, F16).</summary>
public enum GgmlType : uint
{
    F32 = 0, F16 = 1, Q8_0 = 8, BF16 = 30,
}

/// <summary>
/// One metadata value. Scalars are held as <see cref="long"/>/<see cref="ulong"/> (integers), <see cref="double"/>
/// (floats), <see cref="bool"/> or <see cref="string"/>; an array as a CLR array of those, with its element type.
/// </summary>
public sealed record GgufValue(GgufType Type, object Value, GgufType ElementType = GgufType.UInt8)
{
    public static GgufValue Of(string s) => new(GgufType.String, s);
    public static GgufValue OfUInt32(uint v) => new(GgufType.UInt32, (ulong)v);
    public static GgufValue OfInt32(int v) => new(GgufType.Int32, (long)v);
    public static GgufValue OfFloat32(float v) => new(GgufType.Float32, (double)v);
    public static GgufValue OfBool(bool v) => new(GgufType.Bool, v);
    public static GgufValue OfStrings(string[] v) => new(GgufType.Array, v, GgufType.String);
    public static GgufValue OfFloat32s(float[] v) => new(GgufType.Array, v.Select(x => (double)x).ToArray(), GgufType.Float32);
    public static GgufValue OfInt32s(int[] v) => new(GgufType.Array, v.Select(x => (long)x).ToArray(), GgufType.Int32);
}

/// <summary>Name, ggml type, shape (PyTorch order: the GGUF dims reversed) and data offset of one GGUF tensor.</summary>
public sealed record GgufTensor(string Name, GgmlType Type, long[] Shape, long DataOffset, long ByteCount);

/// <summary>
/// A GGUF file (version 2 or 3; ggml docs/gguf.md): header, typed metadata, tensor directory, aligned data.
/// Everything before the data is read and checked on open, strictly as safetensors is here: any inconsistency is
/// an <see cref="InputException"/> naming the problem. Tensor data is read one tensor at a time by
/// <see cref="ReadFloat32"/>, widened to fp32 (Q8_0 dequantised exactly as ggml does: int8 × fp16 scale in fp32).
/// </summary>
public sealed class GgufFile : ITensorSource
{
    public const uint Magic = 0x46554747;   // "GGUF" little-endian
    public const int DefaultAlignment = 32;
    public const int Q8BlockSize = 32;
    private const int Q8BlockBytes = 2 + Q8BlockSize;
    private const int MaxDims = 4;
    private const long MaxStringBytes = 1L << 30;

    private readonly Dictionary<string, GgufTensor> _byName;

    public string SourcePath { get; }
    public uint Version { get; }
    public IReadOnlyDictionary<string, GgufValue> Metadata { get; }
    public IReadOnlyList<GgufTensor> GgufTensors { get; }

    /// <summary>Tensors with their GGUF names, in file order; DType in safetensors spelling ("F32", "F16", "BF16", "Q8_0").</summary>
    public IReadOnlyList<TensorInfo> Tensors { get; }

    public int Alignment { get; }
    public long DataStart { get; }

    private GgufFile(string path, uint version, Dictionary<string, GgufValue> metadata, List<GgufTensor> tensors, int alignment, long dataStart)
    {
        SourcePath = path;
        Version = version;
        Metadata = metadata;
        GgufTensors = tensors;
        _byName = tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
        Tensors = tensors.Select(t => new TensorInfo(t.Name, DTypeName(t.Type), t.Shape)).ToArray();
        Alignment = alignment;
        DataStart = dataStart;
    }

    public static string DTypeName(GgmlType t) => t switch
    {
        GgmlType.F32 => SafetensorsDType.F32,
        GgmlType.F16 => SafetensorsDType.F16,
        GgmlType.BF16 => SafetensorsDType.BF16,
        _ => t.ToString(),
    };

    /// <summary>Bytes of <paramref name="elements"/> values stored as <paramref name="type"/>.</summary>
    internal static long ByteCount(GgmlType type, long elements) => type switch
    {
        GgmlType.F32 => checked(elements * 4),
        GgmlType.F16 or GgmlType.BF16 => checked(elements * 2),
        GgmlType.Q8_0 => checked(elements / Q8BlockSize * Q8BlockBytes),
        _ => throw new ArgumentOutOfRangeException(nameof(type)),
    };

    /// <summary>Opens and checks a GGUF file.</summary>
    /// <exception cref="InputException">Missing, unreadable or malformed (the problem named on one line).</exception>
    public static GgufFile Open(string path)
    {
        RegularFile.Require(path);
        try
        {
            using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
            var r = new Reader(stream, path);
            return Parse(path, r);
        }
        catch (IOException e) when (e is not EndOfStreamException) { throw new InputException(path, "cannot read: " + e.Message, e); }
        catch (UnauthorizedAccessException e) { throw new InputException(path, "cannot read: " + e.Message, e); }
    }

    private static GgufFile Parse(string path, Reader r)
    {
        if (r.Length < 24) throw new InputException(path, $"file is {r.Length} bytes, too short for a GGUF header (24 bytes)");
        uint magic = r.U32("magic");
        if (magic != Magic) throw new InputException(path, $"not a GGUF file (magic 0x{magic:X8}, expected \"GGUF\")");
        uint version = r.U32("version");
        if (version is not (2 or 3)) throw new InputException(path, $"GGUF version {version} is not supported (supported: 2, 3)");
        ulong tensorCount = r.U64("tensor count"), kvCount = r.U64("metadata count");
        // Each metadata entry takes at least 8 (key length) + 4 (type) bytes, each tensor at least 8 + 4 + 4 + 8.
        if (kvCount > (ulong)(r.Length / 12)) throw new InputException(path, $"metadata count {kvCount} cannot fit in a {r.Length}-byte file");
        if (tensorCount > (ulong)(r.Length / 24)) throw new InputException(path, $"tensor count {tensorCount} cannot fit in a {r.Length}-byte file");

        var metadata = new Dictionary<string, GgufValue>(StringComparer.Ordinal);
        for (ulong i = 0; i < kvCount; i++)
        {
            string key = r.Str($"metadata key {i}");
            if (key.Length == 0) throw new InputException(path, $"metadata entry {i} has an empty key");
            var value = ReadValue(r, key);
            if (!metadata.TryAdd(key, value)) throw new InputException(path, $"metadata key \"{key}\" appears twice");
        }

        int alignment = DefaultAlignment;
        if (metadata.TryGetValue("general.alignment", out var a))
        {
            if (a.Type != GgufType.UInt32 || a.Value is not ulong al || al == 0 || al > 1 << 20 || (al & (al - 1)) != 0)
                throw new InputException(path, "general.alignment: expected a uint32 power of two (at most 2^20)");
            alignment = (int)al;
        }

        var infos = new List<(string Name, GgmlType Type, long[] Shape, ulong Offset)>();
        var names = new HashSet<string>(StringComparer.Ordinal);
        for (ulong i = 0; i < tensorCount; i++)
        {
            string name = r.Str($"tensor {i} name");
            if (name.Length == 0) throw new InputException(path, $"tensor {i} has an empty name");
            if (!names.Add(name)) throw new InputException(path, $"tensor \"{name}\" appears twice");
            uint nDims = r.U32($"tensor {name} dimension count");
            if (nDims is 0 or > MaxDims) throw new InputException(path, $"tensor {name}: {nDims} dimensions (expected 1..{MaxDims})");
            var dims = new long[nDims];
            long elements = 1;
            for (int d = 0; d < nDims; d++)
            {
                ulong n = r.U64($"tensor {name} dimension {d}");
                if (n == 0 || n > long.MaxValue / 16) throw new InputException(path, $"tensor {name}: dimension {d} is {n}");
                dims[d] = (long)n;
                try { elements = checked(elements * (long)n); }
                catch (OverflowException) { throw new InputException(path, $"tensor {name}: element count overflows"); }
            }
            uint type = r.U32($"tensor {name} type");
            if (!Enum.IsDefined((GgmlType)type))
                throw new InputException(path, $"tensor {name}: ggml type {type} ({GgmlTypeName(type)}) is not supported (supported: F32, F16, BF16, Q8_0)");
            if ((GgmlType)type == GgmlType.Q8_0 && dims[0] % Q8BlockSize != 0)
                throw new InputException(path, $"tensor {name}: Q8_0 row length {dims[0]} is not a multiple of {Q8BlockSize}");
            ulong offset = r.U64($"tensor {name} offset");
            if (offset % (ulong)alignment != 0) throw new InputException(path, $"tensor {name}: data offset {offset} is not a multiple of the alignment {alignment}");
            infos.Add((name, (GgmlType)type, dims.Reverse().ToArray(), offset));
        }

        long dataStart = (r.Position + alignment - 1) / alignment * alignment;
        if (tensorCount > 0 && dataStart > r.Length) throw new InputException(path, $"file ends at {r.Length} bytes, before the tensor data (at {dataStart})");

        var tensors = new List<GgufTensor>(infos.Count);
        foreach (var (name, type, shape, offset) in infos)
        {
            long count;
            try { count = ByteCount(type, shape.Aggregate(1L, (x, y) => checked(x * y))); }
            catch (OverflowException) { throw new InputException(path, $"tensor {name}: byte count overflows"); }
            if (offset > (ulong)(r.Length - dataStart) || count > r.Length - dataStart - (long)offset)
                throw new InputException(path, $"tensor {name}: data [{offset}, {(decimal)offset + count}) runs past the end of the data section ({r.Length - dataStart} bytes; file truncated?)");
            tensors.Add(new GgufTensor(name, type, shape, dataStart + (long)offset, count));
        }
        var sorted = tensors.OrderBy(t => t.DataOffset).ToList();
        for (int i = 1; i < sorted.Count; i++)
            if (sorted[i].DataOffset < sorted[i - 1].DataOffset + sorted[i - 1].ByteCount)
                throw new InputException(path, $"tensors {sorted[i - 1].Name} and {sorted[i].Name} overlap in the data section");
        return new GgufFile(path, version, metadata, tensors, alignment, dataStart);
    }

    private static GgufValue ReadValue(Reader r, string key) => ReadScalarOrArray(r, key, r.U32($"{key}: value type"), nested: false);

    private static GgufValue ReadScalarOrArray(Reader r, string key, uint type, bool nested)
    {
        switch ((GgufType)type)
        {
            case GgufType.UInt8: return new(GgufType.UInt8, (ulong)r.Bytes(1, key)[0]);
            case GgufType.Int8: return new(GgufType.Int8, (long)(sbyte)r.Bytes(1, key)[0]);
            case GgufType.UInt16: return new(GgufType.UInt16, (ulong)BitConverter.ToUInt16(r.Bytes(2, key)));
            case GgufType.Int16: return new(GgufType.Int16, (long)BitConverter.ToInt16(r.Bytes(2, key)));
            case GgufType.UInt32: return new(GgufType.UInt32, (ulong)r.U32(key));
            case GgufType.Int32: return new(GgufType.Int32, (long)(int)r.U32(key));
            case GgufType.Float32: return new(GgufType.Float32, (double)BitConverter.ToSingle(r.Bytes(4, key)));
            case GgufType.UInt64: return new(GgufType.UInt64, r.U64(key));
            case GgufType.Int64: return new(GgufType.Int64, (long)r.U64(key));
            case GgufType.Float64: return new(GgufType.Float64, BitConverter.ToDouble(r.Bytes(8, key)));
            case GgufType.Bool:
                byte b = r.Bytes(1, key)[0];
                if (b > 1) throw new InputException(r.Path, $"{key}: bool value {b} (expected 0 or 1)");
                return new(GgufType.Bool, b == 1);
            case GgufType.String: return new(GgufType.String, r.Str(key));
            case GgufType.Array when !nested:
                uint elementType = r.U32($"{key}: array element type");
                if (elementType == (uint)GgufType.Array) throw new InputException(r.Path, $"{key}: arrays of arrays are not supported");
                if (!Enum.IsDefined((GgufType)elementType)) throw new InputException(r.Path, $"{key}: unknown array element type {elementType}");
                ulong n = r.U64($"{key}: array length");
                if (n > (ulong)(r.Length - r.Position)) throw new InputException(r.Path, $"{key}: array length {n} runs past the end of the file");
                return ReadArray(r, key, (GgufType)elementType, (int)n);
            default:
                throw new InputException(r.Path, $"{key}: unknown metadata value type {type}");
        }
    }

    private static GgufValue ReadArray(Reader r, string key, GgufType type, int n)
    {
        switch (type)
        {
            case GgufType.String:
                var s = new string[n];
                for (int i = 0; i < n; i++) s[i] = r.Str($"{key}[{i}]");
                return new(GgufType.Array, s, type);
            case GgufType.Float32 or GgufType.Float64:
                var f = new double[n];
                for (int i = 0; i < n; i++) f[i] = (double)ReadValueOf(r, key, type).Value;
                return new(GgufType.Array, f, type);
            case GgufType.Bool:
                var bools = new bool[n];
                for (int i = 0; i < n; i++) bools[i] = (bool)ReadValueOf(r, key, type).Value;
                return new(GgufType.Array, bools, type);
            case GgufType.UInt8 or GgufType.UInt16 or GgufType.UInt32 or GgufType.UInt64:
                var u = new ulong[n];
                for (int i = 0; i < n; i++) u[i] = (ulong)ReadValueOf(r, key, type).Value;
                return new(GgufType.Array, u, type);
            default:
                var l = new long[n];
                for (int i = 0; i < n; i++) l[i] = (long)ReadValueOf(r, key, type).Value;
                return new(GgufType.Array, l, type);
        }
    }

    private static GgufValue ReadValueOf(Reader r, string key, GgufType type) => ReadScalarOrArray(r, key, (uint)type, nested: true);

    private static string GgmlTypeName(uint t) => t switch
    {
        2 => "Q4_0", 3 => "Q4_1", 6 => "Q5_0", 7 => "Q5_1", 9 => "Q8_1", 10 => "Q2_K", 11 => "Q3_K", 12 => "Q4_K", 13 => "Q5_K",
        14 => "Q6_K", 15 => "Q8_K", 24 => "I8", 25 => "I16", 26 => "I32", 27 => "I64", 28 => "F64",
        _ => "unknown",
    };

    /// <summary>The tensor named <paramref name="name"/> (GGUF name), widened to a new fp32 tensor in PyTorch shape.</summary>
    public torch.Tensor ReadFloat32(string name)
    {
        if (!_byName.TryGetValue(name, out var t)) throw new KeyNotFoundException($"{SourcePath}: no tensor named {name}");
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("GGUF files are read little-endian only");
        using var handle = File.OpenHandle(SourcePath, FileMode.Open, FileAccess.Read, FileShare.Read);
        switch (t.Type)
        {
            case GgmlType.F32:
            {
                var result = torch.empty(t.Shape, torch.ScalarType.Float32);
                TensorBytes.ReadInto(handle, t.DataOffset, result, SourcePath, name);
                return result;
            }
            case GgmlType.F16 or GgmlType.BF16:
            {
                using var stored = torch.empty(t.Shape, t.Type == GgmlType.F16 ? torch.ScalarType.Float16 : torch.ScalarType.BFloat16);
                TensorBytes.ReadInto(handle, t.DataOffset, stored, SourcePath, name);
                return stored.to(torch.ScalarType.Float32);
            }
            case GgmlType.Q8_0:
            {
                long elements = t.Shape.Aggregate(1L, (x, y) => x * y);
                using var raw = torch.empty([t.ByteCount], torch.ScalarType.Byte);
                TensorBytes.ReadInto(handle, t.DataOffset, raw, SourcePath, name);
                var values = new float[elements];
                ReadOnlySpan<byte> bytes = raw.bytes;
                for (long block = 0; block < elements / Q8BlockSize; block++)
                {
                    var b = bytes.Slice((int)(block * Q8BlockBytes), Q8BlockBytes);
                    float d = (float)BitConverter.ToHalf(b);
                    for (int j = 0; j < Q8BlockSize; j++) values[block * Q8BlockSize + j] = (sbyte)b[2 + j] * d;
                }
                return torch.tensor(values, torch.ScalarType.Float32).reshape(t.Shape);
            }
            default:
                throw new InvalidOperationException($"unreachable ggml type {t.Type}");
        }
    }

    /// <summary>Nothing held between reads.</summary>
    public void Dispose() { }

    /// <summary>Little-endian reads with the file's end checked before every allocation.</summary>
    private sealed class Reader(FileStream stream, string path)
    {
        private readonly BinaryReader _r = new(stream, Encoding.UTF8, leaveOpen: true);
        private static readonly UTF8Encoding Strict = new(false, throwOnInvalidBytes: true);

        public string Path => path;
        public long Length { get; } = stream.Length;
        public long Position => stream.Position;

        public byte[] Bytes(int n, string what)
        {
            if (n > Length - Position) throw new InputException(path, $"file ends inside {what} (at byte {Position} of {Length})");
            return _r.ReadBytes(n);
        }

        public uint U32(string what) => BitConverter.ToUInt32(Bytes(4, what));

        public ulong U64(string what) => BitConverter.ToUInt64(Bytes(8, what));

        public string Str(string what)
        {
            ulong n = U64(what + " length");
            if (n > (ulong)(Length - Position) || n > MaxStringBytes)
                throw new InputException(path, $"{what}: string length {n} runs past the end of the file");
            try { return Strict.GetString(Bytes((int)n, what)); }
            catch (DecoderFallbackException) { throw new InputException(path, $"{what}: string is not valid UTF-8"); }
        }
    }
}
