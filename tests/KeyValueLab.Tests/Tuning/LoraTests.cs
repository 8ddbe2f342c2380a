using System.Text.Json.Nodes;
using KeyValueLab.Checkpoints;
using KeyValueLab.Models;
using KeyValueLab.Tuning;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace KeyValueLab.Tests.Tuning;

public class LoraTests(ITestOutputHelper output)
{
    private static readonly long[] Ids = [5, 17, 99, 3, 42, 42, 7, 11];

    private static LoadedModel Load(string fixture) => ModelLoader.Load(TestData.Path("fixtures/" + fixture));

    /// <summary>Gives B (and A) non-zero values so the adapter changes the output.</summary>
    private static void Randomise(LoraModel lora, int seed)
    {
        var g = new Generator((ulong)seed);
        using var noGrad = no_grad();
        foreach (var l in lora.Layers) { l.B.normal_(0, 0.05, g); l.A.normal_(0, 0.05, g); }
    }

    [Theory]
    [InlineData("tiny_llama_gqa", "q,v,keys:up")]
    [InlineData("tiny_gpt2", "c_attn,values")]
    [InlineData("tiny_gptj", "q,v,keys")]
    [InlineData("tiny_qwen2", "q,v,keys:up")]
    [InlineData("tiny_mistral", "q,v,keys:gate")]
    [InlineData("tiny_gemma", "q,o,values")]
    [InlineData("tiny_gemma2", "q,v,keys")]
    [InlineData("tiny_phi3", "qkv_proj,o,keys:up")]
    [InlineData("tiny_gpt_neox", "query_key_value,o,keys,values")]
    public void MergedLogitsEqualUnmergedAndUnmergeRestores(string fixture, string targets)
    {
        using var loaded = Load(fixture);
        var model = loaded.Model;
        using var ids = tensor(Ids, [1, Ids.Length]);
        using var noGrad = no_grad();
        using var baseLogits = model.Forward(ids);
        var config = new LoraConfig { TargetModules = LoraConfig.ResolveTargets(targets, model.Config.ModelType) };
        using var lora = LoraModel.Attach(model, config, seed: 1);
        using (var fresh = model.Forward(ids)) Assert.True(fresh.equal(baseLogits).all().item<bool>());  // B = 0 → no change
        Randomise(lora, 2);
        using var unmerged = model.Forward(ids);
        Assert.True((unmerged - baseLogits).abs().max().item<float>() > 1e-4);
        lora.Merge();
        using var merged = model.Forward(ids);
        double diff = (merged - unmerged).abs().max().item<float>();
        output.WriteLine($"{fixture}: merged vs unmerged max |Δ| = {diff:G3}");
        Assert.True(diff < 1e-4, $"{diff}");
        lora.Unmerge();
        using var back = model.Forward(ids);
        Assert.True((back - unmerged).abs().max().item<float>() < 1e-4);
    }

    [Fact]
    public void InitialisationFollowsPeftAndCountsMatchAcrossFfnVariants()
    {
        using var loaded = ModelLoader.Create(Nf4Tests.SmallLlamaConfig, seed: 1);
        var model = loaded.Model;
        var counts = new Dictionary<string, long>();
        foreach (string targets in new[] { "q,v", "q,v,keys:up", "q,v,keys:gate", "q,v,values" })
        {
            using var lora = LoraModel.Attach(model, new LoraConfig { TargetModules = LoraConfig.ResolveTargets(targets, "llama") }, seed: 7);
            counts[targets] = lora.TrainableCount;
            output.WriteLine($"{targets}: {lora.TrainableSummary()}");
            foreach (var l in lora.Layers)
            {
                Assert.True(l.B.count_nonzero().item<long>() == 0);
                double bound = 1 / Math.Sqrt(l.A.shape[1]);
                Assert.True(l.A.abs().max().item<float>() <= bound);
                Assert.True(l.A.std().item<float>() > bound / 3);  // uniform(−b, b) has std b/√3
            }
        }
        // q,v: 2 layers × (r·64 + 64·r + r·64 + 32·r) with r = 8; each FFN variant adds r·(64 + 128) per layer.
        Assert.Equal(2 * 8 * (64 + 64 + 64 + 32), counts["q,v"]);
        Assert.Equal(counts["q,v,keys:up"], counts["q,v,keys:gate"]);
        Assert.Equal(counts["q,v,keys:up"], counts["q,v,values"]);
        Assert.Equal(counts["q,v"] + 2 * 8 * (64 + 128), counts["q,v,values"]);
    }

    [Fact]
    public void TargetRulesFollowPeft()
    {
        var suffix = new LoraConfig { TargetModules = ["mlp.c_proj", "q_proj"] };
        Assert.True(suffix.Matches("transformer.h.0.mlp.c_proj"));
        Assert.False(suffix.Matches("transformer.h.0.attn.c_proj"));
        Assert.True(suffix.Matches("q_proj"));
        Assert.False(suffix.Matches("model.layers.0.self_attn.xq_proj"));
        var regex = new LoraConfig { TargetRegex = @".*\.layers\.[01]\.mlp\.(up|down)_proj" };
        Assert.True(regex.Matches("model.layers.1.mlp.down_proj"));
        Assert.False(regex.Matches("model.layers.2.mlp.down_proj"));
        Assert.False(regex.Matches("model.layers.1.mlp.down_proj.x"));
        Assert.Equal(["mlp.c_fc"], LoraConfig.ResolveTargets("keys", "gpt2"));
        Assert.Equal(["mlp.fc_in", "mlp.fc_out"], LoraConfig.ResolveTargets("keys,values", "gptj"));
        Assert.Equal(["q_proj", "v_proj", "gate_proj"], LoraConfig.ResolveTargets("q, v ,keys:gate", "llama"));
        Assert.Throws<ArgumentException>(() => LoraConfig.ResolveTargets("keys:up", "gpt2"));
        using var loaded = Load("tiny_gpt2");
        var e = Assert.Throws<ArgumentException>(() => LoraModel.Attach(loaded.Model, new LoraConfig { TargetModules = ["q_proj"] }));
        Assert.Contains("c_attn", e.Message);
    }

    [Theory]
    [InlineData("tiny_llama_gqa", "q,v,keys:gate")]
    [InlineData("tiny_gpt2", "c_attn,keys")]
    public void SaveLoadIsBitExactWithPeftNamesAndConfig(string fixture, string targets)
    {
        using var dir = new TempDir();
        using var loaded = Load(fixture);
        var config = new LoraConfig { R = 4, Alpha = 8, Dropout = 0.05, UseRsLora = true, BaseModel = fixture, TargetModules = LoraConfig.ResolveTargets(targets, loaded.Config.ModelType) };
        using (var lora = LoraModel.Attach(loaded.Model, config, seed: 3))
        {
            Randomise(lora, 4);
            lora.Save(dir.Path);
            var json = JsonNode.Parse(File.ReadAllText(dir.File("adapter_config.json")))!.AsObject();
            Assert.Equal("LORA", (string?)json["peft_type"]);
            Assert.Equal(4, (int)json["r"]!);
            Assert.Equal(8.0, (double)json["lora_alpha"]!);
            Assert.Equal(0.05, (double)json["lora_dropout"]!);
            Assert.Equal("none", (string?)json["bias"]);
            Assert.Equal("CAUSAL_LM", (string?)json["task_type"]);
            Assert.True((bool)json["use_rslora"]!);
            Assert.Equal(fixture, (string?)json["base_model_name_or_path"]);
            Assert.Equal(fixture == "tiny_gpt2", (bool)json["fan_in_fan_out"]!);
            Assert.Equal(config.TargetModules.Order(StringComparer.Ordinal), json["target_modules"]!.AsArray().Select(n => (string)n!));

            using var file = SafetensorsFile.Open(dir.File("adapter_model.safetensors"));
            var names = file.Tensors.Select(t => t.Name).ToHashSet();
            if (fixture == "tiny_llama_gqa")
            {
                Assert.Contains("base_model.model.model.layers.0.mlp.gate_proj.lora_A.weight", names);
                Assert.Contains("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight", names);
                Assert.Equal(new long[] { 4, 32 }, file.Info("base_model.model.model.layers.0.mlp.gate_proj.lora_A.weight").Shape);
                Assert.Equal(new long[] { 48, 4 }, file.Info("base_model.model.model.layers.0.mlp.gate_proj.lora_B.weight").Shape);
            }
            else
            {
                // Conv1D: PEFT's lora_A is [r, in] and lora_B [out, r], as for nn.Linear.
                Assert.Contains("base_model.model.transformer.h.0.mlp.c_fc.lora_A.weight", names);
                Assert.Equal(new long[] { 4, 16 }, file.Info("base_model.model.transformer.h.0.mlp.c_fc.lora_A.weight").Shape);
                Assert.Equal(new long[] { 48, 4 }, file.Info("base_model.model.transformer.h.0.attn.c_attn.lora_B.weight").Shape);
            }
            Assert.Equal(lora.Layers.Count * 2, names.Count);

            using var reloadedModel = Load(fixture);
            using var reloaded = LoraModel.Load(reloadedModel.Model, dir.Path);
            Assert.Equal(lora.Config.Scale, reloaded.Config.Scale);
            foreach (var (a, b) in lora.Layers.Zip(reloaded.Layers))
            {
                Assert.Equal(a.Name, b.Name);
                Assert.True(a.A.equal(b.A).all().item<bool>() && a.B.equal(b.B).all().item<bool>());  // bit-exact
            }
            using var ids = tensor(Ids, [1, Ids.Length]);
            using var noGrad = no_grad();
            Assert.True(loaded.Model.Forward(ids).equal(reloadedModel.Model.Forward(ids)).all().item<bool>());
        }
    }

    [Fact]
    public void AdapterFilesThatDoNotFitGiveInputErrors()
    {
        using var dir = new TempDir();
        using var loaded = Load("tiny_llama_gqa");
        using (var lora = LoraModel.Attach(loaded.Model, new LoraConfig { TargetModules = ["q_proj"] })) lora.Save(dir.Path);
        using var other = Load("tiny_llama_gqa");
        File.WriteAllText(dir.File("adapter_config.json"), File.ReadAllText(dir.File("adapter_config.json")).Replace("\"q_proj\"", "\"k_proj\""));
        var e = Assert.Throws<InputException>(() => LoraModel.Load(other.Model, dir.Path));
        Assert.Contains("missing", e.Message);
        File.WriteAllText(dir.File("adapter_config.json"), "{\"peft_type\":\"LORA\",\"r\":0,\"target_modules\":[\"q_proj\"]}");
        Assert.Throws<InputException>(() => LoraModel.Load(other.Model, dir.Path));
        File.WriteAllText(dir.File("adapter_config.json"), "{\"peft_type\":\"PREFIX_TUNING\"}");
        Assert.Contains("PREFIX_TUNING", Assert.Throws<InputException>(() => LoraModel.Load(other.Model, dir.Path)).Message);
    }

    [Fact]
    public void LoraOnFourBitBaseTrainsAndMergesApproximately()
    {
        using var loaded = ModelLoader.Create(Nf4Tests.SmallLlamaConfig, seed: 2);
        var model = loaded.Model;
        using var nf4 = Nf4Base.Quantize(model);
        using var lora = LoraModel.Attach(model, new LoraConfig { TargetModules = ["q_proj", "v_proj", "up_proj"] }, seed: 1);
        lora.Training = true;
        using var ids = tensor(Ids, [1, Ids.Length]);
        var logits = model.Forward(ids);
        var loss = nn.functional.cross_entropy(logits[0, ..^1], ids[0, 1..]);
        loss.backward();
        Assert.All(lora.Layers, l => Assert.NotNull(l.B.grad));
        Assert.Contains(lora.Layers, l => l.B.grad!.abs().sum().item<float>() > 0);
        output.WriteLine(lora.TrainableSummary());
        Assert.Contains("trainable params: ", lora.TrainableSummary());

        // Gradients through the 4-bit base (re-dequantised in backward) equal those of an fp32 model holding the dequantised weights.
        using var twin = ModelLoader.Create(Nf4Tests.SmallLlamaConfig, seed: 2);
        var quantised = model.named_modules().Where(m => m.module is TorchSharp.Modules.Linear).ToDictionary(m => m.name, m => (TorchSharp.Modules.Linear)m.module);
        using (no_grad())
            foreach (var (name, module) in twin.Model.named_modules())
                if (module is TorchSharp.Modules.Linear lin && Nf4Base.Of(quantised[name]) is Nf4Tensor q)
                    using (var w = q.Dequantize()) lin.weight!.copy_(w);
        using var twinLora = LoraModel.Attach(twin.Model, lora.Config, seed: 1);
        using (no_grad()) foreach (var (a, b) in lora.Layers.Zip(twinLora.Layers)) { b.A.copy_(a.A); b.B.copy_(a.B); }
        lora.Training = twinLora.Training = false;
        foreach (var p in lora.Parameters().Concat(twinLora.Parameters())) p.grad?.zero_();
        var l1 = nn.functional.cross_entropy(model.Forward(ids)[0, ..^1], ids[0, 1..]);
        var l2 = nn.functional.cross_entropy(twin.Model.Forward(ids)[0, ..^1], ids[0, 1..]);
        Assert.Equal(l2.item<float>(), l1.item<float>(), Fp32.Tolerance(l2.item<float>()));
        l1.backward();
        l2.backward();
        double worst = lora.Parameters().Zip(twinLora.Parameters()).Max(p => (p.First.grad! - p.Second.grad!).abs().max().item<float>());
        double tolerance = Fp32.Tolerance(twinLora.Parameters().Max(p => p.grad!.abs().max().item<float>()));
        output.WriteLine($"LoRA grads, NF4 base vs fp32 twin: max |Δ| = {worst:G3} (bound {tolerance:G3})");
        Assert.True(worst <= tolerance, $"{worst} > {tolerance}");
        Assert.True(lora.Parameters().Max(p => p.grad!.abs().max().item<float>()) > 0);
    }
}
