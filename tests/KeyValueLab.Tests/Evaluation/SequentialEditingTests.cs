using System.Text.Json.Nodes;
using KeyValueLab.Editing;
using KeyValueLab.Evaluation;
using KeyValueLab.Memory;
using KeyValueLab.Models;
using KeyValueLab.Tests.Editing;
using KeyValueLab.Tokenization;

namespace KeyValueLab.Tests.Evaluation;

/// <summary>sequential-final and sequential-immediate on stories260K with a small fine-tuning editor; generation-based scores on hand-built cases.</summary>
public sealed class SequentialEditingTests : IClassFixture<EditorTests.Stories>
{
    private readonly EditorTests.Stories _f;
    public SequentialEditingTests(EditorTests.Stories f) => _f = f;

    private static EditCase Case(string id, string prompt, string subject, string target, string truth, params string[] neighbours) =>
        new(new EditRequest(id, prompt, subject, target, truth), EditDatasetFormat.CounterFact, [], neighbours, [], []);

    private static readonly EditCase[] Cases =
    [
        Case("a", "{} went to the", "Lily", "moon", "park", "Tom went to the"),
        Case("b", "{} saw a big", "Ben", "cat", "dog", "Sue saw a big"),
        Case("c", "{} liked to", "Tim", "sing", "play"),
        Case("d", "{} had a red", "Amy", "hat", "ball"),
    ];

    private static RecordingEditor Editor() => new(new FineTuneEditor(new FtHyperparameters { Layers = [2], Side = "values", Steps = 10, Lr = 5e-3 }));

    private SequentialResult Run(RecordingEditor editor, SequentialProtocol protocol, SequentialOptions options)
    {
        var model = _f.Loaded.Model;
        using var snapshot = WeightSnapshot.Take(model, editor.ParameterNames(model));
        try
        {
            var evaluator = new CaseEvaluator(model, _f.Tokenizer, new EvaluationOptions { GenerationPrompts = 0 });
            return SequentialEditing.Run(model, _f.Tokenizer, editor, Cases, protocol, options, evaluator);
        }
        finally { snapshot.Restore(model); }
    }

    [Fact]
    public void FinalEditsEverythingInChunksThenScoresOnceWithCheckpoints()
    {
        var editor = Editor();
        var result = Run(editor, SequentialProtocol.Final, new SequentialOptions { ChunkSize = 2, CheckpointEvery = 2, Generation = false });
        Assert.Equal([2, 2], editor.Calls);
        Assert.Equal(1, editor.Resets);
        Assert.Equal([2, 4], result.Checkpoints.Select(c => c.Edits));
        Assert.Equal(["a", "b"], result.Checkpoints[0].Cases.Select(c => c.Case.CaseId));
        Assert.Equal(["a", "b", "c", "d"], result.Cases.Select(c => c.Case.CaseId));
        Assert.Equal(2, result.ChunkSeconds.Count);
        Assert.All(result.Cases, c => Assert.NotNull(c.Pre));
        // Case a at the checkpoint (after edits a, b) and at the end (after c, d too): the later edits moved it.
        Assert.NotEqual(result.Checkpoints[0].Cases[0].Post.Rewrite[0].LossNew, result.Cases[0].Post.Rewrite[0].LossNew);
    }

    [Fact]
    public void ImmediateScoresEachChunkRightAfterItsEdit()
    {
        var immediate = Run(Editor(), SequentialProtocol.Immediate, new SequentialOptions { ChunkSize = 1, Generation = false, ScoreBeforeEdits = false });
        var final = Run(Editor(), SequentialProtocol.Final, new SequentialOptions { ChunkSize = 1, Generation = false, ScoreBeforeEdits = false });
        Assert.Equal(["a", "b", "c", "d"], immediate.Cases.Select(c => c.Case.CaseId));
        Assert.Empty(immediate.Checkpoints);
        // The last case is scored on the same final model by both protocols; the first is not.
        Assert.Equal(final.Cases[3].Post.Rewrite[0].LossNew, immediate.Cases[3].Post.Rewrite[0].LossNew, 6);
        Assert.NotEqual(final.Cases[0].Post.Rewrite[0].LossNew, immediate.Cases[0].Post.Rewrite[0].LossNew);
    }

    [Fact]
    public void ModeNamesAndTheDeprecatedAlias()
    {
        var warnings = new List<string>();
        Assert.Equal(SequentialProtocol.Final, SequentialProtocols.Parse("sequential-final", warnings.Add));
        Assert.Equal(SequentialProtocol.Immediate, SequentialProtocols.Parse("sequential-immediate", warnings.Add));
        Assert.Empty(warnings);
        Assert.Equal(SequentialProtocol.Immediate, SequentialProtocols.Parse("sequential", warnings.Add));
        Assert.Contains("deprecated", Assert.Single(warnings), StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => SequentialProtocols.Parse("sequentially"));
        Assert.Throws<ArgumentException>(() => Run(Editor(), SequentialProtocol.Final, new SequentialOptions { ChunkSize = 2, CheckpointEvery = 3 }));
    }

    [Theory]
    [InlineData(" the Moon.", "moon", false)]
    [InlineData(" The moon. She", "the moon", true)]
    [InlineData(" moonlight", "moon", false)]
    [InlineData("\nMoon!", "moon", true)]
    [InlineData("", "moon", false)]
    public void ContinuationsAreMatchedAfterNormalising(string continuation, string obj, bool expected) =>
        Assert.Equal(expected, GenerationScorer.StartsWithObject(continuation, obj));

    [Fact]
    public void AnEditThatDoesNotChangeTheGreedyAnswerScoresAsBefore()
    {
        var model = _f.Loaded.Model;
        var scorer = new GenerationScorer(model, _f.Tokenizer);
        var probe = scorer.Generate(Cases[0]);
        string said = GenerationScorer.Normalise(probe.Rewrite[0]).Split(' ')[0];
        Assert.NotEqual("moon", said);
        // A case whose new object is what the model already says: unedited, gen_es is 100 and gen_ns 100.
        var already = Case("x", "{} went to the", "Lily", said, "moon", "Tom went to the", "Sue saw a big");
        var before = scorer.Generate(already);
        var m = GenerationScorer.Score(already, before, scorer.Generate(already));
        Assert.Equal(new GenerationMetrics(100, null, 100), m);
        // The real case, unedited: the model does not say "moon".
        var none = GenerationScorer.Score(Cases[0], probe, scorer.Generate(Cases[0]));
        Assert.Equal(0, none.GenES);
    }

    [Fact]
    public void AnEditThatChangesTheGreedyAnswerSucceeds()
    {
        var model = _f.Loaded.Model;
        var scorer = new GenerationScorer(model, _f.Tokenizer);
        var editor = new FineTuneEditor(new FtHyperparameters { Layers = [3], Side = "values", Steps = 40, Lr = 2e-2, EarlyStopLoss = 1e-3 });
        using var snapshot = WeightSnapshot.Take(model, editor.ParameterNames(model));
        try
        {
            var before = scorer.Generate(Cases[0]);
            editor.Apply(model, _f.Tokenizer, [Cases[0].Request]);
            var after = scorer.Generate(Cases[0]);
            var m = GenerationScorer.Score(Cases[0], before, after);
            Assert.True(m.GenES == 100, $"greedy after the edit: \"{after.Rewrite[0]}\" (before: \"{before.Rewrite[0]}\")");
            Assert.InRange(m.GenNS!.Value, 0, 100);
            Assert.Equal(after.Neighborhood[0] == before.Neighborhood[0] ? 100 : 0, m.GenNS);
        }
        finally { snapshot.Restore(model); }
    }
}
