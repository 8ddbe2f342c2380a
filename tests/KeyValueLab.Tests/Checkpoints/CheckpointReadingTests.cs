using System.Text.Json.Nodes;
using KeyValueLab.Checkpoints;
using TorchSharp;

namespace KeyValueLab.Tests.Checkpoints;

public class CheckpointReadingTests
{
    public static TheoryData<string> FixtureFolders => new()
    {
        "fixtures/stories260K_hf", "fixtures/tiny_gpt2", "fixtures/tiny_gpt2_bf16_sharded",
        "fixtures/tiny_gptj", "fixtures/tiny_gptj_f16", "fixtures/tiny_llama_gqa", "hf_fixtures/tiny_gpt2_lm_buddy",
    };

    [Theory]
    [MemberData(nameof(FixtureFolders))]
    public void EveryFixtureFolderOpensAndEveryTensorReads(string folder)
    {
        using var ckpt = HfCheckpoint.Open(TestData.Path(folder));
        Assert.NotNull(ckpt.Config["model_type"]);
        Assert.NotEmpty(ckpt.Tensors);
        Assert.Equal(ckpt.Tensors.Count, ckpt.Tensors.Select(t => t.Name).Distinct().Count());
        foreach (var info in ckpt.Tensors)
        {
            using var scope = torch.NewDisposeScope();
            var t = ckpt.ReadFloat32(info.Name);
            Assert.Equal(torch.ScalarType.Float32, t.dtype);
            Assert.Equal(info.Shape, t.shape);
            Assert.True(t.isfinite().all().item<bool>(), info.Name);
        }
    }

    [Fact]
    public void ReadsNamesShapesAndDtypesAsStored()
    {
        using var gpt2 = HfCheckpoint.Open(TestData.Path("fixtures/tiny_gpt2"));
        Assert.Single(gpt2.Shards);
        Assert.Equal(28, gpt2.Tensors.Count);
        var wte = gpt2.Tensors.Single(t => t.Name == "transformer.wte.weight");
        Assert.Equal("F32", wte.DType);
        Assert.Equal(new long[] { 50257, 16 }, wte.Shape);
        Assert.Equal("pt", gpt2.Shards[0].Metadata["format"]);
        Assert.Equal(16, (int)gpt2.Config["n_embd"]!);

        using var f16 = HfCheckpoint.Open(TestData.Path("fixtures/tiny_gptj_f16"));
        Assert.All(f16.Tensors, t => Assert.Equal("F16", t.DType));
        Assert.Contains(f16.Tensors, t => t.Name == "lm_head.bias");

        using var llama = HfCheckpoint.Open(TestData.Path("fixtures/tiny_llama_gqa"));
        Assert.Equal(2, llama.Shards.Count);
        Assert.Equal(new long[] { 16, 32 }, llama.Tensors.Single(t => t.Name == "model.layers.1.self_attn.k_proj.weight").Shape);
        Assert.EndsWith("model-00002-of-00002.safetensors", llama.ShardOf("model.norm.weight").SourcePath);

        using var buddy = HfCheckpoint.Open(TestData.Path("hf_fixtures/tiny_gpt2_lm_buddy"));
        Assert.Contains(buddy.Tensors, t => t.Name == "wte.weight" && t.Shape.SequenceEqual(new long[] { 21, 2 }));
    }

    [Fact]
    public void Bf16ShardsEqualTheFp32WeightsRoundedToBf16()
    {
        using var fp32 = HfCheckpoint.Open(TestData.Path("fixtures/tiny_gpt2"));
        using var bf16 = HfCheckpoint.Open(TestData.Path("fixtures/tiny_gpt2_bf16_sharded"));
        Assert.Equal(3, bf16.Shards.Count);
        Assert.Equal(fp32.Tensors.Select(t => t.Name).Order(), bf16.Tensors.Select(t => t.Name).Order());
        foreach (var info in bf16.Tensors)
        {
            using var scope = torch.NewDisposeScope();
            Assert.Equal("BF16", info.DType);
            var rounded = fp32.ReadFloat32(info.Name).to(torch.ScalarType.BFloat16).to(torch.ScalarType.Float32);
            Assert.True(BitEqual(rounded, bf16.ReadFloat32(info.Name)), info.Name);
        }
    }

    [Fact]
    public void F16FixtureEqualsTheFp32WeightsRoundedToF16WithinOneStep()
    {
        using var fp32 = HfCheckpoint.Open(TestData.Path("fixtures/tiny_gptj"));
        using var f16 = HfCheckpoint.Open(TestData.Path("fixtures/tiny_gptj_f16"));
        foreach (var info in f16.Tensors)
        {
            using var scope = torch.NewDisposeScope();
            var rounded = fp32.ReadFloat32(info.Name).to(torch.ScalarType.Float16).to(torch.ScalarType.Float32);
            // The fixture's generator rounded a few values to the neighbouring f16 (3 of 32000 in lm_head),
            // so allow one f16 step (2^-10 relative) rather than demanding bit equality.
            var stored = f16.ReadFloat32(info.Name);
            var step = rounded.abs().clamp_min(6.1e-5) * Math.Pow(2, -10);
            Assert.True((stored - rounded).abs().le(step).all().item<bool>(), info.Name);
        }
    }

    [Fact]
    public void ChunkedReadsGiveTheSameTensor()
    {
        using var ckpt = HfCheckpoint.Open(TestData.Path("fixtures/tiny_gpt2_bf16_sharded"));
        using var whole = ckpt.ReadFloat32("transformer.wpe.weight");
        int saved = TensorBytes.ChunkBytes;
        try
        {
            TensorBytes.ChunkBytes = 6; // 3 bf16 values per read
            using var chunked = ckpt.ReadFloat32("transformer.wpe.weight");
            Assert.True(BitEqual(whole, chunked));
        }
        finally { TensorBytes.ChunkBytes = saved; }
    }

    [Fact]
    public void Llama2cStories260KEqualsTheHuggingFaceConversion()
    {
        using var bin = Llama2cCheckpoint.Open(TestData.Path("llama2c_stories260K/stories260K.bin"));
        using var hf = HfCheckpoint.Open(TestData.Path("fixtures/stories260K_hf"));

        Assert.Equal(hf.Tensors.Select(t => t.Name).Order(), bin.Tensors.Select(t => t.Name).Order());
        foreach (var info in hf.Tensors)
        {
            using var scope = torch.NewDisposeScope();
            var expected = hf.ReadFloat32(info.Name);
            var actual = bin.ReadFloat32(info.Name);
            Assert.Equal(expected.shape, actual.shape);
            Assert.True(BitEqual(expected, actual), $"{info.Name} differs: max |diff| {(expected - actual).abs().max().item<float>()}");
        }

        foreach (var key in new[] { "model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "vocab_size", "max_position_embeddings", "tie_word_embeddings", "hidden_act", "bos_token_id", "eos_token_id" })
            Assert.True(JsonNode.DeepEquals(hf.Config[key], bin.Config[key]), key);
        Assert.Equal((double)hf.Config["rms_norm_eps"]!, (double)bin.Config["rms_norm_eps"]!);
        Assert.Equal((double)hf.Config["rope_theta"]!, (double)bin.Config["rope_theta"]!);
    }

    /// <summary>Same shape, dtype and bits (NaN-safe, -0 ≠ +0).</summary>
    internal static bool BitEqual(torch.Tensor a, torch.Tensor b) =>
        a.dtype == b.dtype && a.shape.SequenceEqual(b.shape) && a.contiguous().bytes.SequenceEqual(b.contiguous().bytes);

    [Fact]
    public void CheckpointOpenDispatchesOnThePath()
    {
        using (var a = Checkpoint.Open(TestData.Path("fixtures/tiny_llama_gqa"))) Assert.IsType<HfCheckpoint>(a);
        using (var b = Checkpoint.Open(TestData.Path("llama2c_stories260K/stories260K.bin"))) Assert.IsType<Llama2cCheckpoint>(b);
    }
}
