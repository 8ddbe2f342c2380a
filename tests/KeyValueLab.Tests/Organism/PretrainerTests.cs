using KeyValueLab.Inference;
using KeyValueLab.Models;
using KeyValueLab.Organism;
using KeyValueLab.Tokenization;

namespace KeyValueLab.Tests.Organism;

public class PretrainerTests
{
    internal static readonly OrganismSpec Tiny = new()
    {
        World = new WorldConfig
        {
            Seed = 3, Subjects = 16, Relations = 8, ObjectsPerRelation = 3, TrainedPhrasings = 4,
            CounterFactCases = 8, ZsreCases = 8, TaskTrainExamples = 10, TaskEvalExamples = 4,
        },
        Model = new OrganismModelConfig { HiddenSize = 32, Layers = 2, Heads = 2, IntermediateSize = 64, MaxPositions = 64 },
        Training = new TrainingConfig { Epochs = 2, BatchSize = 16, SequenceLength = 32, WarmupSteps = 2, CheckpointEvery = 3, LearningRate = 1e-2 },
    };

    private static (LoadedModel Model, List<int[]> Docs, WordLevelTokenizer Tok) Setup(OrganismSpec spec)
    {
        var world = World.Generate(spec.World);
        var tok = OrganismTokenizer.Build(world);
        var docs = OrganismBuilder.Documents(world, tok, spec.Model.Architecture);
        var model = ModelLoader.Create(Architectures.ParseConfig(spec.Model.ToConfigJson(tok.VocabSize, 1, 2), "config.json"), spec.TrainingSeed);
        return (model, docs, tok);
    }

    private static string TrainAndHash(OrganismSpec spec, string? checkpoints = null, CancellationToken cancel = default)
    {
        var (model, docs, _) = Setup(spec);
        using (model)
        {
            Pretrainer.Train(model, docs, spec.Training, spec.TrainingSeed, 2, checkpoints, cancel: cancel);
            return ParameterHash.Sha256(model.Model);
        }
    }

    [Fact]
    public void PackingKeepsDocumentsWholeAndStartsRowsAtDocuments()
    {
        int[][] docs = [[1, 5, 6, 2], [1, 7, 2], [1, 8, 9, 10, 11, 2], [1, 3, 2]];
        var rows = Pretrainer.PackRows(docs, [0, 1, 2, 3], 8, 0, out var lengths);
        Assert.Equal([[1, 5, 6, 2, 1, 7, 2, 0], [1, 8, 9, 10, 11, 2, 0, 0], [1, 3, 2, 0, 0, 0, 0, 0]], rows.Select(r => r.ToArray()).ToArray());
        Assert.Equal([7, 6, 3], lengths);
        // Warmup then cosine: rises linearly, peaks, ends at the minimum.
        var c = new TrainingConfig { LearningRate = 1.0, WarmupSteps = 4, MinLearningRateRatio = 0.1 };
        Assert.Equal(0.25, c.LearningRateAt(0, 20), 12);
        Assert.Equal(1.0, c.LearningRateAt(4, 20), 12);
        Assert.Equal(0.1, c.LearningRateAt(20, 20), 12);
    }

    [Fact]
    public void TrainingLowersTheLossAndIsBitReproducible()
    {
        var (model, docs, _) = Setup(Tiny);
        var losses = new List<double>();
        using (model) Pretrainer.Train(model, docs, Tiny.Training with { Epochs = 6 }, Tiny.TrainingSeed, 2, onProgress: p => losses.Add(p.Loss));
        Assert.True(losses[^1] < losses[0] - 1.0, $"loss {losses[0]:F3} → {losses[^1]:F3}");
        Assert.Equal(TrainAndHash(Tiny), TrainAndHash(Tiny));
        var twoThreads = Tiny with { Training = Tiny.Training with { Threads = 2 } };
        Assert.Equal(TrainAndHash(twoThreads), TrainAndHash(twoThreads));
        Assert.NotEqual(TrainAndHash(Tiny), TrainAndHash(Tiny with { Training = Tiny.Training with { Seed = 99 } }));
    }

    [Fact]
    public void ResumingFromACheckpointGivesTheSameWeightsAsNotStopping()
    {
        string straight = TrainAndHash(Tiny);
        using var dir = new TempDir();
        using var cancel = new CancellationTokenSource();
        var (model, docs, _) = Setup(Tiny);
        using (model)
            Assert.Throws<OperationCanceledException>(() => Pretrainer.Train(model, docs, Tiny.Training, Tiny.TrainingSeed, 2, dir.Path,
                onProgress: p => { if (p.Step == 4) cancel.Cancel(); }, cancel: cancel.Token));
        Assert.Equal("step-000003", File.ReadAllText(Path.Combine(dir.Path, "latest")));
        var (again, docs2, _) = Setup(Tiny);
        using (again)
        {
            var result = Pretrainer.Train(again, docs2, Tiny.Training, Tiny.TrainingSeed, 2, dir.Path);
            Assert.Equal(3, result.ResumedFromStep);
            Assert.Equal(straight, ParameterHash.Sha256(again.Model));
        }
    }

    [Theory]
    [InlineData("llama")]
    [InlineData("gpt2")]
    public void BuildWritesAHuggingFaceFolderThatTheLoadersReadAndReusesIt(string arch)
    {
        using var cache = new TempDir();
        var spec = Tiny with { Model = Tiny.Model with { Architecture = arch } };
        var lines = new List<string>();
        var built = OrganismBuilder.Build(spec, cache.Path, log: lines.Add);
        Assert.False(built.Reused);
        Assert.Equal(Path.Combine(cache.Path, spec.Hash()), built.Folder);
        foreach (var f in new[] { "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json" })
            Assert.True(File.Exists(Path.Combine(built.ModelFolder, f)), f);
        Assert.True(File.Exists(Path.Combine(built.DataFolder, "counterfact.json")));
        Assert.False(Directory.Exists(Path.Combine(built.Folder, "checkpoints")));
        Assert.Equal(8, built.Recall.Count);

        using var loaded = ModelLoader.Load(built.ModelFolder);
        Assert.Equal(arch, loaded.Config.ModelType);
        var tok = TokenizerLoader.Load(built.ModelFolder);
        var memory = new KeyValueLab.Memory.FfnMemory(loaded.Model);
        Assert.Equal(64, memory.Values(1).shape[1]);
        var score = Scorer.Score(loaded.Model, tok, [("The birthplace of Zzz is", "Paris")]);
        Assert.Single(score[0].TargetIds);

        var again = OrganismBuilder.Build(spec, cache.Path);
        Assert.True(again.Reused);
        Assert.Equal(built.Recall, again.Recall);
        Assert.NotEqual(spec.Hash(), (spec with { World = spec.World with { Seed = 4 } }).Hash());
    }
}
