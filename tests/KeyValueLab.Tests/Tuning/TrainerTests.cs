using KeyValueLab.Models;
using KeyValueLab.Tokenization;
using KeyValueLab.Tuning;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace KeyValueLab.Tests.Tuning;

public class TrainerTests(ITestOutputHelper output)
{
    private static ITokenizer Gpt2Tokenizer() => TokenizerLoader.Load(TestData.Path("gpt2_tokenizer"));

    [Fact]
    public void PackingCutsFixedRowsAndMasksPromptsWhenAsked()
    {
        using var loaded = ModelLoader.Load(TestData.Path("fixtures/tiny_gpt2"));
        var tok = Gpt2Tokenizer();
        var examples = new[] { new TaskExample("t", "### Answer:", "true"), new TaskExample("t", "### Answer:", "false") };
        var all = SftTrainer.Pack(loaded.Model, tok, examples, 8, answerOnly: false);
        var answers = SftTrainer.Pack(loaded.Model, tok, examples, 8, answerOnly: true);
        int perExample = tok.Encode("### Answer:true").Count + 1;
        Assert.Equal(2 * perExample - 1 + 1, all.Tokens);  // "false" may tokenise differently; total counts EOS per example
        Assert.All(all.Ids, r => Assert.Equal(8, r.Length));
        Assert.Equal((int)Math.Ceiling(all.Tokens / 8.0), all.Rows);
        long counted = answers.Labels.Sum(r => r.Count(l => l != SftTrainer.IgnoreIndex));
        Assert.Equal(2 * 2, counted);  // "true"/"false" are one GPT-2 token each, plus EOS
        Assert.Equal(all.Tokens, all.Labels.Sum(r => r.Count(l => l != SftTrainer.IgnoreIndex)));
    }

    [Theory]
    [InlineData("copa", "superglue/COPA")]
    [InlineData("cb", "superglue/CB")]
    [InlineData("rte", "superglue/RTE")]
    public void SharedTasksTrainAFewStepsAndEvaluate(string task, string folder)
    {
        using var loaded = ModelLoader.Load(TestData.Path("fixtures/tiny_gpt2"));
        var tok = Gpt2Tokenizer();
        var data = TaskLoader.Load(task, TestData.Path(folder), new TaskSelection { MaxTrain = 16, MaxEval = 6 });
        using var lora = LoraModel.Attach(loaded.Model, new LoraConfig { TargetModules = LoraConfig.ResolveTargets("c_attn,keys", "gpt2") }, seed: 1);
        var options = new TrainOptions { Epochs = 5, MicroBatch = 4, GradientAccumulation = 2, MaxLength = 64, MaxSteps = 3, LearningRate = 1e-2 };
        var before = lora.Layers[0].B.detach().clone();
        var result = SftTrainer.Train(lora, tok, data.Train, options, log: _ => { });
        Assert.Equal(3, result.Steps);
        Assert.True(double.IsFinite(result.EpochLosses[0]));
        Assert.True((lora.Layers[0].B - before).abs().max().item<float>() > 0);
        var predictions = TaskEvaluator.Predict(loaded.Model, tok, data.Eval, data.Labels, maxNewTokens: 3, batchSize: 4);
        var metrics = TaskEvaluator.Score(task, predictions, data.Labels);
        Assert.Equal(6, metrics.Count);
        Assert.NotNull(metrics.LabelLikelihoodAccuracy);
        output.WriteLine($"{task}: loss {result.EpochLosses[0]:F3}, acc {metrics.Accuracy:F2}, label-likelihood {metrics.LabelLikelihoodAccuracy:F2}, {result.TokensPerSecond:F0} tok/s");
    }

    [Fact]
    public void TrainingIsSeededCheckpointedAndResumable()
    {
        using var dir = new TempDir();
        var tok = Gpt2Tokenizer();
        var data = TaskLoader.Load("copa", TestData.Path("superglue/COPA"), new TaskSelection { MaxTrain = 12, MaxEval = 2 });
        var config = new LoraConfig { TargetModules = ["c_attn"], Dropout = 0.1 };
        var options = new TrainOptions { Epochs = 2, MicroBatch = 4, GradientAccumulation = 1, MaxLength = 64, LearningRate = 5e-3 };

        Tensor Run(TrainOptions o, bool resumeOnly = false)
        {
            using var loaded = ModelLoader.Load(TestData.Path("fixtures/tiny_gpt2"));
            using var lora = LoraModel.Attach(loaded.Model, config, seed: 3);
            SftTrainer.Train(lora, tok, data.Train, o);
            return lora.Layers[0].B.detach().clone();
        }
        var straight = Run(options);
        var again = Run(options);
        Assert.True(straight.equal(again).all().item<bool>());  // seeded

        // Stop after epoch 1 (checkpointed), then resume to epoch 2: same weights as the uninterrupted run.
        Run(options with { Epochs = 1, CheckpointDir = dir.Path });
        Assert.NotNull(SftTrainer.LastCheckpoint(dir.Path));
        Assert.True(File.Exists(Path.Combine(dir.Path, "checkpoint-epoch-1", "adapter_model.safetensors")));
        var resumed = Run(options with { CheckpointDir = dir.Path, Resume = true });
        double diff = (resumed - straight).abs().max().item<float>();
        output.WriteLine($"resumed vs straight max |Δ| = {diff:G3}");
        Assert.True(diff < 1e-6, $"{diff}");
        Assert.True(File.Exists(Path.Combine(dir.Path, "checkpoint-epoch-2", "trainer_state.json")));
    }
}
