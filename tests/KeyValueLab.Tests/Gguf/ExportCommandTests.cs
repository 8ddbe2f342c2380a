using KeyValueLab.Checkpoints;
using KeyValueLab.Models;
using KeyValueLab.Tests.Cli;
using KeyValueLab.Tuning;
using static TorchSharp.torch;

namespace KeyValueLab.Tests.Gguf;

/// <summary><c>kvlab export --gguf</c>, and GGUF files given to the other commands as <c>--model</c>.</summary>
public class ExportCommandTests : IDisposable
{
    private readonly TempDir _tmp = new();
    private static readonly string Stories = TestData.Path("llama2c_stories260K");

    public void Dispose() => _tmp.Dispose();

    [Fact]
    public void ExportedStories260KGeneratesWhatLlama2cPrints()
    {
        // The GGUF carries the tokenizer: generate needs no --tokenizer, and greedy output equals run.c's byte for byte.
        string gguf = _tmp.File("stories.gguf");
        var (code, stdout, stderr) = Kvlab.Run("export", "-m", Path.Combine(Stories, "stories260K.bin"), "-z", Path.Combine(Stories, "tok512.bin"), "--gguf", gguf);
        Assert.True(code == 0, stderr);
        Assert.StartsWith($"wrote {gguf} (llama, F32,", stdout);
        (code, stdout, stderr) = Kvlab.Run("generate", "-m", gguf, "-t", "0", "-n", "64", "-i", "Once upon a time");
        Assert.True(code == 0, stderr);
        Assert.Equal(File.ReadAllText(Path.Combine(Stories, "run_t0_n64_once_upon_a_time.txt")), stdout);
    }

    [Fact]
    public void LoraAdapterIsMergedIntoTheExport()
    {
        string adapter = _tmp.File("adapter"), gguf = _tmp.File("merged.gguf");
        using var base_ = ModelLoader.Load(Path.Combine(Stories, "stories260K.bin"));
        var config = new LoraConfig { R = 2, Alpha = 4, Dropout = 0, TargetModules = ["up_proj"] };
        Tensor expected;
        using (var lora = LoraModel.Attach(base_.Model, config, seed: 3))
        using (no_grad())
        {
            foreach (var l in lora.Layers) l.B.normal_(0, 0.5);   // LoRA starts with B = 0; make the delta visible
            lora.Save(adapter);
            var layer = lora.Layers.Single(l => l.Name == "model.layers.1.mlp.up_proj");
            expected = (layer.Base.weight! + layer.B.matmul(layer.A) * config.Scale).detach().clone();
        }
        using var _ = expected;
        var (code, _, stderr) = Kvlab.Run("export", "-m", Path.Combine(Stories, "stories260K.bin"), "-z", Path.Combine(Stories, "tok512.bin"),
            "--lora", adapter, "--gguf", gguf);
        Assert.True(code == 0, stderr);
        using var back = ModelLoader.Load(gguf);
        var merged = back.Model.named_parameters().Single(p => p.name == "model.layers.1.mlp.up_proj.weight").parameter;
        Assert.True(GgufRoundTripTests.BitEqual(expected, merged));
        var untouched = back.Model.named_parameters().Single(p => p.name == "model.layers.1.mlp.down_proj.weight").parameter;
        Assert.True(GgufRoundTripTests.BitEqual(base_.Model.named_parameters().Single(p => p.name == "model.layers.1.mlp.down_proj.weight").parameter, untouched));
    }

    [Fact]
    public void BadInputGivesExitCode2AndOneLine()
    {
        string gguf = _tmp.File("x.gguf");
        File.WriteAllBytes(gguf, [0x47, 0x47, 0x55, 0x46, 9, 0, 0, 0, .. new byte[40]]);
        var (code, _, stderr) = Kvlab.Run("generate", "-m", gguf, "-n", "3");
        Assert.Equal(2, code);
        Assert.Equal($"kvlab: {gguf}: GGUF version 9 is not supported (supported: 2, 3)", stderr.Trim());

        File.WriteAllText(_tmp.File("exists.gguf"), "");
        (code, _, stderr) = Kvlab.Run("export", "-m", Path.Combine(Stories, "stories260K.bin"), "-z", Path.Combine(Stories, "tok512.bin"), "--gguf", _tmp.File("exists.gguf"));
        Assert.Equal(2, code);
        Assert.Contains("pass --force", stderr);
        Assert.Equal(0, new FileInfo(_tmp.File("exists.gguf")).Length);

        // GPT-2's 50,257 tokens for tiny_gptj's 1,000 embedding rows: refused when the two are loaded, naming both.
        (code, _, stderr) = Kvlab.Run("export", "-m", TestData.Path("fixtures/tiny_gptj"), "-z", TestData.Path("gpt2_tokenizer"), "--gguf", _tmp.File("gptj.gguf"));
        Assert.Equal(2, code);
        Assert.Equal($"kvlab: {TestData.Path("gpt2_tokenizer")}: the tokenizer has ids up to 50256 but the model {TestData.Path("fixtures/tiny_gptj")} embeds only 1000 tokens (vocab_size 1000); they do not belong together", stderr.Trim());
        Assert.False(File.Exists(_tmp.File("gptj.gguf")));

        (code, _, stderr) = Kvlab.Run("export", "-m", TestData.Path("fixtures/tiny_gptj"), "-z", Path.Combine(Stories, "tok512.bin"), "--gguf", _tmp.File("gptj.gguf"));
        Assert.Equal(2, code);
        Assert.Contains("model_type \"gptj\" cannot be exported to GGUF", stderr);
        Assert.False(File.Exists(_tmp.File("gptj.gguf")));
    }
}
