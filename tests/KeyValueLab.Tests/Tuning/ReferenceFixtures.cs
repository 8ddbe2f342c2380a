using System.Buffers.Binary;
using System.Text;
using System.Text.Json.Nodes;

namespace KeyValueLab.Tests.Tuning;

/// <summary>
/// The reference outputs of transformers, PEFT and bitsandbytes in Fixtures/reference (copied beside the test assembly):
/// <c>ours/</c> made by tools/reference/MakeInputs.cs, <c>python/</c> by tools/reference/make_references.py.
/// </summary>
internal static class ReferenceFixtures
{
    public static string Path(string relative) =>
        System.IO.Path.Combine(AppContext.BaseDirectory, "Fixtures", "reference", relative.Replace('/', System.IO.Path.DirectorySeparatorChar));

    public static JsonNode Json(string relative) => JsonNode.Parse(File.ReadAllText(Path(relative)))!;

    /// <summary>The token ids every logits file was computed for, <c>[2, 12]</c>.</summary>
    public static long[][] Ids() =>
        [.. Json("ours/ids.json")["input_ids"]!.AsArray().Select(row => row!.AsArray().Select(v => (long)v!).ToArray())];
}

/// <summary>
/// A minimal safetensors reader for the fixtures' F32, U8 and I64 tensors (the product's reader handles float weights only).
/// </summary>
internal sealed class RawSafetensors
{
    private readonly byte[] _data;
    private readonly long _base;
    private readonly Dictionary<string, (string DType, long[] Shape, long Begin, long End)> _entries = new(StringComparer.Ordinal);

    public RawSafetensors(string path)
    {
        _data = File.ReadAllBytes(path);
        long headerLength = BinaryPrimitives.ReadInt64LittleEndian(_data);
        var header = JsonNode.Parse(Encoding.UTF8.GetString(_data, 8, (int)headerLength))!.AsObject();
        _base = 8 + headerLength;
        foreach (var (name, node) in header)
        {
            if (name == "__metadata__") continue;
            var offsets = node!["data_offsets"]!.AsArray();
            _entries[name] = ((string)node["dtype"]!, [.. node["shape"]!.AsArray().Select(v => (long)v!)], (long)offsets[0]!, (long)offsets[1]!);
        }
    }

    public IEnumerable<string> Names => _entries.Keys;
    public bool Contains(string name) => _entries.ContainsKey(name);
    public long[] Shape(string name) => _entries[name].Shape;

    private ReadOnlySpan<byte> Bytes(string name, string dtype)
    {
        var e = _entries.TryGetValue(name, out var entry) ? entry : throw new KeyNotFoundException(name);
        if (e.DType != dtype) throw new InvalidOperationException($"{name} is {e.DType}, not {dtype}");
        return _data.AsSpan((int)(_base + e.Begin), (int)(e.End - e.Begin));
    }

    public byte[] U8(string name) => Bytes(name, "U8").ToArray();
    public float[] F32(string name) => System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(Bytes(name, "F32")).ToArray();
    public long[] I64(string name) => System.Runtime.InteropServices.MemoryMarshal.Cast<byte, long>(Bytes(name, "I64")).ToArray();

    /// <summary>An F32 tensor as a TorchSharp tensor of its shape.</summary>
    public TorchSharp.torch.Tensor Tensor(string name) => TorchSharp.torch.tensor(F32(name), Shape(name));
}
