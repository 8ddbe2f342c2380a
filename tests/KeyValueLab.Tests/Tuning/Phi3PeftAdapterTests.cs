using KeyValueLab.Checkpoints;
using KeyValueLab.Models;
using KeyValueLab.Tests.Models;
using KeyValueLab.Tuning;
using static TorchSharp.torch;

namespace KeyValueLab.Tests.Tuning;

/// <summary>
/// PEFT's LoRA on Phi-3's fused <c>gate_up_proj</c>: one A <c>[r, hidden]</c> and one B <c>[2·inner, r]</c> whose row
/// blocks are the gate and the up half. Here the halves are linears of their own, adapted with a shared A and their
/// own B blocks; the adapter file is PEFT's layout. The oracle is a PEFT-layout file written by hand and the fused
/// weight changed by hand (W + α/r·B·A), independent of our saver and of our merge.
/// </summary>
public class Phi3PeftAdapterTests : IDisposable
{
    private readonly TempDir _tmp = new();

    public void Dispose() => _tmp.Dispose();

    private static readonly long[] Ids = [5, 17, 99, 3, 42, 42, 7, 11];
    private static LoadedModel Load() => ModelLoader.Load(TestData.Path("fixtures/tiny_phi3"));
    private static readonly LoraConfig Config = new() { R = 4, Alpha = 8, TargetModules = ["gate_up_proj"] };

    [Fact]
    public void TargetingTheFusedModuleSharesAAndCountsAsPeft()
    {
        using var loaded = Load();
        using var lora = LoraModel.Attach(loaded.Model, Config, seed: 1);
        var c = loaded.Config;
        Assert.Equal(2 * c.NumLayers, lora.Layers.Count);
        foreach (var pair in lora.Layers.Chunk(2)) Assert.Same(pair[0].A, pair[1].A);
        // PEFT: r·(in + out) per adapted gate_up_proj.
        Assert.Equal(c.NumLayers * Config.R * (c.HiddenSize + 2L * c.IntermediateSize), lora.TrainableCount);
    }

    [Fact]
    public void APeftLayoutAdapterLoadsAndActsAsPeftsLoraOnTheFusedWeight()
    {
        var c = Architectures.ParseConfig(File.ReadAllText(TestData.Path("fixtures/tiny_phi3/config.json")), "config.json");
        var g = new TorchSharp.torch.Generator(5);
        var a = Enumerable.Range(0, c.NumLayers).Select(_ => randn([Config.R, c.HiddenSize], generator: g) * 0.1).ToArray();
        var b = Enumerable.Range(0, c.NumLayers).Select(_ => randn([2L * c.IntermediateSize, Config.R], generator: g) * 0.1).ToArray();
        string folder = Directory.CreateDirectory(_tmp.File("peft")).FullName;
        File.WriteAllText(Path.Combine(folder, LoraModel.ConfigFile), Config.ToPeftJson().ToJsonString());
        var tensors = new List<TensorToSave>();
        for (int l = 0; l < c.NumLayers; l++)
        {
            tensors.Add(new($"base_model.model.model.layers.{l}.mlp.gate_up_proj.lora_A.weight", a[l]));
            tensors.Add(new($"base_model.model.model.layers.{l}.mlp.gate_up_proj.lora_B.weight", b[l]));
        }
        SafetensorsWriter.Write(Path.Combine(folder, LoraModel.WeightsFile), tensors);

        using var expectedModel = Load();
        using (no_grad())
        {
            var weights = expectedModel.Model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
            for (int l = 0; l < c.NumLayers; l++) weights[$"model.layers.{l}.mlp.gate_up_proj.weight"].add_(b[l].matmul(a[l]) * (Config.Alpha / Config.R));
        }
        using var adapted = Load();
        using var lora = LoraModel.Load(adapted.Model, folder);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var ids = tensor(Ids, [1, Ids.Length]);
        var expected = expectedModel.Model.Forward(ids);
        TensorAssert.CloseFp32(expected, adapted.Model.Forward(ids), "PEFT adapter on gate_up_proj");
        using var baseModel = Load();
        Assert.True((baseModel.Model.Forward(ids) - expected).abs().max().item<float>() > 1e-3, "the adapter should change the logits");

        // Saved again: PEFT's keys and shapes, bit-identical A and B.
        string again = _tmp.File("again");
        lora.Save(again);
        using var file = SafetensorsFile.Open(Path.Combine(again, LoraModel.WeightsFile));
        Assert.Equal(tensors.Select(t => t.Name).Order(StringComparer.Ordinal), file.Tensors.Select(t => t.Name).Order(StringComparer.Ordinal));
        foreach (var t in tensors)
        {
            using var back = file.ReadFloat32(t.Name);
            Assert.True(Gguf.GgufRoundTripTests.BitEqual(t.Tensor!, back), t.Name);
        }
    }
}
