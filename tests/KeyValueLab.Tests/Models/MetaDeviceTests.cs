using KeyValueLab.Editing;
using KeyValueLab.Models;
using KeyValueLab.Tests.Inference;
using KeyValueLab.Tuning;
using static TorchSharp.torch;

namespace KeyValueLab.Tests.Models;

/// <summary>
/// On TorchSharp's <c>meta</c> device (shapes, no storage) an op whose inputs are not all on <c>meta</c> fails, so a model
/// loaded there and run there proves that every tensor the code creates on the way lands on the model's device.
/// </summary>
/// <remarks>
/// libtorch 2.10's CPU build lacks meta kernels for a few ops; <see cref="MetaDevice"/> routes only <c>meta</c> around them
/// (docs/performance.md, "Devices."). An op without a meta kernel either throws or, for some (<c>var</c>), aborts the
/// whole test process: a regression shows up as a failed or aborted run.
/// </remarks>
public class MetaDeviceTests
{
    public static TheoryData<string, bool> Cases => new()
    {
        { "tiny_gpt2_bf16_sharded", false }, { "tiny_gptj_f16", false }, { "tiny_llama_gqa", false }, { "tiny_gptj_f16", true },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void LoadingOntoMetaPutsEveryTensorThere(string fixture, bool bf16)
    {
        using var loaded = ModelLoader.Load(TestData.Path("fixtures/" + fixture), new LoadOptions { Device = META, DType = bf16 ? WeightDType.BF16 : WeightDType.Stored });
        Assert.All(loaded.Model.parameters(), p => Assert.Equal(TorchSharp.DeviceType.META, p.device_type));
        var frozen = FrozenLinear.FrozenIn(loaded.Model).ToList();
        Assert.Equal(fixture != "tiny_llama_gqa", frozen.Count > 0);
        Assert.All(frozen, f => Assert.Equal(TorchSharp.DeviceType.META, ((StoredWeight)FrozenLinear.Of(f.Linear)!).Stored.device_type));
    }

    public static TheoryData<string> Fixtures => new()
    {
        "tiny_gpt2", "tiny_gpt2_bf16_sharded", "tiny_gptj", "tiny_gptj_f16", "tiny_gpt_neox", "tiny_llama_gqa", "tiny_mistral",
        "tiny_qwen2", "tiny_gemma", "tiny_gemma2", "tiny_phi3",
    };

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void ForwardPassRunsOnMeta(string fixture)
    {
        using var loaded = ModelLoader.Load(TestData.Path("fixtures/" + fixture), new LoadOptions { Device = META });
        var model = loaded.Model;
        using var scope = NewDisposeScope();
        var ids = zeros([2, 5], ScalarType.Int64, META);
        var logits = model.Forward(ids);                                      // causal, no mask
        Assert.Equal(TorchSharp.DeviceType.META, logits.device_type);
        Assert.Equal([2L, 5, model.Config.VocabSize], logits.shape);
        var mask = ones([2, 5], ScalarType.Int64, META);                      // padding mask: the masked path
        var masked = model.Forward(ids, mask);
        Assert.Equal(TorchSharp.DeviceType.META, masked.device_type);
        Assert.Equal([2L, 5, model.Config.VocabSize], masked.shape);
    }

    public static TheoryData<string> EditFixtures => new() { "tiny_gpt2", "tiny_gptj_f16", "tiny_llama_gqa", "tiny_phi3" };

    /// <summary>Two FT steps on the keys (a stored-dtype fixture promotes them to an fp32 master there); the loss is not readable on meta.</summary>
    [Theory]
    [MemberData(nameof(EditFixtures))]
    public void FineTuningStepsRunOnMeta(string fixture)
    {
        using var loaded = ModelLoader.Load(TestData.Path("fixtures/" + fixture), new LoadOptions { Device = META });
        var model = loaded.Model;
        var editor = new FineTuneEditor(new FtHyperparameters { Layers = [1], Side = "keys", Steps = 2, Lr = 1e-3, Objective = FtObjective.Target });
        var report = editor.Apply(model, new CharTokenizer(), [new EditRequest("s1", "{} lives in the", "Anna", " city", " sea")]);
        Assert.Equal(2, report.Steps);  // no early stop: the loss reads NaN on meta
        Assert.All(model.parameters(), p => Assert.Equal(TorchSharp.DeviceType.META, p.device_type));
    }

    /// <summary>A LoRA forward, backward and AdamW step on q/v and the keys: adapters and optimiser state on meta.</summary>
    [Theory]
    [MemberData(nameof(EditFixtures))]
    public void LoraStepRunsOnMeta(string fixture)
    {
        using var loaded = ModelLoader.Load(TestData.Path("fixtures/" + fixture), new LoadOptions { Device = META });
        var model = loaded.Model;
        var targets = model.Config.ModelType switch
        {
            Gpt2.ModelType => new[] { "c_attn", "c_fc" },
            Phi3.ModelType => new[] { "qkv_proj", "gate_up_proj" },
            _ => new[] { "q_proj", "v_proj", "fc_in", "up_proj" },
        };
        using var lora = LoraModel.Attach(model, new LoraConfig { R = 4, Alpha = 8, Dropout = 0, TargetModules = targets }, seed: 3);
        using var adam = new AdamWOptimizer(lora.Parameters(), 1e-3);
        using var scope = NewDisposeScope();
        var ids = zeros([1, 8], ScalarType.Int64, META);
        var logits = model.Forward(ids.narrow(1, 0, 7));
        var loss = nn.functional.cross_entropy(logits.view(7, -1), ids.narrow(1, 1, 7).reshape(7));
        adam.ZeroGrad();
        loss.backward();
        adam.Step();
        Assert.NotEmpty(lora.Parameters());
        Assert.All(lora.Parameters(), p => Assert.Equal(TorchSharp.DeviceType.META, p.grad!.device_type));
        Assert.All(model.parameters(), p => Assert.Equal(TorchSharp.DeviceType.META, p.device_type));
    }
}
