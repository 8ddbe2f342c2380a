using KeyValueLab.Checkpoints;
using KeyValueLab.Memory;
using KeyValueLab.Models;
using KeyValueLab.Tests.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace KeyValueLab.Tests.Memory;

public class FfnMemoryTests
{
    private static readonly long[] Ids = [5, 17, 99, 3, 42, 42, 7, 11];

    private static LoadedModel Load(string fixture) => ModelLoader.Load(TestData.Path("fixtures/" + fixture));

    private static Tensor Input() => tensor(Ids, [1, Ids.Length]);

    public static TheoryData<string> Fixtures => ArchitectureFixtures.All;

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void KeysAndValuesAreTheLiveWeightsInMemoryOrientation(string fixture)
    {
        using var loaded = Load(fixture);
        var model = loaded.Model;
        var memory = new FfnMemory(model);
        long d = memory.ModelDim, m = memory.Memories;
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        for (int layer = 0; layer < memory.Layers; layer++)
        {
            var ffn = model.Ffn(layer);
            foreach (var kind in memory.KeyKinds)
            {
                var keys = memory.Keys(layer, kind);
                Assert.Equal(new[] { m, d }, keys.shape);
                Assert.Contains(ffn.Keys.Values, k => k.weight.Handle == keys.Handle);  // the parameter itself, no copy
            }
            var values = memory.Values(layer);
            Assert.Equal(new[] { d, m }, values.shape);
            Assert.Equal(ffn.Value.weight.Handle, values.Handle);

            // FFN(h) = f(h·Kᵀ + b)·Vᵀ + b' with exactly these matrices (Llama: f(h·K_gateᵀ) ⊙ h·K_upᵀ).
            var h = randn(1, 3, d);
            var mlp = (nn.Module<Tensor, Tensor>)model.named_modules().Single(x => x.name == ffn.Prefix).module;
            // The activation each architecture's paper and config use: SiLU (Llama, Qwen2, Mistral, Phi-3), tanh-GELU
            // (GPT-2, GPT-J, Gemma, Gemma 2), exact GELU (GPT-NeoX).
            Func<Tensor, Tensor> act = model.Config.ModelType switch
            {
                "llama" or "qwen2" or "mistral" or "phi3" => x => nn.functional.silu(x),
                "gpt_neox" => x => nn.functional.gelu(x),
                _ => x => nn.functional.gelu(x, GELU.Approximate.tanh),
            };
            Tensor coefficients = memory.KeyKinds.Count == 2
                ? act(h.matmul(memory.Keys(layer, KeyKind.Gate).t())) * h.matmul(memory.Keys(layer, KeyKind.Up).t())
                : act(h.matmul(memory.Keys(layer).t()) + memory.KeyBias(layer)!);
            var expected = coefficients.matmul(values.t());
            if (memory.ValueBias(layer) is { } bias) expected += bias;
            TensorAssert.CloseFp32(expected, mlp.call(h), $"{fixture} layer {layer} FFN");
        }
    }

    [Fact]
    public void Gpt2KeysAreTheTransposedConv1DWeights()
    {
        using var loaded = Load("tiny_gpt2");
        var memory = new FfnMemory(loaded.Model);
        using var ckpt = HfCheckpoint.Open(TestData.Path("fixtures/tiny_gpt2"));
        using var scope = NewDisposeScope();
        Assert.Equal("transformer.h.1.mlp.c_fc.weight", memory.KeysName(1));
        Assert.Equal("transformer.h.1.mlp.c_proj.weight", memory.ValuesName(1));
        Assert.True(ckpt.ReadFloat32("transformer.h.1.mlp.c_fc.weight").t().eq(memory.Keys(1)).all().item<bool>());    // stored [d, m]
        Assert.True(ckpt.ReadFloat32("transformer.h.1.mlp.c_proj.weight").t().eq(memory.Values(1)).all().item<bool>()); // stored [m, d]
    }

    [Theory]
    [InlineData("tiny_gpt2", KeyKind.Fc)]
    [InlineData("tiny_gptj", KeyKind.Fc)]
    [InlineData("tiny_llama_gqa", KeyKind.Gate)]
    [InlineData("tiny_llama_gqa", KeyKind.Up)]
    [InlineData("stories260K_hf", KeyKind.Up)]
    [InlineData("tiny_qwen2", KeyKind.Gate)]
    [InlineData("tiny_mistral", KeyKind.Up)]
    [InlineData("tiny_gemma", KeyKind.Gate)]
    [InlineData("tiny_gemma2", KeyKind.Up)]
    [InlineData("tiny_phi3", KeyKind.Gate)]
    [InlineData("tiny_phi3", KeyKind.Up)]
    [InlineData("tiny_gpt_neox", KeyKind.Fc)]
    public void EditingOneKeyRowChangesExactlyThatCoefficient(string fixture, KeyKind kind)
    {
        using var loaded = Load(fixture);
        var memory = new FfnMemory(loaded.Model);
        string hash = ParameterHash.Sha256(loaded.Model);
        const int layer = 1, row = 5;
        using var scope = NewDisposeScope();
        using var snapshot = WeightSnapshot.Take(loaded.Model, [memory.KeysName(layer, kind)]);

        var before = memory.Coefficients(layer, Input());  // [1, T, m]
        var earlierBefore = memory.Coefficients(layer - 1, Input());
        Assert.Equal(new long[] { 1, Ids.Length, memory.Memories }, before.shape);
        using (no_grad()) memory.Keys(layer, kind)[row].add_(randn(memory.ModelDim) * 0.5);
        var after = memory.Coefficients(layer, Input());

        var changed = (after - before).abs();                                   // [1, T, m]
        Assert.True(changed.select(2, row).gt(0).all().item<bool>(), "the edited memory's coefficient must change at every position");
        changed[TensorIndex.Ellipsis, row] = 0;
        Assert.Equal(0f, changed.max().item<float>());                          // every other coefficient bit-identical

        // The layer before is untouched, and the model is back to the same bits after restoring.
        Assert.True(memory.Coefficients(layer - 1, Input()).eq(earlierBefore).all().item<bool>());
        snapshot.Restore(loaded.Model);
        Assert.Equal(hash, ParameterHash.Sha256(loaded.Model));
        Assert.True(memory.Coefficients(layer, Input()).eq(before).all().item<bool>());
    }

    [Fact]
    public void KeyKindMustFitTheArchitecture()
    {
        using var llama = Load("tiny_llama_gqa");
        using var gpt2 = Load("tiny_gpt2");
        Assert.Equal([KeyKind.Gate, KeyKind.Up], new FfnMemory(llama.Model).KeyKinds);
        Assert.Equal([KeyKind.Fc], new FfnMemory(gpt2.Model).KeyKinds);
        Assert.Throws<ArgumentException>(() => new FfnMemory(llama.Model).Keys(0));
        Assert.Throws<ArgumentException>(() => new FfnMemory(gpt2.Model).Keys(0, KeyKind.Gate));
        Assert.Throws<ArgumentOutOfRangeException>(() => new FfnMemory(gpt2.Model).Values(2));
        Assert.Equal("model.layers.0.mlp.gate_proj.weight", new FfnMemory(llama.Model).KeysName(0, KeyKind.Gate));
        Assert.Equal(
            ["model.layers.1.mlp.gate_proj.weight", "model.layers.1.mlp.up_proj.weight", "model.layers.1.mlp.down_proj.weight"],
            new FfnMemory(llama.Model).ParameterNames([1]));
    }

    /// <summary>
    /// Phi-3 stores gate and up as one gate_up_proj [2m, d] = [gate | up]: each key matrix is exactly its half
    /// of the stored tensor, is named by the fused parameter, and an in-place edit of one half changes only its rows.
    /// </summary>
    [Theory]
    [InlineData(KeyKind.Gate, 0)]
    [InlineData(KeyKind.Up, 1)]
    public void Phi3KeysAreTheHalvesOfTheFusedGateUpProj(KeyKind kind, int half)
    {
        using var loaded = Load("tiny_phi3");
        var memory = new FfnMemory(loaded.Model);
        using var ckpt = HfCheckpoint.Open(TestData.Path("fixtures/tiny_phi3"));
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        const string fusedName = "model.layers.1.mlp.gate_up_proj.weight";
        Assert.Equal(fusedName, memory.KeysName(1, kind));
        Assert.Equal([fusedName, "model.layers.1.mlp.down_proj.weight"], memory.ParameterNames([1]));
        long m = memory.Memories;
        Assert.True(ckpt.ReadFloat32(fusedName).narrow(0, half * m, m).eq(memory.Keys(1, kind)).all().item<bool>());

        var fused = loaded.Model.named_parameters().Single(p => p.name == fusedName).parameter;
        var before = fused.detach().clone();
        memory.Keys(1, kind).add_(1.0f);
        var rowChanged = fused.detach().ne(before).any(1);  // [2m]
        Assert.True(rowChanged.narrow(0, half * m, m).all().item<bool>(), "every row of the edited half changes");
        Assert.False(rowChanged.narrow(0, (1 - half) * m, m).any().item<bool>(), "the other half keeps its bits");
    }

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void CoefficientsAtPositionsAndRecorder(string fixture)
    {
        using var loaded = Load(fixture);
        var memory = new FfnMemory(loaded.Model);
        using var scope = NewDisposeScope();
        var all = memory.Coefficients(0, Input());
        var some = memory.Coefficients(0, Input(), [0L, 6L]);
        Assert.Equal(new long[] { 1, 2, memory.Memories }, some.shape);
        Assert.True(some.select(1, 1).eq(all.select(1, 6)).all().item<bool>());

        using (var recorder = memory.Record(0, 1))
        {
            using (no_grad()) loaded.Model.Forward(Input());
            Assert.True(recorder[0].eq(all).all().item<bool>());
            Assert.Equal(all.shape, recorder[1].shape);
        }
        // Hooks are gone once the recorder is disposed: a later pass records nothing and leaks nothing.
        using var second = memory.Record(1);
        second.Dispose();
        using (no_grad()) loaded.Model.Forward(Input());
        Assert.False(second.Has(1));
    }

    [Fact]
    public void GradientsReachKeysAndValues()
    {
        using var loaded = Load("tiny_gptj");
        var memory = new FfnMemory(loaded.Model);
        using var scope = NewDisposeScope();
        loaded.Model.zero_grad();
        loaded.Model.Forward(Input()).logsumexp(-1).sum().backward();
        Assert.NotNull(memory.Keys(0).grad);
        Assert.True(memory.Keys(0).grad!.abs().sum().item<float>() > 0);
        Assert.True(memory.Values(1).grad!.abs().sum().item<float>() > 0);
    }
}
