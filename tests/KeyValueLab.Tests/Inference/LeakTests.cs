using KeyValueLab.Inference;
using TorchSharp;

namespace KeyValueLab.Tests.Inference;

public class LeakTests
{
    [Fact]
    public void ScoringAndGenerationLeaveNoLiveTensors()
    {
        var tok = new CharTokenizer();
        using var model = new TinyLM("llama");
        Scorer.Score(model, tok, [("warm", "up")]);
        Generator.Generate(model, tok, "warm", new GenerationOptions { Steps = 8 });

        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        Scorer.Score(model, tok, [("a prompt", "a target"), ("b", "c")], batchSize: 1);
        Generator.Generate(model, tok, "a prompt", new GenerationOptions { Steps = 20, KeepLogits = true });
        Generator.Generate(model, tok, "a prompt", new GenerationOptions { Steps = 12, UseCache = false });
        Generator.GreedyBatch(model, tok, ["one", "three"], maxNewTokens: 5);
        Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
    }
}
