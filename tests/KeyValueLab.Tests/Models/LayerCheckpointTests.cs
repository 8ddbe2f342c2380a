using KeyValueLab.Models;
using KeyValueLab.Tuning;
using TorchSharp;
using static TorchSharp.torch;

namespace KeyValueLab.Tests.Models;

/// <summary>
/// Gradient checkpointing (<see cref="CausalLM.GradientCheckpointing"/>) changes memory, not results: a LoRA step with
/// dropout gives the loss and adapter gradients of the same step without it (the oracle), on an fp32, a BF16-as-stored
/// and an NF4 Llama-family model, and each layer really runs twice (forward, and again in the backward pass).
/// </summary>
public class LayerCheckpointTests
{
    public static TheoryData<string, bool, bool> Cases => new()
    {
        { "tiny_llama_gqa", false, true },
        { "tiny_mistral_bf16", false, true },
        { "tiny_mistral_bf16", true, true },
        { "tiny_llama_gqa", false, false },  // dropout from torch's global generator
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void CheckpointedLoraStepEqualsThePlainStep(string fixture, bool fourBit, bool ownGenerator)
    {
        var (plainLoss, plainGrads, plainCalls) = LoraStep(fixture, fourBit, ownGenerator, checkpoint: false);
        var (loss, grads, calls) = LoraStep(fixture, fourBit, ownGenerator, checkpoint: true);
        Assert.Equal(1, plainCalls);
        Assert.Equal(2, calls);
        Assert.True(Math.Abs(plainLoss - loss) <= Fp32.Tolerance(plainLoss), $"loss {plainLoss} vs {loss}");
        Assert.Equal(plainGrads.Count, grads.Count);
        for (int i = 0; i < grads.Count; i++) TensorAssert.CloseFp32(plainGrads[i], grads[i], $"{fixture} LoRA gradient {i}");
    }

    [Fact]
    public void ArchitecturesWithoutItRefuse()
    {
        using var loaded = ModelLoader.Load(TestData.Path("fixtures/tiny_gpt_neox"));
        Assert.Throws<NotSupportedException>(() => loaded.Model.GradientCheckpointing = true);
    }

    /// <summary>One step; Layer1Calls counts layer 1's forward calls (layer 0's input needs no gradient: it is not checkpointed).</summary>
    private static (double Loss, List<Tensor> Grads, int Layer1Calls) LoraStep(string fixture, bool fourBit, bool ownGenerator, bool checkpoint)
    {
        using var scope = NewDisposeScope();
        using var loaded = ModelLoader.Load(TestData.Path("fixtures/" + fixture), new LoadOptions { FourBit = fourBit });
        var model = loaded.Model;
        using var lora = LoraModel.Attach(model, new LoraConfig { R = 4, Alpha = 8, Dropout = 0.3, TargetModules = ["q_proj", "v_proj", "up_proj"] }, seed: 3);
        lora.Training = true;
        if (ownGenerator) lora.DropoutGenerator = new torch.Generator(11);
        else random.manual_seed(11);
        using (no_grad())
            foreach (var layer in lora.Layers) layer.B.copy_(randn(layer.B.shape, generator: new torch.Generator(5)) * 0.1);  // B ≠ 0, so A gets a gradient too
        model.GradientCheckpointing = checkpoint;
        int calls = 0;
        var counter = model.Block(1).register_forward_hook((_, _, _, y) => { calls++; return y; });
        var ids = tensor(new long[] { 5, 17, 33, 2, 71, 9, 40, 12 }, [1, 8]);
        var logits = model.Forward(ids.narrow(1, 0, 7));
        var loss = nn.functional.cross_entropy(logits.view(7, -1), ids.narrow(1, 1, 7).reshape(7));
        loss.backward();
        counter.remove();
        return (loss.item<float>(), lora.Parameters().Select(p => p.grad!.detach().clone().DetachFromDisposeScope()).ToList(), calls);
    }
}
