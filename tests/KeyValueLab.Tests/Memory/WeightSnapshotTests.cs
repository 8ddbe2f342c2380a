using KeyValueLab.Memory;
using KeyValueLab.Models;
using KeyValueLab.Tests.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace KeyValueLab.Tests.Memory;

public class WeightSnapshotTests
{
    [Theory]
    [MemberData(nameof(ArchitectureFixtures.All), MemberType = typeof(ArchitectureFixtures))]
    public void RestoreIsBitExactAndSnapshotsNeverAlias(string fixture)
    {
        using var loaded = ModelLoader.Load(TestData.Path("fixtures/" + fixture));
        var model = loaded.Model;
        var memory = new FfnMemory(model);
        string original = ParameterHash.Sha256(model);
        var names = memory.ParameterNames([0, 1], biases: true);
        using var snapshot = WeightSnapshot.Take(model, names);
        using var everything = WeightSnapshot.TakeAll(model);
        Assert.Equal(names.Count, snapshot.Names.Count);
        var live = model.named_parameters().ToDictionary(p => p.name, p => p.parameter);

        using (no_grad())
            foreach (var name in names) live[name].add_(1.0f);
        Assert.NotEqual(original, ParameterHash.Sha256(model));
        foreach (var name in names)
        {
            Assert.True(snapshot[name].eq(everything[name]).all().item<bool>(), $"{name}: the snapshot moved with the live weights");
        }

        snapshot.Restore(model);
        Assert.Equal(original, ParameterHash.Sha256(model));

        // Sequential edits: restore from the same snapshot again after more changes, including to other parameters.
        using (no_grad())
            foreach (var p in model.parameters()) p.mul_(1.5f);
        everything.Restore(model);
        Assert.Equal(original, ParameterHash.Sha256(model));
    }

    [Fact]
    public void AWeightKeptAsStoredIsSavedInItsStoredBytesAndFrozenAgainOnRestore()
    {
        using var loaded = ModelLoader.Load(TestData.Path("fixtures/tiny_gptj_f16"), new LoadOptions { DType = WeightDType.Stored });
        var model = loaded.Model;
        var memory = new FfnMemory(model);
        string original = ParameterHash.Sha256(model);
        string name = memory.KeysName(1);
        var linear = (TorchSharp.Modules.Linear)model.named_modules().Single(m => m.name + ".weight" == name).module;
        using var bytes = ((StoredWeight)FrozenLinear.Of(linear)!).Stored.clone();
        using var snapshot = WeightSnapshot.Take(model, [name, memory.KeysName(1).Replace(".weight", ".bias", StringComparison.Ordinal)]);
        Assert.Equal(ScalarType.Float16, snapshot[name].dtype);  // the stored bytes, not a second fp32 copy
        Assert.Null(FrozenLinear.Of(linear));                     // an fp32 master while it is edited
        // Two sequential cases: each edit changes the master, each restore freezes the same stored bytes again.
        for (int edit = 0; edit < 2; edit++)
        {
            using (no_grad()) memory.Keys(1).add_(0.5f);
            Assert.NotEqual(original, ParameterHash.Sha256(model));
            snapshot.Restore(model);
            Assert.Equal(original, ParameterHash.Sha256(model));
            var stored = Assert.IsType<StoredWeight>(FrozenLinear.Of(linear)).Stored;
            Assert.Equal(ScalarType.Float16, stored.dtype);
            Assert.True(stored.eq(bytes).all().item<bool>(), "frozen again with other bytes");
            Assert.Equal(0, linear.weight.shape[1]);  // the master is released: only the zero-width placeholder is left
        }
        // A snapshot of everything but frozen weights, taken while the matrix was a master, restores it as an fp32 master.
        memory.Keys(1);
        using var everything = WeightSnapshot.TakeAll(model);
        snapshot.Restore(model);
        everything.Restore(model);
        Assert.Equal(original, ParameterHash.Sha256(model));
    }

    [Fact]
    public void HashSeesOneBitAndUnknownNamesAreRefused()
    {
        using var loaded = ModelLoader.Load(TestData.Path("fixtures/tiny_gptj"));
        var model = loaded.Model;
        var memory = new FfnMemory(model);
        string original = ParameterHash.Sha256(model);
        using var snapshot = WeightSnapshot.Take(model, [memory.ValuesName(1)]);
        using (no_grad())
        {
            var v = memory.Values(1);
            float x = v[0, 0].item<float>();
            v[0, 0] = BitConverter.Int32BitsToSingle(BitConverter.SingleToInt32Bits(x) ^ 1);  // flip the lowest mantissa bit
        }
        Assert.NotEqual(original, ParameterHash.Sha256(model));
        snapshot.Restore(model);
        Assert.Equal(original, ParameterHash.Sha256(model));
        Assert.Throws<ArgumentException>(() => WeightSnapshot.Take(model, ["transformer.h.9.mlp.fc_in.weight"]));
    }
}
