using System.Text;
using TorchSharp;

namespace KeyValueLab.Checkpoints;

/// <summary>One tensor to write: GGUF name, value in PyTorch shape (any float dtype), stored type (F32 or F16).</summary>
public sealed record GgufTensorToWrite(string Name, torch.Tensor Value, GgmlType Type);

/// <summary>
/// Writes GGUF version 3 (ggml docs/gguf.md): header, metadata in the order given, tensor directory, then the data,
/// each tensor aligned to <see cref="GgufFile.DefaultAlignment"/>. F16 is rounded to nearest even by libtorch, as
/// numpy's <c>astype(float16)</c> in llama.cpp's converter. The file appears only when complete (written beside
/// it under a temporary name, then renamed).
/// </summary>
public static class GgufWriter
{
    /// <exception cref="IOException">The target exists and <paramref name="overwrite"/> is false, or writing failed.</exception>
    public static void Write(string path, IReadOnlyList<KeyValuePair<string, GgufValue>> metadata, IReadOnlyList<GgufTensorToWrite> tensors, bool overwrite = false)
    {
        ArgumentNullException.ThrowIfNull(metadata);
        ArgumentNullException.ThrowIfNull(tensors);
        if (!overwrite && File.Exists(path)) throw new IOException($"{path} exists (overwrite not requested)");
        foreach (var t in tensors)
            if (t.Type is not (GgmlType.F32 or GgmlType.F16)) throw new ArgumentException($"{t.Name}: only F32 and F16 are written", nameof(tensors));

        string full = Path.GetFullPath(path);
        string temp = Path.Combine(Path.GetDirectoryName(full)!, $".{Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                var w = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true);
                w.Write(GgufFile.Magic);
                w.Write(3u);
                w.Write((ulong)tensors.Count);
                w.Write((ulong)metadata.Count);
                foreach (var (key, value) in metadata)
                {
                    WriteString(w, key);
                    WriteValue(w, value, key);
                }

                long offset = 0;
                var offsets = new long[tensors.Count];
                for (int i = 0; i < tensors.Count; i++)
                {
                    var t = tensors[i];
                    WriteString(w, t.Name);
                    long[] shape = t.Value.shape;
                    w.Write((uint)shape.Length);
                    for (int d = shape.Length - 1; d >= 0; d--) w.Write((ulong)shape[d]);   // ggml: innermost dimension first
                    w.Write((uint)t.Type);
                    offsets[i] = offset;
                    w.Write((ulong)offset);
                    offset = Align(offset + GgufFile.ByteCount(t.Type, t.Value.numel()));
                }
                w.Flush();
                Pad(stream);

                long dataStart = stream.Position;
                for (int i = 0; i < tensors.Count; i++)
                {
                    var t = tensors[i];
                    using var scope = torch.NewDisposeScope();
                    var stored = t.Value.detach().to(t.Type == GgmlType.F16 ? torch.ScalarType.Float16 : torch.ScalarType.Float32).cpu().contiguous();
                    if (stream.Position != dataStart + offsets[i]) throw new InvalidOperationException("GGUF writer: data offset mismatch");
                    TensorBytes.WriteTo(stream, stored);
                    Pad(stream);
                }
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, full, overwrite);
        }
        finally
        {
            if (File.Exists(temp)) File.Delete(temp);
        }
    }

    private static long Align(long n) => (n + GgufFile.DefaultAlignment - 1) / GgufFile.DefaultAlignment * GgufFile.DefaultAlignment;

    private static void Pad(Stream s)
    {
        long pad = Align(s.Position) - s.Position;
        for (long i = 0; i < pad; i++) s.WriteByte(0);
    }

    private static void WriteString(BinaryWriter w, string s)
    {
        var bytes = Encoding.UTF8.GetBytes(s);
        w.Write((ulong)bytes.Length);
        w.Write(bytes);
    }

    private static void WriteValue(BinaryWriter w, GgufValue v, string key)
    {
        w.Write((uint)v.Type);
        if (v.Type != GgufType.Array) { WriteScalar(w, v.Type, v.Value, key); return; }
        w.Write((uint)v.ElementType);
        var items = (Array)v.Value;
        w.Write((ulong)items.Length);
        foreach (var item in items) WriteScalar(w, v.ElementType, item!, key);
    }

    private static void WriteScalar(BinaryWriter w, GgufType type, object value, string key)
    {
        switch (type)
        {
            case GgufType.UInt8: w.Write((byte)Convert.ToUInt64(value)); break;
            case GgufType.Int8: w.Write((sbyte)Convert.ToInt64(value)); break;
            case GgufType.UInt16: w.Write((ushort)Convert.ToUInt64(value)); break;
            case GgufType.Int16: w.Write((short)Convert.ToInt64(value)); break;
            case GgufType.UInt32: w.Write((uint)Convert.ToUInt64(value)); break;
            case GgufType.Int32: w.Write((int)Convert.ToInt64(value)); break;
            case GgufType.UInt64: w.Write(Convert.ToUInt64(value)); break;
            case GgufType.Int64: w.Write(Convert.ToInt64(value)); break;
            case GgufType.Float32: w.Write((float)Convert.ToDouble(value)); break;
            case GgufType.Float64: w.Write(Convert.ToDouble(value)); break;
            case GgufType.Bool: w.Write((bool)value ? (byte)1 : (byte)0); break;
            case GgufType.String: WriteString(w, (string)value); break;
            default: throw new ArgumentException($"{key}: cannot write a value of type {type}");
        }
    }
}
