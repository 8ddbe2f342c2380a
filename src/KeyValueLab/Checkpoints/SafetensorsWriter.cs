using System.Buffers.Binary;
using System.Text.Encodings.Web;
using System.Text.Json;
using TorchSharp;

namespace KeyValueLab.Checkpoints;

/// <summary>
/// One tensor to save: its name, the dtype to store (F32, F16 or BF16, narrowed from whatever float
/// dtype the tensor has), and either the tensor itself or a function that reads it when its turn
/// comes (so a whole checkpoint can be converted holding one tensor at a time).
/// </summary>
public sealed class TensorToSave
{
    public string Name { get; }
    public string DType { get; }
    public long[] Shape { get; }

    /// <summary>The tensor, when given in memory; null for a lazily read one.</summary>
    public torch.Tensor? Tensor { get; }

    private readonly Func<torch.Tensor>? _read;

    /// <summary>A tensor already in memory (any float dtype, any device); it is not disposed.</summary>
    public TensorToSave(string name, torch.Tensor tensor, string dtype = SafetensorsDType.F32)
    {
        Name = name;
        Tensor = tensor;
        DType = dtype;
        Shape = tensor.shape;
    }

    private TensorToSave(string name, long[] shape, string dtype, Func<torch.Tensor> read)
    {
        Name = name;
        Shape = shape;
        DType = dtype;
        _read = read;
    }

    /// <summary>A tensor read by <paramref name="read"/> only while it is written, then disposed.</summary>
    public static TensorToSave Lazy(string name, long[] shape, string dtype, Func<torch.Tensor> read) => new(name, shape, dtype, read);

    public static implicit operator TensorToSave((string name, torch.Tensor tensor, string dtype) t) => new(t.name, t.tensor, t.dtype);

    internal long ByteCount => Shape.Aggregate(1L, (a, b) => checked(a * b)) * SafetensorsDType.ElementSize(DType);

    /// <summary>The tensor to write; call inside a dispose scope, which then owns a lazily read one.</summary>
    internal torch.Tensor Load()
    {
        var t = Tensor ?? _read!();
        if (!t.shape.AsSpan().SequenceEqual(Shape))
            throw new InvalidOperationException($"tensor {Name} was announced as [{string.Join(", ", Shape)}] but is [{string.Join(", ", t.shape)}]");
        if (!t.is_floating_point())
            throw new ArgumentException($"tensor {Name} is {t.dtype}, not a float tensor");
        return t;
    }
}

/// <summary>
/// Writes <c>.safetensors</c> files: header JSON with <c>__metadata__</c> first and tensors ordered by
/// element size (largest first, so every tensor is aligned to its element) then name, padded with
/// spaces to a multiple of 8 bytes as Hugging Face's writer does; then each tensor narrowed to its
/// stored dtype, one at a time.
/// </summary>
public static class SafetensorsWriter
{
    /// <summary>
    /// Writes <paramref name="path"/> atomically: into a temporary file beside it, flushed to disk,
    /// then renamed over the target. A reader that has the old file open keeps seeing the old bytes.
    /// </summary>
    public static void Write(string path, IReadOnlyList<TensorToSave> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        string full = Path.GetFullPath(path);
        string temp = Path.Combine(Path.GetDirectoryName(full)!, $".{Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                WriteTo(stream, tensors, metadata);
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, full, overwrite: true);
        }
        finally
        {
            if (File.Exists(temp)) File.Delete(temp);
        }
    }

    /// <summary>Writes the safetensors bytes to a stream (not atomic; see <see cref="Write"/>).</summary>
    public static void WriteTo(Stream stream, IReadOnlyList<TensorToSave> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        Validate(tensors);
        var ordered = Order(tensors);
        byte[] header = Header(ordered, metadata);

        Span<byte> length = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)header.Length);
        stream.Write(length);
        stream.Write(header);
        foreach (var t in ordered)
        {
            using var scope = torch.NewDisposeScope();
            var stored = t.Load().detach().cpu().to(SafetensorsDType.ToScalarType(t.DType)).contiguous();
            long before = stream.CanSeek ? stream.Position : -1;
            TensorBytes.WriteTo(stream, stored);
            if (before >= 0 && stream.Position - before != t.ByteCount)
                throw new InvalidOperationException($"tensor {t.Name} wrote {stream.Position - before} bytes, expected {t.ByteCount}");
        }
    }

    /// <summary>Bytes the tensors' data will take (without header).</summary>
    public static long DataBytes(IEnumerable<TensorToSave> tensors) => tensors.Sum(t => t.ByteCount);

    private static void Validate(IReadOnlyList<TensorToSave> tensors)
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var t in tensors)
        {
            if (string.IsNullOrEmpty(t.Name) || t.Name == "__metadata__")
                throw new ArgumentException($"invalid tensor name \"{t.Name}\"", nameof(tensors));
            if (!names.Add(t.Name)) throw new ArgumentException($"tensor {t.Name} given twice", nameof(tensors));
            if (!SafetensorsDType.IsSupported(t.DType))
                throw new ArgumentException($"tensor {t.Name}: cannot store dtype {t.DType} (supported: F32, F16, BF16)", nameof(tensors));
            if (t.Tensor is { } inMemory && !inMemory.is_floating_point())
                throw new ArgumentException($"tensor {t.Name} is {inMemory.dtype}, not a float tensor", nameof(tensors));
        }
    }

    private static List<TensorToSave> Order(IReadOnlyList<TensorToSave> tensors) =>
        tensors.OrderByDescending(t => SafetensorsDType.ElementSize(t.DType)).ThenBy(t => t.Name, StringComparer.Ordinal).ToList();

    private static byte[] Header(List<TensorToSave> ordered, IReadOnlyDictionary<string, string>? metadata)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            json.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                json.WriteStartObject("__metadata__");
                foreach (var (key, value) in metadata.OrderBy(kv => kv.Key, StringComparer.Ordinal)) json.WriteString(key, value);
                json.WriteEndObject();
            }
            long offset = 0;
            foreach (var t in ordered)
            {
                json.WriteStartObject(t.Name);
                json.WriteString("dtype", t.DType);
                json.WriteStartArray("shape");
                foreach (long d in t.Shape) json.WriteNumberValue(d);
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                offset += t.ByteCount;
                json.WriteNumberValue(offset);
                json.WriteEndArray();
                json.WriteEndObject();
            }
            json.WriteEndObject();
        }
        int padding = (int)((8 - (8 + buffer.Length) % 8) % 8);
        for (int i = 0; i < padding; i++) buffer.WriteByte((byte)' ');
        return buffer.ToArray();
    }
}
