using System.Text.Json.Nodes;
using KeyValueLab.Models;
using KeyValueLab.Tuning;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace KeyValueLab.Tests.Tuning;

/// <summary>
/// Interoperability with the real Python libraries: logits of transformers' <c>LlamaForCausalLM</c> and of PEFT on
/// models and adapters made here, adapters made by PEFT loaded here, and bitsandbytes' NF4 bytes. The references
/// were computed once on a GPU machine (Fixtures/reference/README.md); the comparisons run on every test run.
/// </summary>
public class PythonReferenceTests(ITestOutputHelper output)
{
    private const double LogitTolerance = 1e-4;

    private static Tensor Ids()
    {
        long[][] rows = ReferenceFixtures.Ids();
        return tensor(rows.SelectMany(r => r).ToArray(), [rows.Length, rows[0].Length]);
    }

    private static LoadedModel Load(string folder) => ModelLoader.Load(ReferenceFixtures.Path("ours/" + folder));

    private static RawSafetensors Python(string file) => new(ReferenceFixtures.Path("python/" + file));

    private double MaxDiff(Tensor ours, Tensor reference, string what)
    {
        Assert.Equal(reference.shape, ours.shape);
        double diff = (ours - reference).abs().max().item<float>();
        output.WriteLine($"{what}: max |Δlogit| = {diff:G3} (max |logit| {reference.abs().max().item<float>():F3})");
        return diff;
    }

    [Theory]
    [InlineData("tiny_llama", "base")]         // untied, grouped-query attention (4 query heads, 2 KV heads)
    [InlineData("tiny_llama_tied", "tied_base")] // tied embeddings, multi-query attention
    public void TransformersLogitsOfOurTinyLlamasMatchOurs(string folder, string key)
    {
        using var loaded = Load(folder);
        using var ids = Ids();
        using var noGrad = no_grad();
        using var ours = loaded.Model.Forward(ids);
        using var reference = Python("hf_logits.safetensors").Tensor(key);
        Assert.True(MaxDiff(ours, reference, $"transformers {folder}") <= LogitTolerance);
        // transformers found every tensor of our checkpoint where it expected it.
        var info = ReferenceFixtures.Json("python/summary.json")["hf"]![key]!["loading_info"]!;
        Assert.Empty(info["missing_keys"]!.AsArray());
        Assert.Empty(info["unexpected_keys"]!.AsArray());
    }

    [Fact]
    public void PeftLogitsWithOurAdapterMatchOursUnmergedAndMerged()
    {
        using var loaded = Load("tiny_llama");
        using var ids = Ids();
        var peft = Python("peft_logits.safetensors");
        using var lora = LoraModel.Load(loaded.Model, ReferenceFixtures.Path("ours/adapter_ours"));
        using var noGrad = no_grad();
        using (var ours = loaded.Model.Forward(ids))
        using (var reference = peft.Tensor("peft_ours"))
            Assert.True(MaxDiff(ours, reference, "PEFT PeftModel, our adapter") <= LogitTolerance);
        // The adapter changes the logits well beyond the tolerance, so the comparison is not vacuous.
        using (var baseLogits = Python("hf_logits.safetensors").Tensor("base"))
        using (var adapted = peft.Tensor("peft_ours"))
            Assert.True((adapted - baseLogits).abs().max().item<float>() > 100 * LogitTolerance);
        lora.Merge();
        using var merged = loaded.Model.Forward(ids);
        using var mergedReference = peft.Tensor("peft_ours_merged");
        Assert.True(MaxDiff(merged, mergedReference, "PEFT merge_and_unload, our adapter") <= LogitTolerance);
        // PEFT adapted exactly the modules we saved.
        var adapted2 = ReferenceFixtures.Json("python/summary.json")["peft"]!["peft_ours"]!["adapted_modules"]!.AsArray()
            .Select(n => ((string)n!)["base_model.model.".Length..]).Order(StringComparer.Ordinal);
        Assert.Equal(lora.Layers.Select(l => l.Name).Order(StringComparer.Ordinal), adapted2);
    }

    [Theory]
    [InlineData("peft_made")]
    [InlineData("peft_made_rslora")]
    public void AdaptersMadeByPeftLoadAndGivePeftsLogits(string name)
    {
        using var loaded = Load("tiny_llama");
        using var ids = Ids();
        using var lora = LoraModel.Load(loaded.Model, ReferenceFixtures.Path($"python/adapter_{name}"));
        // adapter_config.json as PEFT 0.21 writes it (with many fields we do not use) is read.
        Assert.Equal(4, lora.Config.R);
        Assert.Equal(8.0, lora.Config.Alpha);
        Assert.Equal(0.0, lora.Config.Dropout);
        if (name == "peft_made")
        {
            Assert.False(lora.Config.UseRsLora);
            Assert.Equal(2.0, lora.Config.Scale);
            Assert.Equal(["down_proj", "q_proj", "up_proj", "v_proj"], lora.Config.TargetModules.Order(StringComparer.Ordinal));
            Assert.Equal(8, lora.Layers.Count);
        }
        else
        {
            Assert.True(lora.Config.UseRsLora);
            Assert.Equal(8 / Math.Sqrt(4), lora.Config.Scale);
            Assert.Equal(@".*\.layers\.1\.mlp\.(up|down)_proj|.*\.self_attn\.(q|k)_proj", lora.Config.TargetRegex);
            Assert.Equal(["model.layers.0.self_attn.k_proj", "model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj",
                          "model.layers.1.mlp.up_proj", "model.layers.1.self_attn.k_proj", "model.layers.1.self_attn.q_proj"],
                lora.Layers.Select(l => l.Name).Order(StringComparer.Ordinal));
        }
        // PEFT's get_nb_trainable_parameters() on the same model.
        var counts = ReferenceFixtures.Json("python/summary.json")["peft"]![name]!;
        Assert.Equal((long)counts["trainable"]!, lora.TrainableCount);
        Assert.Equal((long)counts["all"]!, lora.AllCount);

        using var noGrad = no_grad();
        using var ours = loaded.Model.Forward(ids);
        using var reference = Python("peft_logits.safetensors").Tensor(name);
        Assert.True(MaxDiff(ours, reference, $"PEFT-made adapter {name}") <= LogitTolerance);
    }

    [Theory]
    [InlineData("lora_bias", "true")]
    [InlineData("alora_invocation_tokens", "[5, 6]")]
    [InlineData("layers_to_transform", "[0]")]
    [InlineData("exclude_modules", "[\"model.layers.0.self_attn.q_proj\"]")]
    [InlineData("modules_to_save", "[\"lm_head\"]")]
    [InlineData("use_qalora", "true")]
    public void PeftSettingsThatChangeTheAdapterAreRefusedByName(string key, string value)
    {
        // PEFT 0.21's own adapter_config.json loads (previous tests); the same file with one such setting is refused.
        var json = ReferenceFixtures.Json("python/adapter_peft_made/adapter_config.json").AsObject();
        json[key] = JsonNode.Parse(value);
        var e = Assert.Throws<InputException>(() => LoraConfig.FromPeftJson(json.ToJsonString(), "adapter_config.json"));
        Assert.Contains(key, e.Message);
    }

    [Fact]
    public void OurSavedLogitsAreStillWhatTheCodeComputes()
    {
        // The inputs sent to Python carried our logits; the code must still produce them (else the references would
        // silently describe another model).
        var ours = new RawSafetensors(ReferenceFixtures.Path("ours/ours_logits.safetensors"));
        using var ids = Ids();
        using var loaded = Load("tiny_llama");
        using var noGrad = no_grad();
        using (var logits = loaded.Model.Forward(ids))
        using (var stored = ours.Tensor("base"))
            Assert.True(MaxDiff(logits, stored, "ours now vs ours stored") <= Fp32.Tolerance(stored));
        using var lora = LoraModel.Load(loaded.Model, ReferenceFixtures.Path("ours/adapter_ours"));
        using var adapted = loaded.Model.Forward(ids);
        using var storedAdapted = ours.Tensor("adapter");
        Assert.True(MaxDiff(adapted, storedAdapted, "adapted now vs stored") <= Fp32.Tolerance(storedAdapted));
    }

    // ----------------------------------------------------------------------------------------------------- NF4

    private static readonly Lazy<(RawSafetensors Tensors, JsonObject Meta)> Bnb = new(() =>
        (Python("nf4_bnb.safetensors"), ReferenceFixtures.Json("python/nf4_bnb.json").AsObject()));

    public static TheoryData<string> Nf4Cases => new()
    {
        "randn_128x64", "randn_64x200", "odd_37x51", "zero_blocks_8x64", "constant_4x64", "wide_range_16x256",
        "nf4_boundaries_1x64", "synthetic_512x1024",
    };

    /// <summary>tools/reference/make_references.py's synthetic_tensor(): a hash of the flat index, exact in float32.</summary>
    internal static float[] SyntheticTensor(int rows = 512, int cols = 1024)
    {
        var x = new float[rows * cols];
        for (long i = 0; i < x.Length; i++)
        {
            ulong h = unchecked((ulong)i * 0x9E3779B97F4A7C15UL + 0x632BE59BD9B4E019UL);
            h ^= h >> 29;
            h = unchecked(h * 0xBF58476D1CE4E5B9UL);
            h ^= h >> 32;
            long v = (long)(h >> 40) - (1L << 23);
            x[i] = (float)v / (1 << 23) * MathF.ScaleB(1f, (int)(i / cols) % 7 - 3);
        }
        return x;
    }

    private static Tensor Input(string name, JsonNode meta)
    {
        long[] shape = [.. meta["shape"]!.AsArray().Select(v => (long)v!)];
        return name.StartsWith("synthetic", StringComparison.Ordinal)
            ? tensor(SyntheticTensor((int)shape[0], (int)shape[1]), shape)
            : Bnb.Value.Tensors.Tensor($"{name}.input");
    }

    [Theory]
    [MemberData(nameof(Nf4Cases))]
    public void Nf4QuantisationIsByteIdenticalToBitsandbytes(string name)
    {
        var (t, meta) = Bnb.Value;
        var caseMeta = meta["cases"]![name]!;
        using var x = Input(name, caseMeta);
        if (name.StartsWith("synthetic", StringComparison.Ordinal))
            Assert.Equal((double)caseMeta["input_sum"]!, x.to(ScalarType.Float64).sum().item<double>(), 1e-6);
        using var q = Nf4Tensor.Quantize(x);

        byte[] packed = q.Packed.data<byte>().ToArray(), bnbPacked = t.U8($"{name}.packed");
        int differing = packed.Zip(bnbPacked).Count(p => p.First != p.Second);
        Assert.True(differing == 0, $"{name}: {differing} of {packed.Length} packed bytes differ from bitsandbytes'");
        Assert.Equal(bnbPacked, packed);
        Assert.Equal(t.U8($"{name}.qabsmax"), q.QuantizedAbsmax.data<byte>().ToArray());

        // The offset is a float32 mean: bitsandbytes takes it on the GPU, we on the CPU, so the summation order differs
        // (seen: up to 2 ulps). The 8-bit indices came out identical all the same.
        float bnbOffset = t.F32($"{name}.offset")[0];
        Assert.True(Math.Abs(q.Offset - bnbOffset) <= 1e-6 * Math.Abs(bnbOffset), $"offset {q.Offset:R} vs {bnbOffset:R}");
        float[] nested = q.NestedAbsmax.data<float>().ToArray(), bnbNested = t.F32($"{name}.nested_absmax");
        Assert.Equal(bnbNested.Length, nested.Length);
        for (int i = 0; i < nested.Length; i++) Assert.True(Math.Abs(nested[i] - bnbNested[i]) <= 1e-6 * Math.Abs(bnbNested[i]) + 1e-30);

        // Our dequantisation of our quantisation against bitsandbytes' dequantize_4bit of its own: a block scale is
        // map[q]·nested + offset, so besides float rounding (1e-6 relative) the two differ by the offset's ulps
        // (and the nested absmax, which inherits them), in absolute terms — relative to a small block that is more.
        using var ours = q.Dequantize();
        float[] values = ours.data<float>().ToArray();
        float[] reference = t.Contains($"{name}.dequant") ? t.F32($"{name}.dequant") : t.F32($"{name}.dequant_head");
        double scaleSlack = Math.Abs(q.Offset - bnbOffset) + nested.Zip(bnbNested).Max(p => Math.Abs(p.First - p.Second));
        double worst = 0;
        for (int i = 0; i < reference.Length; i++)
        {
            double err = Math.Abs(values[i] - reference[i]);
            worst = Math.Max(worst, err / Math.Max(Math.Abs(reference[i]), 1e-30));
            Assert.True(err <= 1e-6 * Math.Abs(reference[i]) + scaleSlack, $"{name}[{i}]: {values[i]:R} vs bitsandbytes {reference[i]:R}");
        }
        if (caseMeta["dequant_sum"] is JsonNode sum)
            Assert.Equal((double)sum, ours.to(ScalarType.Float64).sum().item<double>(), Math.Abs((double)sum) * 1e-6 + 1e-3);
        output.WriteLine($"{name}: {packed.Length} bytes identical, offset Δ {q.Offset - bnbOffset:G3}, max relative dequant Δ {worst:G3}");
    }

    [Theory]
    [MemberData(nameof(Nf4Cases))]
    public void DequantisingBitsandbytesStateGivesItsDequantize4bit(string name)
    {
        var (t, meta) = Bnb.Value;
        long[] shape = [.. meta["cases"]![name]!["shape"]!.AsArray().Select(v => (long)v!)];
        using var packed = tensor(t.U8($"{name}.packed"));
        using var qAbsmax = tensor(t.U8($"{name}.qabsmax"));
        using var nested = tensor(t.F32($"{name}.nested_absmax"));
        using var q = Nf4Tensor.FromState(shape, packed, qAbsmax, nested, t.F32($"{name}.offset")[0]);
        using var ours = q.Dequantize();
        float[] values = ours.data<float>().ToArray();
        float[] reference = t.Contains($"{name}.dequant") ? t.F32($"{name}.dequant") : t.F32($"{name}.dequant_head");
        for (int i = 0; i < reference.Length; i++)
            Assert.True(Math.Abs(values[i] - reference[i]) <= 1e-6 * Math.Abs(reference[i]), $"{name}[{i}]: {values[i]:R} vs {reference[i]:R}");
    }

    [Fact]
    public void CodeTablesAreBitsandbytes()
    {
        var (t, _) = Bnb.Value;
        Assert.Equal(t.F32("nf4_code"), Nf4Codes.Nf4);
        Assert.Equal(t.F32("dynamic_code"), Nf4Codes.DynamicSigned);
    }

    [Fact]
    public void ValuesOnTheEdgeOfTheGpusApproximateReciprocalMatchGivenItsReciprocals()
    {
        // Values placed within a few ulps of NF4 thresholds: bitsandbytes multiplies by 1/absmax computed with the GPU's
        // approximate reciprocal (nvcc --use_fast_math), which differs from the IEEE one in the last bit for some absmax values.
        // Given the kernel's reciprocals (recorded with the same fast-math division), our quantiser reproduces every nibble;
        // with IEEE reciprocals the only differences are one-code steps in blocks whose reciprocal differs.
        const string name = "adversarial_16x64";
        var (t, _) = Bnb.Value;
        using var x = t.Tensor($"{name}.input");
        byte[] bnbPacked = t.U8($"{name}.packed");
        float[] fast = t.F32($"{name}.rcp_fast");
        using (var reciprocals = tensor(fast))
        using (var exact = Nf4Tensor.Quantize(x, reciprocals))
            Assert.Equal(bnbPacked, exact.Packed.data<byte>().ToArray());

        using var q = Nf4Tensor.Quantize(x);
        byte[] packed = q.Packed.data<byte>().ToArray();
        float[] absmax = t.F32($"{name}.absmax_fp32");
        int differing = 0;
        for (int i = 0; i < 2 * packed.Length; i++)
        {
            int ours = i % 2 == 0 ? packed[i / 2] >> 4 : packed[i / 2] & 15, theirs = i % 2 == 0 ? bnbPacked[i / 2] >> 4 : bnbPacked[i / 2] & 15;
            if (ours == theirs) continue;
            differing++;
            Assert.Equal(1, Math.Abs(ours - theirs));
            Assert.NotEqual(1f / absmax[i / 64], fast[i / 64]);
        }
        output.WriteLine($"{name}: {differing} of {2 * packed.Length} nibbles differ with IEEE reciprocals, 0 with the GPU's");
    }

    [Fact]
    public void FourBitModelMatchesTransformersLoadIn4bitWithAndWithoutOurAdapter()
    {
        using var loaded = Load("tiny_llama");
        var model = loaded.Model;
        using var ids = Ids();
        var qlora = Python("qlora_logits.safetensors");
        // The weight bitsandbytes quantised inside transformers: same bytes as ours.
        var down0 = Python("qlora_down0.safetensors");
        var layer = (TorchSharp.Modules.Linear)model.named_modules().Single(m => m.name == "model.layers.0.mlp.down_proj").module;
        using (var q = Nf4Tensor.Quantize(layer.weight!))
        {
            Assert.Equal(down0.U8("down0.packed"), q.Packed.data<byte>().ToArray());
            Assert.Equal(down0.U8("down0.qabsmax"), q.QuantizedAbsmax.data<byte>().ToArray());
        }
        using var nf4 = Nf4Base.Quantize(model);
        using (no_grad())
        using (var ours = model.Forward(ids))
        using (var reference = qlora.Tensor("qlora_base"))
            Assert.True(MaxDiff(ours, reference, "transformers load_in_4bit (NF4, double quant, fp32 compute)") <= LogitTolerance);
        using var lora = LoraModel.Load(model, ReferenceFixtures.Path("ours/adapter_ours"));
        using var noGrad = no_grad();
        using var adapted = model.Forward(ids);
        using var adaptedReference = qlora.Tensor("qlora_adapter");
        Assert.True(MaxDiff(adapted, adaptedReference, "PEFT on the 4-bit model, our adapter") <= LogitTolerance);
    }
}
