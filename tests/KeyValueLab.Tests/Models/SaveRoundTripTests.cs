using KeyValueLab.Checkpoints;
using KeyValueLab.Memory;
using KeyValueLab.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace KeyValueLab.Tests.Models;

/// <summary>Save writes the source's names, dtypes and orientation; loading the result gives bit-identical parameters.</summary>
public class SaveRoundTripTests
{
    public static TheoryData<string> Sources => new()
    {
        "fixtures/tiny_gpt2", "fixtures/tiny_gpt2_bf16_sharded", "fixtures/tiny_gptj", "fixtures/tiny_gptj_f16",
        "fixtures/tiny_llama_gqa", "fixtures/stories260K_hf", "llama2c_stories260K/stories260K.bin",
        "fixtures/tiny_qwen2", "fixtures/tiny_mistral", "fixtures/tiny_mistral_bf16", "fixtures/tiny_gemma", "fixtures/tiny_gemma2",
        "fixtures/tiny_phi3", "fixtures/tiny_gpt_neox",
    };

    [Theory]
    [MemberData(nameof(Sources))]
    public void SaveThenLoadIsBitExact(string source)
    {
        using var dir = new TempDir();
        string target = dir.File("saved");
        using var loaded = ModelLoader.Load(TestData.Path(source));
        string hash = ParameterHash.Sha256(loaded.Model);
        loaded.Save(target);

        using (var original = Checkpoint.Open(TestData.Path(source)))
        using (var saved = HfCheckpoint.Open(target))
        {
            // Same tensor names, dtypes and stored shapes (GPT-2's Conv1D [in, out] restored), and the same bytes.
            var want = original.Tensors.ToDictionary(t => t.Name);
            Assert.Equal(want.Keys.Order(StringComparer.Ordinal), saved.Tensors.Select(t => t.Name).Order(StringComparer.Ordinal));
            foreach (var t in saved.Tensors)
            {
                Assert.Equal(want[t.Name].DType, t.DType);
                Assert.Equal(want[t.Name].Shape, t.Shape);
                using var scope = NewDisposeScope();
                var before = original is HfCheckpoint hf ? hf.ReadStored(t.Name) : original.ReadFloat32(t.Name);
                Assert.True(before.eq(saved.ReadStored(t.Name)).all().item<bool>(), t.Name);
            }
            Assert.Equal(original.Config.ToJsonString(), saved.Config.ToJsonString());
        }

        using var reloaded = ModelLoader.Load(target);
        Assert.Equal(hash, ParameterHash.Sha256(reloaded.Model));
    }

    [Fact]
    public void ShardedSourceIsSavedSharded()
    {
        using var dir = new TempDir();
        using var loaded = ModelLoader.Load(TestData.Path("fixtures/tiny_gpt2_bf16_sharded"));
        var files = loaded.Save(dir.File("saved"));
        Assert.Contains(files, f => f.EndsWith(HfCheckpoint.IndexFile, StringComparison.Ordinal));
    }

    [Fact]
    public void EditedWeightsSurviveSaveAndLoad()
    {
        using var dir = new TempDir();
        using var loaded = ModelLoader.Load(TestData.Path("fixtures/tiny_gpt2"));
        var memory = new FfnMemory(loaded.Model);
        using (no_grad()) memory.Keys(1)[3].add_(0.5f);
        string edited = ParameterHash.Sha256(loaded.Model);
        loaded.Save(dir.File("edited"));
        using var reloaded = ModelLoader.Load(dir.File("edited"));
        Assert.Equal(edited, ParameterHash.Sha256(reloaded.Model));
        // The key row edited in the canonical [memories, d_model] view is column 3 of the stored Conv1D [d_model, memories].
        using var saved = HfCheckpoint.Open(dir.File("edited"));
        using var stored = saved.ReadFloat32("transformer.h.1.mlp.c_fc.weight");
        Assert.True(stored.t().eq(memory.Keys(1)).all().item<bool>());
    }

    [Fact]
    public void SavingRefusesAnExistingFolderUnlessAsked()
    {
        using var dir = new TempDir();
        using var loaded = ModelLoader.Load(TestData.Path("fixtures/tiny_llama_gqa"));
        loaded.Save(dir.File("m"));
        Assert.Throws<InputException>(() => loaded.Save(dir.File("m")));
        loaded.Save(dir.File("m"), overwrite: true);
    }

    [Fact]
    public void CreatedModelIsReproducibleAndSaves()
    {
        string config = File.ReadAllText(TestData.Path("fixtures/tiny_gptj/config.json"));
        using var a = ModelLoader.Create(config, seed: 7);
        using var b = ModelLoader.Create(config, seed: 7);
        using var c = ModelLoader.Create(config, seed: 8);
        Assert.Equal(ParameterHash.Sha256(a.Model), ParameterHash.Sha256(b.Model));
        Assert.NotEqual(ParameterHash.Sha256(a.Model), ParameterHash.Sha256(c.Model));

        using var dir = new TempDir();
        a.Save(dir.File("random"));
        using var reloaded = ModelLoader.Load(dir.File("random"));
        Assert.Equal(ParameterHash.Sha256(a.Model), ParameterHash.Sha256(reloaded.Model));
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var ids = tensor(new long[] { 1, 2, 3 }, [1, 3]);
        Assert.True(a.Model.Forward(ids).eq(reloaded.Model.Forward(ids)).all().item<bool>());
    }
}
