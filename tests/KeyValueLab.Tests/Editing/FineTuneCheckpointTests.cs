using KeyValueLab.Editing;
using KeyValueLab.Memory;
using KeyValueLab.Models;
using KeyValueLab.Tests.Inference;
using KeyValueLab.Tests.Models;
using TorchSharp;

namespace KeyValueLab.Tests.Editing;

/// <summary>
/// An FT edit with gradient checkpointing (blocks above the edited one recomputed in the backward pass) gives the weights of
/// the same edit without it; the unchecked edit is the oracle.
/// </summary>
public sealed class FineTuneCheckpointTests
{
    private static readonly EditRequest Request = new("s1", "{} lives in the", "Anna", " city", " sea");

    [Theory]
    [InlineData("tiny_gpt2", "keys")]
    [InlineData("tiny_gpt2", "values")]
    [InlineData("tiny_gptj", "keys")]
    [InlineData("tiny_gptj", "values")]
    public void CheckpointedEditGivesTheUncheckedWeights(string fixture, string side)
    {
        using var loaded = ModelLoader.Load(TestData.Path("fixtures/" + fixture));
        var model = loaded.Model;
        var tokenizer = new CharTokenizer();
        int layers = model.Config.NumLayers;
        var editor = new FineTuneEditor(new FtHyperparameters { Layers = [0], Side = side, Steps = 3, Lr = 1e-2, EarlyStopLoss = -1 });
        string name = editor.ParameterNames(model)[0];
        using var snapshot = WeightSnapshot.Take(model, [name]);
        var calls = new int[layers];
        var hooks = Enumerable.Range(0, layers).Select(l => model.Block(l).register_forward_hook((_, _, _, y) => { calls[l]++; return y; })).ToList();
        try
        {
            var plain = editor.Apply(model, tokenizer, [Request]);
            using var expected = Weight(model, name);
            int[] plainCalls = [.. calls];
            snapshot.Restore(model);
            Array.Clear(calls);
            model.GradientCheckpointing = true;
            var checkpointed = editor.Apply(model, tokenizer, [Request]);
            using var actual = Weight(model, name);
            Assert.Equal(plain.Steps, checkpointed.Steps);
            Assert.Equal(plain.FinalLoss, checkpointed.FinalLoss, Fp32.Tolerance(Math.Abs(plain.FinalLoss)));
            using (var change = (expected - Weight(model, name, original: snapshot)).abs().max()) Assert.True(change.item<float>() > 0, "the edit changed nothing");
            TensorAssert.CloseFp32(expected, actual, $"{fixture} {side}");
            // Block 0 is the edited one (its input needs no gradient: it keeps its graph); every block above it runs again in
            // each of the 3 backward passes.
            Assert.Equal(plainCalls[0], calls[0]);
            for (int l = 1; l < layers; l++) Assert.Equal(plainCalls[l] + 3, calls[l]);
        }
        finally
        {
            foreach (var h in hooks) h.remove();
        }
    }

    private static TorchSharp.torch.Tensor Weight(CausalLM model, string name, WeightSnapshot? original = null) =>
        original is not null ? original[name].to(TorchSharp.torch.ScalarType.Float32)
        : model.named_parameters().Single(p => p.name == name).parameter.detach().clone();
}
