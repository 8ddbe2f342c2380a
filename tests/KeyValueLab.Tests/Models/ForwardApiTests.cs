using KeyValueLab.Memory;
using KeyValueLab.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace KeyValueLab.Tests.Models;

public class ForwardApiTests
{
    private static readonly long[] Ids = [5, 17, 99, 3, 42, 42, 7, 11];

    public static TheoryData<string> Fixtures => ArchitectureFixtures.All;

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void HiddenThenLogitsEqualsForward(string fixture)
    {
        using var loaded = ModelLoader.Load(TestData.Path("fixtures/" + fixture));
        var model = loaded.Model;
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var ids = tensor(Ids, [1, Ids.Length]);
        var logits = model.Forward(ids);
        var hidden = model.Hidden(ids);
        Assert.Equal(new long[] { 1, Ids.Length, model.Config.HiddenSize }, hidden.shape);
        Assert.Equal(0.0, TensorAssert.MaxDiff(logits, model.Logits(hidden)));
        TensorAssert.CloseFp32(logits.narrow(1, Ids.Length - 1, 1), model.Logits(hidden.narrow(1, Ids.Length - 1, 1)), "last position");
    }

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void ForwardCacheAndCoefficientsLeakNoTensors(string fixture)
    {
        using var loaded = ModelLoader.Load(TestData.Path("fixtures/" + fixture));
        var model = loaded.Model;
        var memory = new FfnMemory(model);
        var ids = tensor(Ids, [1, Ids.Length]);
        void Work()
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            using var cache = model.NewCache();
            model.Forward(ids.narrow(1, 0, 4), cache: cache);
            model.Forward(ids.narrow(1, 4, 4), torch.ones(1, 8, dtype: ScalarType.Int64), cache: cache);
            memory.Coefficients(1, ids, [2L, 3L]);
        }
        Work();  // warm up lazily created state
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        Work();
        Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
        ids.Dispose();
    }

    [Fact]
    public void GptPositionsPastTheTableAreRefused()
    {
        using var loaded = ModelLoader.Load(TestData.Path("fixtures/tiny_gpt2"));
        using var scope = NewDisposeScope();
        var e = Assert.Throws<ArgumentException>(() => loaded.Model.Forward(zeros(1, 65, dtype: ScalarType.Int64)));
        Assert.Contains("n_positions 64", e.Message);
    }
}

public class BlockHookTests
{
    [Theory]
    [MemberData(nameof(ArchitectureFixtures.All), MemberType = typeof(ArchitectureFixtures))]
    public void HooksOnBlocksSeeAndChangeTheResidualStream(string fixture)
    {
        using var loaded = ModelLoader.Load(TestData.Path("fixtures/" + fixture));
        var model = loaded.Model;
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var ids = tensor(new long[] { 5, 17, 99, 3 }, [1, 4]);
        var plain = model.Forward(ids);
        var block = model.Block(model.Config.NumLayers - 1);
        Tensor? seen = null;
        // Tensors made inside a hook belong to Forward's dispose scope: keep them by detaching them from it.
        var hook = block.register_forward_hook((_, _, _, output) => { seen = output.detach().clone().DetachFromDisposeScope(); return output; });
        model.Forward(ids);
        hook.remove();
        Assert.NotNull(seen);
        Assert.Equal(new long[] { 1, 4, model.Config.HiddenSize }, seen!.shape);
        seen.Dispose();

        var zeroLast = block.register_forward_hook((_, _, _, output) => zeros_like(output));
        var changed = model.Forward(ids);
        zeroLast.remove();
        Assert.False(plain.eq(changed).all().item<bool>());
        Assert.True(plain.eq(model.Forward(ids)).all().item<bool>());
    }
}
