using KeyValueLab.Editing;
using KeyValueLab.Memory;
using KeyValueLab.Models;
using KeyValueLab.Tests.Tuning;
using KeyValueLab.Tokenization;

namespace KeyValueLab.Tests.Editing;

/// <summary>What an FT edit leaves resident.</summary>
public sealed class FineTuneMemoryTests
{
    [Theory]
    [InlineData("values")]
    [InlineData("keys")]
    public void TheEditedMatrixKeepsNoGradientAfterTheEdit(string side)
    {
        using var loaded = ModelLoader.Load(ReferenceFixtures.Path("editors/tiny_gpt2"));
        var tokenizer = TokenizerLoader.Load(ReferenceFixtures.Path("editors/tiny_gpt2"));
        var editor = new FineTuneEditor(new FtHyperparameters { Layers = [1], Side = side, Steps = 2, EarlyStopLoss = -1 });
        var memory = new FfnMemory(loaded.Model);
        using var before = (side == "values" ? memory.Values(1) : memory.Keys(1)).detach().clone();
        var report = editor.Apply(loaded.Model, tokenizer, [ReferenceEditorTests.Requests[0]]);
        var weight = side == "values" ? memory.Values(1) : memory.Keys(1);
        Assert.Equal(2, report.Steps);
        using (var change = (weight.detach() - before).abs().max()) Assert.True(change.item<float>() > 0, "the edit changed nothing");
        Assert.Null(weight.grad);  // a zeroed gradient would be one more matrix resident after every edit
    }
}
