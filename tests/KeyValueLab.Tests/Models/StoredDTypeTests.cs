using KeyValueLab.Editing;
using KeyValueLab.Memory;
using KeyValueLab.Models;
using KeyValueLab.Tests.Inference;
using KeyValueLab.Tuning;
using TorchSharp;
using TorchSharp.Modules;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace KeyValueLab.Tests.Models;

/// <summary>
/// A BF16/F16 checkpoint loaded as stored (linears frozen in their stored bytes, widened per call) computes what the same
/// weights widened to fp32 up front compute: logits, an FT edit, a ROME edit and a LoRA step. The fp32 load is the oracle.
/// </summary>
public class StoredDTypeTests(ITestOutputHelper output)
{
    public static TheoryData<string> NarrowFixtures => new("tiny_gpt2_bf16_sharded", "tiny_gptj_f16");

    private static LoadedModel Load(string fixture, WeightDType dtype) =>
        ModelLoader.Load(TestData.Path("fixtures/" + fixture), new LoadOptions { DType = dtype });

    private static readonly EditRequest Request = new("s1", "{} lives in the", "Anna", " city", " sea");

    [Theory]
    [MemberData(nameof(NarrowFixtures))]
    public void LinearsStayInTheirStoredDTypeAndLogitsEqualTheWidenedModel(string fixture)
    {
        using var stored = Load(fixture, WeightDType.Stored);
        using var wide = Load(fixture, WeightDType.F32);
        var frozen = FrozenLinear.FrozenIn(stored.Model).ToList();
        var linears = stored.Model.named_modules().Where(m => m.module is Linear && m.name != "lm_head").Select(m => m.name).ToList();
        Assert.Equal(linears.Order(), frozen.Select(f => f.Name).Order());
        var dtype = fixture.EndsWith("f16", StringComparison.Ordinal) ? ScalarType.Float16 : ScalarType.BFloat16;
        Assert.All(frozen, f => Assert.Equal(dtype, ((StoredWeight)FrozenLinear.Of(f.Linear)!).Stored.dtype));
        Assert.Empty(FrozenLinear.FrozenIn(wide.Model));
        // Widening BF16/F16 to fp32 is exact, so the hash (frozen weights hashed as the fp32 they compute with) is the same.
        Assert.Equal(ParameterHash.Sha256(wide.Model), ParameterHash.Sha256(stored.Model));

        var reference = ReferenceLogits.For(fixture);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var a = wide.Model.Forward(reference.InputTensor());
        var b = stored.Model.Forward(reference.InputTensor());
        output.WriteLine($"{fixture}: stored vs widened max |Δlogit| {TensorAssert.MaxDiff(a, b):g3}");
        TensorAssert.CloseFp32(a, b, fixture);
    }

    [Fact]
    public void BlockedWideningGivesTheWholeMatmulAndItsGradient()
    {
        // 700 rows of 512: fp32 1.4 MiB per block limit of 4 MiB would be one block, so use a wider input to force several.
        using var scope = NewDisposeScope();
        var w = randn(3000, 1024, generator: new torch.Generator(7)).to(ScalarType.BFloat16);
        using var weight = new StoredWeight(w.clone());
        Assert.True(weight.BlockRows < 3000, $"block of {weight.BlockRows} rows should split 3000");
        var x = randn([2, 5, 1024], generator: new torch.Generator(8)).requires_grad_(true);
        var y = FrozenLinearFunction.Apply(x, weight);
        var wide = w.to(ScalarType.Float32);
        var expected = nn.functional.linear(x, wide);
        TensorAssert.CloseFp32(expected, y, "forward");
        var g = randn(y.shape, generator: new torch.Generator(9));
        var gx = autograd.grad([y], [x], [g])[0];
        var expectedGx = autograd.grad([expected], [x], [g])[0];
        TensorAssert.CloseFp32(expectedGx, gx, "input gradient");
    }

    [Theory]
    [MemberData(nameof(NarrowFixtures))]
    public void FineTuningEditsTheSameBothWaysAndRestoresBitExact(string fixture)
    {
        var hp = new FtHyperparameters { Layers = [1], Side = "keys", Steps = 3, Lr = 1e-3, Objective = FtObjective.Target };
        var (stored, storedNames) = Edit(fixture, WeightDType.Stored, () => new FineTuneEditor(hp));
        var (wide, _) = Edit(fixture, WeightDType.F32, () => new FineTuneEditor(hp));
        foreach (string name in storedNames) TensorAssert.CloseFp32(wide[name], stored[name], $"{fixture} FT {name}");
    }

    [Theory]
    [MemberData(nameof(NarrowFixtures))]
    public void RomeEditsTheSameBothWays(string fixture)
    {
        using var cache = new TempDir();
        var hp = new LocateEditHyperparameters
        {
            Method = "ROME", VNumGradSteps = 5, ClampNormFactor = 10, ContextTemplateLengthParams = [[5, 1]], Mom2NSamples = 4, Mom2SampleTokens = 16,
            VWeightDecay = 1e-3, Mom2UpdateWeight = 100,
        };
        // Each load computes its own statistics (the cache is keyed by the parameter hash, equal both ways: both runs use one file).
        var (stored, names) = Edit(fixture, WeightDType.Stored, () => new RomeEditor(hp, 1, new SecondMoments(hp.Mom2Corpus, hp.Mom2NSamples, hp.Mom2SampleTokens, cache.Path)));
        var (wide, _) = Edit(fixture, WeightDType.F32, () => new RomeEditor(hp, 1, new SecondMoments(hp.Mom2Corpus, hp.Mom2NSamples, hp.Mom2SampleTokens, cache.Path)));
        foreach (string name in names) TensorAssert.CloseFp32(wide[name], stored[name], $"{fixture} ROME {name}");
    }

    /// <summary>Edits a fresh load; returns the edited matrices (copies) and checks the restore is bit-exact and puts them back in their stored form.</summary>
    private (Dictionary<string, Tensor> Edited, IReadOnlyList<string> Names) Edit(string fixture, WeightDType dtype, Func<IKnowledgeEditor> make)
    {
        using var loaded = Load(fixture, dtype);
        var model = loaded.Model;
        var tokenizer = new CharTokenizer();
        var editor = make();
        try
        {
            int frozenBefore = FrozenLinear.FrozenIn(model).Count();
            string before = ParameterHash.Sha256(model);
            var names = editor.ParameterNames(model);
            using var snapshot = WeightSnapshot.Take(model, names);
            editor.Prepare(model, tokenizer);
            editor.Apply(model, tokenizer, [Request]);
            var parameters = model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
            var edited = names.ToDictionary(n => n, n => parameters[n].detach().clone().DetachFromDisposeScope());
            Assert.True(names.Any(n => !edited[n].equal(snapshot[n]).all().item<bool>()), $"{editor.Method} changed nothing");
            snapshot.Restore(model);
            Assert.Equal(before, ParameterHash.Sha256(model));
            Assert.Equal(frozenBefore, FrozenLinear.FrozenIn(model).Count());  // no fp32 master left behind by the edit
            output.WriteLine($"{fixture} {dtype} {editor.Method}: edited {string.Join(", ", names)}");
            return (edited, names);
        }
        finally
        {
            (editor as IDisposable)?.Dispose();
        }
    }

    [Theory]
    [MemberData(nameof(NarrowFixtures))]
    public void LoraStepGivesTheSameLossAndGradientsBothWays(string fixture)
    {
        var (storedLoss, storedGrads) = LoraStep(fixture, WeightDType.Stored);
        var (wideLoss, wideGrads) = LoraStep(fixture, WeightDType.F32);
        Assert.True(Math.Abs(wideLoss - storedLoss) <= Fp32.Tolerance(wideLoss), $"loss {wideLoss} vs {storedLoss}");
        for (int i = 0; i < wideGrads.Count; i++) TensorAssert.CloseFp32(wideGrads[i], storedGrads[i], $"{fixture} LoRA gradient {i}");
    }

    private static (double Loss, List<Tensor> Grads) LoraStep(string fixture, WeightDType dtype)
    {
        using var loaded = Load(fixture, dtype);
        var targets = loaded.Config.ModelType == Gpt2.ModelType ? new[] { "c_attn", "c_fc" } : new[] { "q_proj", "v_proj", "fc_in" };
        using var lora = LoraModel.Attach(loaded.Model, new LoraConfig { R = 4, Alpha = 8, Dropout = 0, TargetModules = targets }, seed: 3);
        using (no_grad())
            foreach (var layer in lora.Layers) layer.B.copy_(randn(layer.B.shape, generator: new torch.Generator(5)) * 0.1);  // B ≠ 0, so A gets a gradient too
        var ids = tensor(new long[] { 5, 17, 33, 2, 71, 9, 40, 12 }, [1, 8]);
        var logits = loaded.Model.Forward(ids.narrow(1, 0, 7));
        var loss = nn.functional.cross_entropy(logits.view(7, -1), ids.narrow(1, 1, 7).reshape(7));
        loss.backward();
        Assert.All(FrozenLinear.FrozenIn(loaded.Model), f => Assert.Null(f.Linear.weight.grad));
        return (loss.item<float>(), lora.Parameters().Select(p => p.grad!.detach().clone().DetachFromDisposeScope()).ToList());
    }
}
