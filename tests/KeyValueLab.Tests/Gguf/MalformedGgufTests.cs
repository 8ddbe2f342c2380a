using System.Text;
using KeyValueLab.Checkpoints;
using KeyValueLab.Models;

namespace KeyValueLab.Tests.Gguf;

/// <summary>
/// Malformed GGUF files, built byte by byte here (independently of <see cref="GgufWriter"/>): each must give one
/// InputException whose message starts with the file and names the problem, promptly, through
/// <see cref="ModelLoader.Load"/>, as malformed safetensors do.
/// </summary>
public class MalformedGgufTests : IDisposable
{
    private readonly TempDir _tmp = new();

    public void Dispose() => _tmp.Dispose();

    /// <summary>A small GGUF: header, metadata entries (raw), tensor directory, aligned data.</summary>
    private sealed class Builder
    {
        public uint Magic = 0x46554747, Version = 3;
        public ulong? TensorCount, KvCount;
        public List<byte[]> Kvs = [];
        public List<(string Name, ulong[] Dims, uint Type, ulong Offset)> Tensors = [];
        public int Alignment = 32;
        public long DataBytes = 64;
        public int TruncateTo = -1;

        public Builder()
        {
            Kvs.Add(Kv("general.architecture", 8, Str("llama")));
            Tensors.Add(("token_embd.weight", [4, 2], 0, 0));   // F32 [2, 4]: 32 bytes
            Tensors.Add(("output_norm.weight", [4], 0, 32));
        }

        public static byte[] Str(string s)
        {
            var b = Encoding.UTF8.GetBytes(s);
            return [.. BitConverter.GetBytes((ulong)b.Length), .. b];
        }

        public static byte[] Kv(string key, uint type, byte[] value) => [.. Str(key), .. BitConverter.GetBytes(type), .. value];

        public byte[] Bytes()
        {
            var m = new MemoryStream();
            var w = new BinaryWriter(m);
            w.Write(Magic); w.Write(Version);
            w.Write(TensorCount ?? (ulong)Tensors.Count); w.Write(KvCount ?? (ulong)Kvs.Count);
            foreach (var kv in Kvs) w.Write(kv);
            foreach (var (name, dims, type, offset) in Tensors)
            {
                w.Write(Str(name)); w.Write((uint)dims.Length);
                foreach (var d in dims) w.Write(d);
                w.Write(type); w.Write(offset);
            }
            while (m.Length % Alignment != 0) w.Write((byte)0);
            for (long i = 0; i < DataBytes; i++) w.Write((byte)(i * 7));
            var bytes = m.ToArray();
            return TruncateTo >= 0 ? bytes[..TruncateTo] : bytes;
        }
    }

    private string Write(Builder b, string name = "m.gguf")
    {
        string path = _tmp.File(name);
        File.WriteAllBytes(path, b.Bytes());
        return path;
    }

    private static void Fails(string path, string problem)
    {
        var task = Task.Run(() => { using var _ = GgufFile.Open(path); });
        Assert.True(((IAsyncResult)task).AsyncWaitHandle.WaitOne(TimeSpan.FromSeconds(60)), $"opening {path} hung");
        var e = Assert.IsType<InputException>(task.Exception?.InnerException);
        Assert.StartsWith(path + ": ", e.Message);
        Assert.Contains(problem, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void TheGeneratedBaseFileOpens()
    {
        using var f = GgufFile.Open(Write(new Builder()));
        Assert.Equal(new[] { "token_embd.weight", "output_norm.weight" }, f.Tensors.Select(t => t.Name));
        Assert.Equal(new long[] { 2, 4 }, f.Tensors[0].Shape);
        using var t = f.ReadFloat32("output_norm.weight");
        Assert.Equal(BitConverter.ToSingle([32 * 7 % 256, 33 * 7 % 256, 34 * 7 % 256, 35 * 7 % 256]), t[0].item<float>());
    }

    public static TheoryData<string, string> Cases => new()
    {
        { "short", "too short for a GGUF header" },
        { "magic", "not a GGUF file" },
        { "version1", "GGUF version 1 is not supported" },
        { "kvcount", "metadata count" },
        { "tensorcount", "tensor count" },
        { "keylength", "string length" },
        { "emptykey", "empty key" },
        { "badutf8", "not valid UTF-8" },
        { "valuetype", "unknown metadata value type 13" },
        { "nestedarray", "arrays of arrays" },
        { "arraylength", "array length" },
        { "duplicatekey", "appears twice" },
        { "bool", "bool value 2" },
        { "alignment", "general.alignment" },
        { "duplicatetensor", "tensor \"token_embd.weight\" appears twice" },
        { "ndims", "5 dimensions" },
        { "zerodim", "dimension 0 is 0" },
        { "overflow", "element count overflows" },
        { "q4k", "ggml type 12 (Q4_K) is not supported" },
        { "unknowntype", "ggml type 99 (unknown)" },
        { "q8row", "Q8_0 row length 4 is not a multiple of 32" },
        { "misaligned", "not a multiple of the alignment 32" },
        { "pastend", "runs past the end of the data section" },
        { "overlap", "overlap" },
        { "truncatedinfo", "file ends inside" },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void MalformedFileIsRefusedWithOneLine(string kind, string problem)
    {
        var b = new Builder();
        switch (kind)
        {
            case "short": File.WriteAllBytes(_tmp.File("m.gguf"), [0x47, 0x47, 0x55, 0x46, 3, 0]); Fails(_tmp.File("m.gguf"), problem); return;
            case "magic": b.Magic = 0x4C4C4747; break;
            case "version1": b.Version = 1; break;
            case "kvcount": b.KvCount = ulong.MaxValue / 2; break;
            case "tensorcount": b.TensorCount = 1UL << 40; break;
            case "keylength": b.Kvs[0] = [.. BitConverter.GetBytes(1UL << 50), .. "x"u8.ToArray()]; break;
            case "emptykey": b.Kvs.Add(Builder.Kv("", 4, BitConverter.GetBytes(1u))); break;
            case "badutf8": b.Kvs.Add([.. BitConverter.GetBytes(2UL), 0xC3, 0x28, .. BitConverter.GetBytes(4u), .. BitConverter.GetBytes(1u)]); break;
            case "valuetype": b.Kvs.Add(Builder.Kv("x", 13, BitConverter.GetBytes(1u))); break;
            case "nestedarray": b.Kvs.Add(Builder.Kv("x", 9, [.. BitConverter.GetBytes(9u), .. BitConverter.GetBytes(1UL)])); break;
            case "arraylength": b.Kvs.Add(Builder.Kv("x", 9, [.. BitConverter.GetBytes(4u), .. BitConverter.GetBytes(1UL << 40)])); break;
            case "duplicatekey": b.Kvs.Add(Builder.Kv("general.architecture", 8, Builder.Str("gpt2"))); break;
            case "bool": b.Kvs.Add(Builder.Kv("x", 7, [2])); break;
            case "alignment": b.Kvs.Add(Builder.Kv("general.alignment", 4, BitConverter.GetBytes(24u))); break;
            case "duplicatetensor": b.Tensors[1] = ("token_embd.weight", [4], 0, 32); break;
            case "ndims": b.Tensors[1] = ("output_norm.weight", [4, 1, 1, 1, 1], 0, 32); break;
            case "zerodim": b.Tensors[1] = ("output_norm.weight", [0], 0, 32); break;
            case "overflow": b.Tensors[1] = ("output_norm.weight", [1UL << 40, 1UL << 40], 0, 32); break;
            case "q4k": b.Tensors[1] = ("output_norm.weight", [256], 12, 32); break;
            case "unknowntype": b.Tensors[1] = ("output_norm.weight", [4], 99, 32); break;
            case "q8row": b.Tensors[1] = ("output_norm.weight", [4], 8, 32); break;
            case "misaligned": b.Tensors[1] = ("output_norm.weight", [4], 0, 36); break;
            case "pastend": b.Tensors[1] = ("output_norm.weight", [16], 0, 32); break;
            case "overlap": b.Tensors[1] = ("output_norm.weight", [4], 0, 0); break;
            case "truncatedinfo": b.TruncateTo = 24 + b.Kvs[0].Length + 4; break;
            default: throw new ArgumentException(kind);
        }
        Fails(Write(b), problem);
    }

    [Fact]
    public void ModelLoaderReportsGgufProblemsAsInputErrors()
    {
        // A well-formed file whose metadata lacks what a llama model needs, and one of an architecture not supported.
        string path = Write(new Builder());
        var e = Assert.Throws<InputException>(() => ModelLoader.Load(path));
        Assert.Equal(path + ": metadata llama.embedding_length is missing", e.Message);
        var b = new Builder();
        b.Kvs[0] = Builder.Kv("general.architecture", 8, Builder.Str("mamba"));
        path = Write(b, "mamba.gguf");
        e = Assert.Throws<InputException>(() => ModelLoader.Load(path));
        Assert.Contains("general.architecture \"mamba\" is not supported", e.Message);
    }
}
