using System.Text;
using KeyValueLab.Checkpoints;

namespace KeyValueLab.Tests.Checkpoints;

/// <summary>
/// Malformed files, generated into a temporary folder: each must give one InputException whose message
/// starts with the faulty file and names the problem, within a bounded time.
/// </summary>
public class MalformedCheckpointTests : IDisposable
{
    private readonly TempDir _tmp = new();

    public void Dispose() => _tmp.Dispose();

    /// <summary>Runs <paramref name="open"/> on another thread and expects a prompt InputException about <paramref name="file"/>.</summary>
    private static InputException Fails(string file, string problem, Action open)
    {
        var task = Task.Run(open);
        bool finished = ((IAsyncResult)task).AsyncWaitHandle.WaitOne(TimeSpan.FromSeconds(60));
        Assert.True(finished, $"opening {file} did not finish within 60 s (a hang)");
        var e = Assert.IsType<InputException>(task.Exception?.InnerException);
        Assert.StartsWith(file + ": ", e.Message);
        Assert.Contains(problem, e.Message);
        Assert.DoesNotContain('\n', e.Message);
        return e;
    }

    /// <summary>Writes a safetensors file from a header text and a data area of <paramref name="dataBytes"/> bytes.</summary>
    private string Safetensors(string name, string header, int dataBytes, ulong? headerLength = null)
    {
        byte[] h = Encoding.UTF8.GetBytes(header);
        var bytes = new byte[8 + h.Length + dataBytes];
        BitConverter.TryWriteBytes(bytes.AsSpan(0, 8), headerLength ?? (ulong)h.Length);
        h.CopyTo(bytes, 8);
        string path = _tmp.File(name);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private const string GoodHeader = """{"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}}""";

    [Fact]
    public void AWellFormedGeneratedFileOpens()
    {
        using var file = SafetensorsFile.Open(Safetensors("good.safetensors", GoodHeader, 24));
        Assert.Equal(new[] { "a", "b" }, file.Tensors.Select(t => t.Name));
    }

    [Fact]
    public void TruncatedBelowTheLengthField()
    {
        string path = _tmp.File("short.safetensors");
        File.WriteAllBytes(path, [1, 2, 3, 4, 5]);
        Fails(path, "too short", () => SafetensorsFile.Open(path));
    }

    [Fact]
    public void TruncatedInsideTheData()
    {
        string path = Safetensors("truncated.safetensors", GoodHeader, 20);
        Fails(path, "data of tensor b [16, 24) runs past the end of the data area (20 bytes)", () => SafetensorsFile.Open(path));
    }

    [Theory]
    [InlineData(200ul)]
    [InlineData(ulong.MaxValue)]
    public void HeaderLengthPastTheEndOfFile(ulong length)
    {
        string path = Safetensors("longheader.safetensors", GoodHeader, 24, headerLength: length);
        Fails(path, $"header length {length} runs past the end of the file", () => SafetensorsFile.Open(path));
    }

    [Fact]
    public void HeaderNotJson()
    {
        string path = Safetensors("notjson.safetensors", "{\"a\": {dtype: F32}}", 0);
        Fails(path, "header is not valid UTF-8 JSON", () => SafetensorsFile.Open(path));
    }

    [Fact]
    public void HeaderNotUtf8()
    {
        string path = _tmp.File("latin1.safetensors");
        byte[] header = [(byte)'{', (byte)'"', 0xE9, 0xFF, (byte)'"', (byte)':', (byte)'1', (byte)'}'];
        File.WriteAllBytes(path, [.. BitConverter.GetBytes((ulong)header.Length), .. header]);
        Fails(path, "header is not valid UTF-8 JSON", () => SafetensorsFile.Open(path));
    }

    [Fact]
    public void HeaderNotAnObject()
    {
        string path = Safetensors("array.safetensors", "[1, 2, 3]", 0);
        Fails(path, "header must be a JSON object, found Array", () => SafetensorsFile.Open(path));
    }

    [Fact]
    public void UnknownDtype()
    {
        string path = Safetensors("q7.safetensors", GoodHeader.Replace("\"dtype\":\"F32\",\"shape\":[2]", "\"dtype\":\"Q7\",\"shape\":[2]"), 24);
        Fails(path, "unknown dtype Q7 for tensor b", () => SafetensorsFile.Open(path));
    }

    [Theory]
    [InlineData("I8", 1)]
    [InlineData("F64", 8)]
    [InlineData("U8", 1)]
    public void UnsupportedDtypeIsRecognisedAndRejectedOnRead(string dtype, int size)
    {
        string header = "{\"q\":{\"dtype\":\"" + dtype + "\",\"shape\":[3],\"data_offsets\":[0," + 3 * size + "]}}";
        string path = Safetensors($"{dtype}.safetensors", header, 3 * size);
        using var file = SafetensorsFile.Open(path); // a valid file...
        Fails(path, $"unsupported dtype {dtype} for tensor q", () => file.ReadFloat32("q")); // ...that we cannot compute with
        Fails(path, $"1 unsupported dtype (need F32, F16 or BF16): q is {dtype}",
            () => StateDictMatcher.Match(new Dictionary<string, long[]> { ["q"] = [3] }, file));
    }

    [Fact]
    public void SpanDisagreesWithShape()
    {
        string path = Safetensors("mismatch.safetensors", GoodHeader.Replace("\"shape\":[2,2]", "\"shape\":[2,3]"), 24);
        Fails(path, "tensor a: shape [2, 3] × F32 needs 24 bytes but data_offsets [0, 16] span 16", () => SafetensorsFile.Open(path));
    }

    [Fact]
    public void OverlappingSpans()
    {
        string header = """{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}""";
        string path = Safetensors("overlap.safetensors", header, 16);
        Fails(path, "data of tensor b [8, 16) overlaps tensor a [0, 16)", () => SafetensorsFile.Open(path));
    }

    [Fact]
    public void SpanPastTheEnd()
    {
        string header = """{"a":{"dtype":"F32","shape":[4],"data_offsets":[100,116]}}""";
        string path = Safetensors("pastend.safetensors", header, 16);
        Fails(path, "data of tensor a [100, 116) runs past the end of the data area (16 bytes)", () => SafetensorsFile.Open(path));
    }

    [Theory]
    [InlineData("\"shape\":[-2,2]", "shape of tensor a must hold non-negative integers, found -2")]
    [InlineData("\"shape\":[2.5,2]", "shape of tensor a must hold non-negative integers, found 2.5")]
    [InlineData("\"data_offsets\":[0,16]},\"b\"", "data_offsets of tensor a end before they begin")]
    [InlineData("\"dtype\":\"F32\",\"shape\":[2,2],", "tensor a has no dtype string")]
    public void BadEntryFields(string replace, string problem)
    {
        string header = replace switch
        {
            "\"data_offsets\":[0,16]},\"b\"" => GoodHeader.Replace(replace, "\"data_offsets\":[16,0]},\"b\""),
            "\"dtype\":\"F32\",\"shape\":[2,2]," => GoodHeader.Replace(replace, "\"shape\":[2,2],"),
            _ => GoodHeader.Replace("\"shape\":[2,2]", replace),
        };
        string path = Safetensors("badentry.safetensors", header, 24);
        Fails(path, problem, () => SafetensorsFile.Open(path));
    }

    [Fact]
    public void MetadataMustMapStringsToStrings()
    {
        string path = Safetensors("meta.safetensors", """{"__metadata__":{"format":1},""" + GoodHeader[1..], 24);
        Fails(path, "__metadata__ value of \"format\" must be a string", () => SafetensorsFile.Open(path));
    }

    [Fact]
    public void DuplicateTensorName()
    {
        string header = """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}""";
        string path = Safetensors("dup.safetensors", header, 16);
        Fails(path, "tensor a appears twice", () => SafetensorsFile.Open(path));
    }

    [Fact]
    public void FileShrinksAfterOpening()
    {
        string path = Safetensors("shrinks.safetensors", GoodHeader, 24);
        using var file = SafetensorsFile.Open(path);
        using (var stream = new FileStream(path, FileMode.Open)) stream.SetLength(stream.Length - 8);
        Fails(path, "file changed size since it was opened", () => file.ReadFloat32("b"));
    }

    // ---- the matcher: missing, unexpected, wrong shape, all in one line ----

    [Fact]
    public void MatcherReportsEveryMissingUnexpectedAndMisshapenTensor()
    {
        string path = Safetensors("model.safetensors", GoodHeader, 24);
        using var file = SafetensorsFile.Open(path);
        var expected = new Dictionary<string, long[]>
        {
            ["transformer.a"] = [4, 1],  // stored as a [2, 2]
            ["transformer.c"] = [2],     // not stored
            ["lm_head.weight"] = [2, 2], // optional
        };
        for (int i = 0; i < 12; i++) expected[$"h.{i}.w"] = [1];
        var e = Fails(path, "checkpoint does not fit the model: 13 missing: transformer.c, h.0.w", () =>
            StateDictMatcher.Match(expected, file, optional: ["lm_head.weight"]));
        Assert.Contains("h.8.w, … and 3 more", e.Message);
        Assert.Contains("1 unexpected: b", e.Message);
        Assert.Contains("1 wrong shape: transformer.a (stored as a) expected [4, 1] found [2, 2]", e.Message);
    }

    [Fact]
    public void MatcherIgnoresBuffersButNotUnknownTensors()
    {
        string header = """{"h.0.attn.bias":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"h.0.attn.c_attn.bias":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}""";
        string path = Safetensors("buffers.safetensors", header, 8);
        using var file = SafetensorsFile.Open(path);
        Fails(path, "1 unexpected: h.0.attn.c_attn.bias", () => StateDictMatcher.Match(new Dictionary<string, long[]>(), file));
    }

    // ---- Hugging Face folders ----

    private string Folder(string name, string? config = """{"model_type":"gpt2"}""")
    {
        string folder = _tmp.File(name);
        Directory.CreateDirectory(folder);
        if (config is not null) File.WriteAllText(Path.Combine(folder, "config.json"), config);
        return folder;
    }

    private void Index(string folder, string weightMap) =>
        File.WriteAllText(Path.Combine(folder, "model.safetensors.index.json"), "{\"metadata\":{\"total_size\":24},\"weight_map\":" + weightMap + "}");

    private void Shard(string folder, string name, string header, int dataBytes)
    {
        string path = Safetensors(name, header, dataBytes);
        File.Move(path, Path.Combine(folder, name));
    }

    [Fact]
    public void IndexNamesAMissingShard()
    {
        string folder = Folder("missingshard");
        Shard(folder, "model-00001-of-00002.safetensors", GoodHeader, 24);
        Index(folder, """{"a":"model-00001-of-00002.safetensors","b":"model-00001-of-00002.safetensors","c":"model-00002-of-00002.safetensors"}""");
        Fails(Path.Combine(folder, "model.safetensors.index.json"), "shard model-00002-of-00002.safetensors named for tensor c does not exist",
            () => HfCheckpoint.Open(folder));
    }

    [Fact]
    public void IndexMapsATensorToAShardWithoutIt()
    {
        string folder = Folder("absent");
        Shard(folder, "model-00001-of-00001.safetensors", GoodHeader, 24);
        Index(folder, """{"a":"model-00001-of-00001.safetensors","b":"model-00001-of-00001.safetensors","z":"model-00001-of-00001.safetensors"}""");
        Fails(Path.Combine(folder, "model.safetensors.index.json"), "tensor z is mapped to shard model-00001-of-00001.safetensors, which does not contain it",
            () => HfCheckpoint.Open(folder));
    }

    [Fact]
    public void ShardHoldsATensorTheIndexDoesNotList()
    {
        string folder = Folder("unlisted");
        Shard(folder, "model-00001-of-00001.safetensors", GoodHeader, 24);
        Index(folder, """{"a":"model-00001-of-00001.safetensors"}""");
        Fails(Path.Combine(folder, "model-00001-of-00001.safetensors"), "holds tensor b, which model.safetensors.index.json does not list",
            () => HfCheckpoint.Open(folder));
    }

    [Fact]
    public void IndexShardOutsideTheFolder()
    {
        string folder = Folder("escape");
        Index(folder, """{"a":"../elsewhere.safetensors"}""");
        Fails(Path.Combine(folder, "model.safetensors.index.json"), "is outside the checkpoint folder", () => HfCheckpoint.Open(folder));
    }

    [Fact]
    public void IndexWithoutWeightMap()
    {
        string folder = Folder("noweightmap");
        File.WriteAllText(Path.Combine(folder, "model.safetensors.index.json"), """{"metadata":{}}""");
        Fails(Path.Combine(folder, "model.safetensors.index.json"), "has no weight_map object", () => HfCheckpoint.Open(folder));
    }

    [Fact]
    public void ConfigNotJson()
    {
        string folder = Folder("badconfig", """{"model_type": "gpt2",,}""");
        Shard(folder, "model.safetensors", GoodHeader, 24);
        Fails(Path.Combine(folder, "config.json"), "not valid JSON", () => HfCheckpoint.Open(folder));
    }

    [Fact]
    public void ConfigWithADuplicateKey()
    {
        string folder = Folder("dupconfig", """{"model_type": "gpt2", "n_embd": 16, "n_embd": 32}""");
        Fails(Path.Combine(folder, "config.json"), "duplicate key", () => HfCheckpoint.Open(folder));
    }

    [Fact]
    public void ConfigNotAnObject()
    {
        string folder = Folder("arrayconfig", "[]");
        Fails(Path.Combine(folder, "config.json"), "must be a JSON object, found Array", () => HfCheckpoint.Open(folder));
    }

    [Fact]
    public void ConfigMissing()
    {
        string folder = Folder("noconfig", config: null);
        Shard(folder, "model.safetensors", GoodHeader, 24);
        Fails(Path.Combine(folder, "config.json"), "file not found", () => HfCheckpoint.Open(folder));
    }

    [Fact]
    public void FolderWithoutWeights()
    {
        string folder = Folder("noweights");
        File.WriteAllBytes(Path.Combine(folder, "pytorch_model.bin"), [0]);
        Fails(folder, "no model.safetensors or model.safetensors.index.json (pytorch_model.bin is not supported", () => HfCheckpoint.Open(folder));
    }

    [Fact]
    public void MalformedSafetensorsInsideAFolderNamesTheFile()
    {
        string folder = Folder("badweights");
        Shard(folder, "model.safetensors", "nope", 0);
        Fails(Path.Combine(folder, "model.safetensors"), "header is not valid UTF-8 JSON", () => HfCheckpoint.Open(folder));
    }

    // ---- llama2.c ----

    private string Llama2c(string name, int[] header, long floats)
    {
        string path = _tmp.File(name);
        using var stream = File.Create(path);
        foreach (int v in header) stream.Write(BitConverter.GetBytes(v));
        stream.SetLength(28 + 4 * floats);
        return path;
    }

    // dim 8, hidden 16, 1 layer, 2 heads, 1 kv head, vocab 10 (shared), seq_len 4: head 4, kv dim 4.
    private static readonly int[] TinyHeader = [8, 16, 1, 2, 1, 10, 4];
    private const long TinyFloats = 10 * 8 + 8 + 64 + 32 + 32 + 64 + 8 + 3 * 128 + 8 + 2 * 4 * 2;

    [Fact]
    public void AWellFormedGeneratedLlama2cFileOpens()
    {
        using var ckpt = Llama2cCheckpoint.Open(Llama2c("ok.bin", TinyHeader, TinyFloats));
        Assert.Equal(11, ckpt.Tensors.Count);
        using var k = ckpt.ReadFloat32("model.layers.0.self_attn.k_proj.weight");
        Assert.Equal(new long[] { 4, 8 }, k.shape);
    }

    [Theory]
    [InlineData(-4, "(truncated?)")]
    [InlineData(4, "(extra bytes")]
    public void Llama2cSizeDisagreesWithHeader(int deltaBytes, string hint)
    {
        string path = Llama2c("size.bin", TinyHeader, TinyFloats);
        using (var s = new FileStream(path, FileMode.Open)) s.SetLength(s.Length + deltaBytes);
        long actual = 28 + 4 * TinyFloats + deltaBytes;
        Fails(path, $"file is {actual} bytes but its header (dim 8, hidden 16, layers 1, heads 2, kv heads 1, vocab 10, seq_len 4) implies {28 + 4 * TinyFloats} bytes {hint}",
            () => Llama2cCheckpoint.Open(path));
    }

    [Fact]
    public void Llama2cShorterThanItsHeader()
    {
        string path = _tmp.File("tiny.bin");
        File.WriteAllBytes(path, new byte[12]);
        Fails(path, "too short for a llama2.c header", () => Llama2cCheckpoint.Open(path));
    }

    [Theory]
    [InlineData(new[] { 9, 16, 1, 2, 1, 10, 4 }, "dim 9 is not a multiple of n_heads 2")]
    [InlineData(new[] { 12, 16, 1, 3, 2, 10, 4 }, "n_heads 3 is not a multiple of n_kv_heads 2")]
    [InlineData(new[] { 8, 16, 1, 8, 8, 10, 4 }, "head size 1 (dim / n_heads) must be even")]
    [InlineData(new[] { 8, 0, 1, 2, 1, 10, 4 }, "header field hidden_dim is 0; it must be positive")]
    [InlineData(new[] { 8, 16, -1, 2, 1, 10, 4 }, "header field n_layers is -1; it must be positive")]
    [InlineData(new[] { 0x616b3432, 2, 8, 16, 1, 2, 1 }, "llama2.c v1/v2 file")]
    [InlineData(new[] { 1 << 30, 1 << 30, 1 << 30, 2, 1, 10, 4 }, "header is inconsistent")]
    public void Llama2cInconsistentHeader(int[] header, string problem)
    {
        string path = Llama2c("header.bin", header, 64);
        Fails(path, problem, () => Llama2cCheckpoint.Open(path));
    }

    [Fact]
    public void Llama2cUnsharedClassifierAddsLmHead()
    {
        int[] header = [.. TinyHeader];
        header[5] = -10;
        using var ckpt = Llama2cCheckpoint.Open(Llama2c("unshared.bin", header, TinyFloats + 80));
        Assert.Equal("lm_head.weight", ckpt.Tensors[^1].Name);
        Assert.False((bool)ckpt.Config["tie_word_embeddings"]!);
        Assert.Equal(10, (int)ckpt.Config["vocab_size"]!);
    }
}
