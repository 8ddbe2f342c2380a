using System.Runtime.InteropServices;
using System.Text.Json;
using TorchSharp;

namespace KeyValueLab.Checkpoints;

/// <summary>
/// A strictly validated <c>.safetensors</c> file: 8-byte little-endian header length, a UTF-8 JSON
/// header mapping each tensor name to {dtype, shape, data_offsets}, then the data area
/// (https://github.com/huggingface/safetensors, "Format").
/// </summary>
/// <remarks>
/// <see cref="Open"/> reads and checks only the header; every problem becomes an
/// <see cref="InputException"/> naming the file and, where there is one, the tensor. No file handle is
/// kept: <see cref="ReadStored"/> memory-maps exactly one tensor's byte span (copy-on-write, so the file is
/// never changed) and returns a tensor of the stored dtype that views it, so a tensor's bytes are never held
/// twice while it is read: its pages come from the page cache on first touch and the mapping goes when the
/// last view of it is disposed. <see cref="ReadFloat32"/> widens that view to fp32 (F32 tensors are the view).
/// </remarks>
public sealed class SafetensorsFile : ITensorSource
{
    /// <summary>The format's own limit on the header (safetensors rejects larger ones too).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    private readonly Dictionary<string, Entry> _entries;

    /// <summary>Where one tensor's bytes are, relative to the start of the file.</summary>
    private sealed record Entry(TensorInfo Info, long FileOffset, long ByteCount);

    public string SourcePath { get; }

    /// <summary>Tensors in the order their bytes appear in the file.</summary>
    public IReadOnlyList<TensorInfo> Tensors { get; }

    /// <summary>The optional <c>__metadata__</c> string map (empty when absent).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Size of the file when it was opened.</summary>
    public long FileLength { get; }

    private SafetensorsFile(string path, Dictionary<string, Entry> entries, IReadOnlyDictionary<string, string> metadata, long fileLength)
    {
        SourcePath = path;
        _entries = entries;
        Metadata = metadata;
        FileLength = fileLength;
        Tensors = entries.Values.OrderBy(e => e.FileOffset).ThenBy(e => e.Info.Name, StringComparer.Ordinal).Select(e => e.Info).ToArray();
    }

    /// <summary>Reads and validates the header of <paramref name="path"/>.</summary>
    /// <exception cref="InputException">The file is missing, unreadable or malformed.</exception>
    public static SafetensorsFile Open(string path)
    {
        RegularFile.Require(path);
        byte[] header;
        long fileLength;
        try
        {
            using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);
            fileLength = RandomAccess.GetLength(handle);
            if (fileLength < 8)
                throw new InputException(path, $"file is {fileLength} bytes, too short for a safetensors header (at least 8)");
            Span<byte> lengthBytes = stackalloc byte[8];
            ReadExactly(handle, lengthBytes, 0);
            ulong headerLength = BitConverter.ToUInt64(lengthBytes);
            if (headerLength > (ulong)(fileLength - 8))
                throw new InputException(path, $"header length {headerLength} runs past the end of the file ({fileLength} bytes)");
            if (headerLength > MaxHeaderBytes)
                throw new InputException(path, $"header length {headerLength} exceeds the format's limit of {MaxHeaderBytes} bytes");
            if (headerLength < 2)
                throw new InputException(path, $"header length {headerLength} is too small to hold a JSON object");
            header = new byte[headerLength];
            ReadExactly(handle, header, 8);
        }
        catch (IOException e)
        {
            throw new InputException(path, $"cannot read: {e.Message}", e);
        }
        catch (UnauthorizedAccessException e)
        {
            throw new InputException(path, $"cannot read: {e.Message}", e);
        }
        return Parse(path, header, fileLength);
    }

    private static void ReadExactly(Microsoft.Win32.SafeHandles.SafeFileHandle handle, Span<byte> buffer, long offset)
    {
        while (!buffer.IsEmpty)
        {
            int n = RandomAccess.Read(handle, buffer, offset);
            if (n == 0) throw new IOException("unexpected end of file");
            buffer = buffer[n..];
            offset += n;
        }
    }

    private static SafetensorsFile Parse(string path, byte[] header, long fileLength)
    {
        long dataStart = 8 + header.LongLength;
        long dataLength = fileLength - dataStart;

        if (!System.Text.Unicode.Utf8.IsValid(header))
            throw new InputException(path, "header is not valid UTF-8 JSON: invalid UTF-8 bytes");
        JsonDocument doc;
        try
        {
            // JsonDocument validates UTF-8 and rejects trailing garbage; spaces (HF's padding) are fine.
            doc = JsonDocument.Parse(header, new JsonDocumentOptions { MaxDepth = 16 });
        }
        catch (JsonException e)
        {
            throw new InputException(path, $"header is not valid UTF-8 JSON: {e.Message}", e);
        }
        catch (ArgumentException e)
        {
            throw new InputException(path, $"header is not valid UTF-8 JSON: {e.Message}", e);
        }

        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new InputException(path, $"header must be a JSON object, found {doc.RootElement.ValueKind}");

            var entries = new Dictionary<string, Entry>(StringComparer.Ordinal);
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            bool sawMetadata = false;
            foreach (var property in doc.RootElement.EnumerateObject())
            {
                string name = property.Name;
                if (name == "__metadata__")
                {
                    if (sawMetadata) throw new InputException(path, "header has __metadata__ twice");
                    sawMetadata = true;
                    ParseMetadata(path, property.Value, metadata);
                    continue;
                }
                if (entries.ContainsKey(name)) throw new InputException(path, $"tensor {name} appears twice in the header");
                var entry = ParseEntry(path, name, property.Value, dataLength);
                entries.Add(name, entry with { FileOffset = dataStart + entry.FileOffset });
            }

            // Spans must not overlap (zero-length spans overlap nothing).
            Entry? previous = null;
            foreach (var entry in entries.Values.Where(e => e.ByteCount > 0).OrderBy(e => e.FileOffset))
            {
                if (previous is not null && entry.FileOffset < previous.FileOffset + previous.ByteCount)
                    throw new InputException(path,
                        $"data of tensor {entry.Info.Name} {SpanText(entry, dataStart)} overlaps tensor {previous.Info.Name} {SpanText(previous, dataStart)}");
                previous = entry;
            }
            return new SafetensorsFile(path, entries, metadata, fileLength);
        }
    }

    private static string SpanText(Entry e, long dataStart) => $"[{e.FileOffset - dataStart}, {e.FileOffset - dataStart + e.ByteCount})";

    private static void ParseMetadata(string path, JsonElement value, Dictionary<string, string> metadata)
    {
        if (value.ValueKind != JsonValueKind.Object)
            throw new InputException(path, $"__metadata__ must be a JSON object of strings, found {value.ValueKind}");
        foreach (var item in value.EnumerateObject())
        {
            if (item.Value.ValueKind != JsonValueKind.String)
                throw new InputException(path, $"__metadata__ value of \"{item.Name}\" must be a string, found {item.Value.ValueKind}");
            metadata[item.Name] = item.Value.GetString()!;
        }
    }

    /// <summary>Validates one header entry; the returned FileOffset is relative to the data area.</summary>
    private static Entry ParseEntry(string path, string name, JsonElement value, long dataLength)
    {
        if (value.ValueKind != JsonValueKind.Object)
            throw new InputException(path, $"entry of tensor {name} must be a JSON object, found {value.ValueKind}");

        if (!value.TryGetProperty("dtype", out var dtypeElement) || dtypeElement.ValueKind != JsonValueKind.String)
            throw new InputException(path, $"tensor {name} has no dtype string");
        string dtype = dtypeElement.GetString()!;
        if (!SafetensorsDType.IsKnown(dtype))
            throw new InputException(path, $"unknown dtype {dtype} for tensor {name}");

        if (!value.TryGetProperty("shape", out var shapeElement) || shapeElement.ValueKind != JsonValueKind.Array)
            throw new InputException(path, $"tensor {name} has no shape array");
        var shape = new long[shapeElement.GetArrayLength()];
        int i = 0;
        foreach (var dim in shapeElement.EnumerateArray())
        {
            if (dim.ValueKind != JsonValueKind.Number || !dim.TryGetInt64(out long d) || d < 0)
                throw new InputException(path, $"shape of tensor {name} must hold non-negative integers, found {dim.GetRawText()}");
            shape[i++] = d;
        }

        if (!value.TryGetProperty("data_offsets", out var offsetsElement) || offsetsElement.ValueKind != JsonValueKind.Array
            || offsetsElement.GetArrayLength() != 2)
            throw new InputException(path, $"tensor {name} needs data_offsets [begin, end]");
        var offsets = new long[2];
        i = 0;
        foreach (var o in offsetsElement.EnumerateArray())
        {
            if (o.ValueKind != JsonValueKind.Number || !o.TryGetInt64(out long v) || v < 0)
                throw new InputException(path, $"data_offsets of tensor {name} must be non-negative integers, found {o.GetRawText()}");
            offsets[i++] = v;
        }
        long begin = offsets[0], end = offsets[1];
        if (end < begin)
            throw new InputException(path, $"data_offsets of tensor {name} end before they begin: [{begin}, {end}]");

        long expectedBytes;
        try
        {
            expectedBytes = SafetensorsDType.ElementSize(dtype);
            foreach (long d in shape) expectedBytes = checked(expectedBytes * d);
        }
        catch (OverflowException)
        {
            throw new InputException(path, $"shape [{string.Join(", ", shape)}] of tensor {name} is too large");
        }
        if (expectedBytes != end - begin)
            throw new InputException(path,
                $"tensor {name}: shape [{string.Join(", ", shape)}] × {dtype} needs {expectedBytes} bytes but data_offsets [{begin}, {end}] span {end - begin}");
        if (end > dataLength)
            throw new InputException(path, $"data of tensor {name} [{begin}, {end}) runs past the end of the data area ({dataLength} bytes)");

        return new Entry(new TensorInfo(name, dtype, shape), begin, end - begin);
    }

    /// <summary>Whether the file holds a tensor of this name.</summary>
    public bool Contains(string name) => _entries.ContainsKey(name);

    /// <summary>Name, dtype and shape of one tensor.</summary>
    public TensorInfo Info(string name) => Find(name).Info;

    /// <summary>
    /// One tensor in its stored dtype (F32, F16 or BF16) as a CPU tensor the caller owns: a view of a private
    /// memory map of its bytes, or (for a tensor whose offset is not a multiple of its element size, which the
    /// format allows) a copy read into new memory.
    /// </summary>
    public torch.Tensor ReadStored(string name)
    {
        var entry = Find(name);
        if (!SafetensorsDType.IsSupported(entry.Info.DType))
            throw new InputException(SourcePath, $"unsupported dtype {entry.Info.DType} for tensor {name} (supported: F32, F16, BF16)");
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("safetensors reading needs a little-endian machine");
        int size = SafetensorsDType.ElementSize(entry.Info.DType);
        return entry.ByteCount > 0 && entry.FileOffset % size == 0 ? Map(entry, size) : ReadCopy(entry);
    }

    private torch.Tensor Map(Entry entry, int size)
    {
        var dtype = SafetensorsDType.ToScalarType(entry.Info.DType);
        CheckLength();
        torch.Tensor whole;
        try
        {
            // libtorch's from_file maps [0, size·count) privately (MAP_PRIVATE); only the pages touched become resident.
            whole = torch.from_file(SourcePath, shared: false, size: (entry.FileOffset + entry.ByteCount) / size, dtype: dtype);
        }
        catch (Exception e) when (e is ExternalException or IOException)
        {
            throw new InputException(SourcePath, $"cannot map tensor {entry.Info.Name}: {e.Message.Split('\n')[0]}", e);
        }
        using (whole) return whole.narrow(0, entry.FileOffset / size, entry.ByteCount / size).view(entry.Info.Shape);
    }

    private void CheckLength()
    {
        long length;
        try { length = new FileInfo(SourcePath).Length; }
        catch (IOException e) { throw new InputException(SourcePath, $"cannot read: {e.Message}", e); }
        if (length != FileLength)
            throw new InputException(SourcePath, $"file changed size since it was opened (was {FileLength} bytes)");
    }

    private torch.Tensor ReadCopy(Entry entry)
    {
        string name = entry.Info.Name;
        var result = torch.empty(entry.Info.Shape, dtype: SafetensorsDType.ToScalarType(entry.Info.DType));
        try
        {
            using var handle = File.OpenHandle(SourcePath, FileMode.Open, FileAccess.Read, FileShare.Read);
            if (RandomAccess.GetLength(handle) != FileLength)
                throw new InputException(SourcePath, $"file changed size since it was opened (was {FileLength} bytes)");
            TensorBytes.ReadInto(handle, entry.FileOffset, result, SourcePath, name);
            return result;
        }
        catch (Exception e)
        {
            result.Dispose();
            if (e is IOException or UnauthorizedAccessException)
                throw new InputException(SourcePath, $"cannot read tensor {name}: {e.Message}", e);
            throw;
        }
    }

    /// <inheritdoc/>
    public torch.Tensor ReadFloat32(string name)
    {
        var stored = ReadStored(name);
        if (stored.dtype == torch.ScalarType.Float32) return stored;
        using (stored) return stored.to(torch.ScalarType.Float32);
    }

    private Entry Find(string name) =>
        _entries.TryGetValue(name, out var entry) ? entry : throw new KeyNotFoundException($"{SourcePath}: no tensor named {name}");

    /// <summary>Nothing to release: no handle is kept between reads.</summary>
    public void Dispose() { }
}
