using KeyValueLab.Checkpoints;
using KeyValueLab.Models;
using KeyValueLab.Tests.Models;
using KeyValueLab.Tests.Tokenization;
using KeyValueLab.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace KeyValueLab.Tests.Gguf;

/// <summary>
/// GGUF out and back in: weights bit-identical (F32) or exactly the fp16 rounding (F16), the config rebuilt from
/// the metadata, the q/k permutation as llama.cpp's converter defines it, Q8_0/BF16 widening, and the tokenizers
/// carried in <c>tokenizer.ggml.*</c> (one of them written by llama.cpp itself).
/// </summary>
public class GgufRoundTripTests : IDisposable
{
    private readonly TempDir _tmp = new();

    public void Dispose() => _tmp.Dispose();

    /// <summary>Same shape and the same float32 bit patterns.</summary>
    internal static bool BitEqual(Tensor a, Tensor b)
    {
        if (!a.shape.SequenceEqual(b.shape)) return false;
        using var x = a.detach().contiguous();
        using var y = b.detach().contiguous();
        var u = x.data<float>().ToArray();
        var v = y.data<float>().ToArray();
        return u.Select(BitConverter.SingleToUInt32Bits).SequenceEqual(v.Select(BitConverter.SingleToUInt32Bits));
    }

    public static TheoryData<string> Models => new()
    {
        "stories260K", "tiny_llama_gqa", "tiny_qwen2", "tiny_gpt2", "tiny_mistral", "tiny_gemma", "tiny_phi3", "tiny_gpt_neox", "tiny_gpt_neox_sequential",
    };

    internal static (LoadedModel Model, ITokenizer Tokenizer) Fixture(string name) => name switch
    {
        "stories260K" => (ModelLoader.Load(TestData.Path("llama2c_stories260K/stories260K.bin")), TokenizerFixtures.Tok512),
        // No tokenizer ships with tiny_llama_gqa (vocab 1000): tok512's 512 tokens, the other rows written as unused.
        "tiny_llama_gqa" => (ModelLoader.Load(TestData.Path("fixtures/tiny_llama_gqa")), TokenizerFixtures.Tok512),
        "tiny_gpt2" => (ModelLoader.Load(TestData.Path("fixtures/tiny_gpt2")), TokenizerFixtures.Gpt2Files),
        // llama.cpp cannot hold tiny_gemma2's query_pre_attn_scalar 24 (see Gemma2QueryScaleLlamaCppCannotHoldIsRefused): its weights with 16.
        "tiny_gemma2_scale16" => (Variant("tiny_gemma2", c => c["query_pre_attn_scalar"] = 16), TokenizerFixtures.Tok512),
        // The batch fixtures ship no tokenizer either: tok512 as above.
        _ => (ModelLoader.Load(TestData.Path("fixtures/" + name)), TokenizerFixtures.Tok512),
    };

    [Theory]
    [MemberData(nameof(Models))]
    public void F32ExportLoadsBackBitIdentical(string name)
    {
        var (original, tok) = Fixture(name);
        using var _ = original;
        string path = _tmp.File(name + ".gguf");
        GgufExport.Write(original.Model, tok, path);
        using var back = ModelLoader.Load(path);

        var a = original.Model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        var b = back.Model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        Assert.Equal(a.Keys.Order(), b.Keys.Order());
        var arch = GgufArchitecture.ForModelType(original.Config.ModelType)!;
        foreach (var (n, p) in a)
        {
            // Gemma's norms travel as 1 + w (fp32-rounded) and come back as (1 + w) - 1, which is exact (Sterbenz):
            // the scale 1 + w the model computes is bit-identical, the stored w may differ in its last bits.
            using var expected = arch.LayoutOf(n) == GgufLayout.PlusOne ? p.detach() + 1 - 1 : p.detach().clone();
            Assert.True(BitEqual(expected, b[n]), $"{n} differs after the GGUF round trip");
        }
        var (c, d) = (original.Config, back.Config);
        // Mistral is written as llama.cpp's converter writes it, as "llama".
        Assert.Equal(GgufArchitecture.ForGguf(arch.Name)!.ModelType, d.ModelType);
        Assert.Equal((c.VocabSize, c.HiddenSize, c.NumLayers, c.NumHeads, c.NumKvHeads, c.IntermediateSize, c.MaxPositions, c.TieWordEmbeddings, c.HeadDim),
            (d.VocabSize, d.HiddenSize, d.NumLayers, d.NumHeads, d.NumKvHeads, d.IntermediateSize, d.MaxPositions, d.TieWordEmbeddings, d.HeadDim));
        string eps = c.ModelType switch { "gpt2" => "layer_norm_epsilon", "gpt_neox" => "layer_norm_eps", _ => "rms_norm_eps" };
        Assert.Equal(c.Raw[eps]!.GetValue<double>(), d.Raw[eps]!.GetValue<double>());
        // The model read back computes what the original does (for Mistral, up to its window, which GGUF does not hold).
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var ids = tensor(new long[] { 1, 10, 200, 300 }, [1, 4]);
        Assert.True(BitEqual(original.Model.Forward(ids), back.Model.Forward(ids)), "logits differ after the GGUF round trip");
    }

    /// <summary>A fixture's weights under a changed <c>config.json</c> (copied to a new temporary folder).</summary>
    internal static LoadedModel Variant(string fixture, Action<System.Text.Json.Nodes.JsonObject> change)
    {
        string dir = Directory.CreateTempSubdirectory("kvlab-variant-").FullName;
        foreach (var f in Directory.GetFiles(TestData.Path("fixtures/" + fixture))) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!.AsObject();
        change(config);
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
        try { return ModelLoader.Load(dir); }
        finally { Directory.Delete(dir, recursive: true); }
    }

    [Fact]
    public void Gemma2QueryScaleLlamaCppCannotHoldIsRefused()
    {
        // llama.cpp scales Gemma 2 queries by 1/sqrt(head_dim) and stores no query_pre_attn_scalar: 24 != 16 is refused, nothing written.
        using var m = ModelLoader.Load(TestData.Path("fixtures/tiny_gemma2"));
        string path = _tmp.File("g2.gguf");
        var e = Assert.Throws<NotSupportedException>(() => GgufExport.Write(m.Model, TokenizerFixtures.Tok512, path));
        Assert.Contains("query_pre_attn_scalar", e.Message);
        Assert.Empty(Directory.GetFiles(_tmp.Path));
    }

    [Fact]
    public void ExportedFixtureReproducesItsReferenceLogits()
    {
        // The model read back from GGUF against the fixture's transformers logits, not only against itself.
        var (original, tok) = Fixture("tiny_llama_gqa");
        original.Dispose();
        string path = _tmp.File("gqa.gguf");
        using (var m = ModelLoader.Load(TestData.Path("fixtures/tiny_llama_gqa"))) GgufExport.Write(m.Model, tok, path);
        using var back = ModelLoader.Load(path);
        var reference = ReferenceLogits.For("tiny_llama_gqa");
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var diffs = reference.MaxDiffPerPosition(back.Model.Forward(reference.InputTensor()));
        Assert.All(diffs, d => Assert.True(d < 1e-4, $"max |diff| {d}"));  // the fixture's own tolerance (HF fp32 vs ours)
    }

    [Fact]
    public void F16ExportHoldsTheFp16RoundingAndKeepsVectorsF32()
    {
        var (original, tok) = Fixture("tiny_llama_gqa");
        using var _ = original;
        string path = _tmp.File("f16.gguf");
        GgufExport.Write(original.Model, tok, path, GgmlType.F16);
        using (var file = GgufFile.Open(path))
        {
            Assert.Equal("F16", file.Tensors.Single(t => t.Name == "blk.0.ffn_up.weight").DType);
            Assert.Equal("F32", file.Tensors.Single(t => t.Name == "blk.0.attn_norm.weight").DType);
        }
        // Widened up front, so every weight is a parameter to compare (as stored, F16 linears stay F16 and are frozen).
        using var back = ModelLoader.Load(path, new LoadOptions { DType = WeightDType.F32 });
        var b = back.Model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (n, p) in original.Model.named_parameters())
        {
            using var expected = p.dim() == 1 ? p.detach().clone() : p.detach().to(ScalarType.Float16).to(ScalarType.Float32);
            Assert.True(BitEqual(expected, b[n]), $"{n}");
        }
    }

    [Fact]
    public void PermutationIsLlamaCppsConverterIndexing()
    {
        // convert_hf_to_gguf.py permute: w.reshape(H, 2, d/2, in).swapaxes(1, 2): GGUF row h*d + 2j + i holds HF row h*d + i*d/2 + j.
        const int heads = 3, d = 8, cols = 5;
        using var hf = arange(heads * d * cols, dtype: ScalarType.Float32).reshape(heads * d, cols);
        using var gguf = GgufCheckpoint.Permute(hf, heads);
        for (int h = 0; h < heads; h++)
            for (int j = 0; j < d / 2; j++)
                for (int i = 0; i < 2; i++)
                    Assert.True(BitEqual(gguf[h * d + 2 * j + i], hf[h * d + i * d / 2 + j]));
        using var back = GgufCheckpoint.Unpermute(gguf, heads);
        Assert.True(BitEqual(back, hf));
    }

    [Fact]
    public void Q8AndBf16AreWidenedAsGgmlDoes()
    {
        // One Q8_0 row of 64 values (2 blocks) and a BF16 vector, written by hand; expected values computed here.
        var q = Enumerable.Range(0, 64).Select(i => (sbyte)(i * 37 % 255 - 127)).ToArray();
        Half[] scales = [(Half)0.0123f, (Half)(-3.5f)];
        var data = new List<byte>();
        for (int blk = 0; blk < 2; blk++)
        {
            data.AddRange(BitConverter.GetBytes(scales[blk]));
            data.AddRange(q.Skip(32 * blk).Take(32).Select(x => (byte)x));
        }
        while (data.Count % 32 != 0) data.Add(0);
        int bfOffset = data.Count;
        float[] bfValues = [1.5f, -2.25f, 3.0e-3f, 65504f];
        foreach (var v in bfValues) data.AddRange(BitConverter.GetBytes((ushort)(BitConverter.SingleToUInt32Bits(v) >> 16)));

        string path = _tmp.File("q8.gguf");
        using (var m = new MemoryStream())
        {
            var w = new BinaryWriter(m);
            w.Write(0x46554747u); w.Write(3u); w.Write(2UL); w.Write(0UL);
            void Info(string name, ulong[] dims, uint type, ulong offset)
            {
                w.Write((ulong)name.Length); w.Write(System.Text.Encoding.ASCII.GetBytes(name)); w.Write((uint)dims.Length);
                foreach (var x in dims) w.Write(x);
                w.Write(type); w.Write(offset);
            }
            Info("q", [64, 1], 8, 0);
            Info("bf", [4], 30, (ulong)bfOffset);
            while (m.Length % 32 != 0) w.Write((byte)0);
            w.Write(data.ToArray());
            File.WriteAllBytes(path, m.ToArray());
        }
        using var file = GgufFile.Open(path);
        using var qt = file.ReadFloat32("q");
        Assert.Equal(new long[] { 1, 64 }, qt.shape);
        var got = qt.data<float>().ToArray();
        for (int i = 0; i < 64; i++) Assert.Equal(q[i] * (float)scales[i / 32], got[i]);
        using var bt = file.ReadFloat32("bf");
        Assert.Equal(bfValues.Select(v => BitConverter.UInt32BitsToSingle(BitConverter.SingleToUInt32Bits(v) & 0xFFFF0000)), bt.data<float>().ToArray());
    }

    [Fact]
    public void LlamaCppsGpt2VocabularyEncodesItsOwnTestVectors()
    {
        // ggml-vocab-gpt-2.gguf was written by llama.cpp's converter; its .out by Hugging Face tokenizers.
        var tok = TokenizerLoader.Load(TestData.Path("llamacpp_vocab_fixtures/ggml-vocab-gpt-2.gguf"));
        Assert.Equal(50257, tok.VocabSize);
        foreach (var (text, ids) in TokenizerFixtures.Gpt2VocabCases)
            Assert.Equal(ids, tok.Encode(text));
    }

    [Fact]
    public void TokenizersSurviveTheGgufVocabulary()
    {
        // Llama 3 (tiktoken, written with merges derived from the ranks) against llama.cpp's llama-bpe vectors,
        // and the llama2.c vocabulary as a SentencePiece model against run.c's encodings.
        string llama3 = _tmp.File("llama3-vocab.gguf");
        GgufWriter.Write(llama3, [new("general.architecture", GgufValue.Of("llama")), .. GgufVocabulary.FromTokenizer(TokenizerFixtures.Llama3Tiktoken).ToMetadata()], []);
        var tok = TokenizerLoader.Load(llama3);
        foreach (var (text, ids) in TokenizerFixtures.Llama3VocabCases)
            Assert.Equal(ids, tok.Encode(text));

        string stories = _tmp.File("stories.gguf");
        using (var m = ModelLoader.Load(TestData.Path("llama2c_stories260K/stories260K.bin"))) GgufExport.Write(m.Model, TokenizerFixtures.Tok512, stories);
        var sp = Assert.IsType<SentencePieceTokenizer>(TokenizerLoader.ForModel(stories, null, "unused"));
        foreach (var (text, bos, ids) in TokenizerFixtures.EncodeCases("llama2c_stories260K/tok512_encode_fixtures.json"))
            Assert.Equal(ids, sp.Encode(text, bos));
    }
}
