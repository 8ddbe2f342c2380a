using System.Text;
using System.Text.Json.Nodes;
using KeyValueLab.Checkpoints;
using KeyValueLab.Models;
using KeyValueLab.Tests.Cli;

namespace KeyValueLab.Tests.Models;

/// <summary>A model that would not fit is refused before loading, with one line; the estimate follows the headers.</summary>
public class MemoryCheckTests
{
    private static readonly string Bf16 = TestData.Path("fixtures/tiny_gpt2_bf16_sharded");

    [Fact]
    public void TooLittleMemoryIsRefusedWithOneLineNamingEstimateAndAvailable()
    {
        var e = Assert.Throws<InputException>(() => ModelLoader.Load(Bf16, new LoadOptions { MemoryLimit = 100_000_000 }));
        Assert.DoesNotContain('\n', e.Message);
        Assert.StartsWith(Bf16, e.Message);
        Assert.Contains("gpt2 model with 2 layers needs about 0.5 GB resident (linears as stored) but 0.1 GB is available; try --4bit", e.Message);
        using var fits = ModelLoader.Load(Bf16, new LoadOptions { MemoryLimit = 1_000_000_000 });
    }

    [Fact]
    public void EstimateCountsStoredBytesForFrozenLinearsAndFp32ForTheRest()
    {
        // From the headers alone: the non-lm_head linear weights (2-D, named *.c_attn/c_proj/c_fc.weight) are BF16.
        using var checkpoint = HfCheckpoint.Open(Bf16);
        long linearValues = checkpoint.Tensors.Where(t => t.Shape.Length == 2 && t.Name.Contains(".h.", StringComparison.Ordinal))
            .Sum(t => t.Shape[0] * t.Shape[1]);
        Assert.True(linearValues > 0);
        long stored = ModelLoader.EstimateBytes(Bf16), wide = ModelLoader.EstimateBytes(Bf16, new LoadOptions { DType = WeightDType.F32 });
        // fp32 keeps 4 bytes a value instead of 2 and needs no widening scratch (two 4 MiB blocks).
        Assert.Equal(2 * linearValues - 2 * StoredWeight.BlockBytes, wide - stored);
    }

    [Fact]
    public void CliRefusesAModelLargerThanMemoryWithExitCode2AndWritesNothing()
    {
        using var dir = new TempDir();
        string model = Path.Combine(dir.Path, "big");
        WriteSparseCheckpoint(model);
        var before = Directory.GetFileSystemEntries(dir.Path, "*", SearchOption.AllDirectories).Order().ToArray();
        var (code, stdout, stderr) = Kvlab.Run("generate", "-m", model, "-z", TestData.Path("llama2c_stories260K/tok512.bin"), "-n", "4");
        Assert.Equal(2, code);
        Assert.Equal("", stdout);
        string line = Assert.Single(stderr.TrimEnd('\n').Split('\n'));
        Assert.Matches(@"^kvlab: .*big: llama model with 80 layers needs about 1[0-9]{2}\.\d GB resident \(linears as stored\) but \d+\.\d GB is available; try --4bit$", line);
        Assert.Equal(before, Directory.GetFileSystemEntries(dir.Path, "*", SearchOption.AllDirectories).Order().ToArray());
    }

    /// <summary>
    /// A Llama-2-70B-shaped BF16 checkpoint (about 138 GB) whose data area is a hole in a sparse file: the headers are
    /// complete and valid, the bytes take no disk, and nothing may read them.
    /// </summary>
    private static void WriteSparseCheckpoint(string folder)
    {
        Directory.CreateDirectory(folder);
        var config = new JsonObject
        {
            ["model_type"] = "llama", ["hidden_size"] = 8192, ["intermediate_size"] = 28672, ["num_hidden_layers"] = 80,
            ["num_attention_heads"] = 64, ["num_key_value_heads"] = 8, ["vocab_size"] = 32000, ["max_position_embeddings"] = 4096,
            ["rms_norm_eps"] = 1e-5, ["tie_word_embeddings"] = false,
        };
        File.WriteAllText(Path.Combine(folder, "config.json"), config.ToJsonString());
        using var meta = ModelLoader.CreateOnMeta(Architectures.ParseConfig(config, "config.json"));
        var header = new JsonObject();
        long offset = 0;
        foreach (var t in ModelLoader.CheckpointTensors(meta))
        {
            long bytes = t.Shape.Aggregate(2L, (a, b) => a * b);
            header[t.Name] = new JsonObject { ["dtype"] = "BF16", ["shape"] = new JsonArray([.. t.Shape.Select(d => JsonValue.Create(d))]), ["data_offsets"] = new JsonArray(offset, offset + bytes) };
            offset += bytes;
        }
        byte[] json = Encoding.UTF8.GetBytes(header.ToJsonString());
        using var file = File.Create(Path.Combine(folder, "model.safetensors"));
        file.Write(BitConverter.GetBytes((ulong)json.Length));
        file.Write(json);
        file.SetLength(8 + json.Length + offset);
    }
}
