using System.Text.Json;
using System.Text.Json.Nodes;
using KeyValueLab.Editing;
using KeyValueLab.Evaluation;
using KeyValueLab.Memory;
using KeyValueLab.Models;
using KeyValueLab.Tokenization;

namespace KeyValueLab.Tests.Evaluation;

/// <summary>edit-eval's modes named apart: sequential-final and sequential-immediate in the engine, the deprecated alias, generation scores and retained facts.</summary>
public class EditModeTests(StoriesModel f) : IClassFixture<StoriesModel>
{
    private static readonly IReadOnlyList<EditCase> CounterFact = EditDatasets.Load(TestData.Path("counterfact/counterfact_500.json"));

    private static FineTuneEditor Ft() => new(new FtHyperparameters { Layers = [1], Side = "values", Steps = 5, Lr = 5e-3 });

    private static EvaluationOptions NoGe => new() { GenerationPrompts = 0 };

    [Theory]
    [InlineData("single", EditMode.Single, false)]
    [InlineData("batch", EditMode.Batch, false)]
    [InlineData("sequential-final", EditMode.SequentialFinal, false)]
    [InlineData("Sequential-Immediate", EditMode.SequentialImmediate, false)]
    [InlineData("sequential", EditMode.SequentialImmediate, true)]
    public void ModeNamesParseAndTheOldNameWarns(string name, EditMode mode, bool warns)
    {
        var notes = new List<string>();
        Assert.Equal(mode, EditModes.Parse(name, notes.Add));
        Assert.Equal(warns, notes.Count == 1);
        if (warns) Assert.Contains("deprecated", notes[0], StringComparison.Ordinal);
        Assert.Equal(mode, EditModes.Parse(EditModes.Name(mode)));
        Assert.Throws<ArgumentException>(() => EditModes.Parse("sequentially"));
    }

    /// <summary>
    /// sequential-final: every case is scored once on the final model. The oracle applies the same chunks by hand and scores the
    /// first case after all of them (sequential-immediate would score it after its own chunk only, a different model); each
    /// checkpoint's summary covers the cases edited by then; the model is restored afterwards.
    /// </summary>
    [Fact]
    public void SequentialFinalScoresEveryCaseOnTheFinalModelWithCheckpoints()
    {
        var cases = CounterFact.Skip(30).Take(4).ToList();
        string before = ParameterHash.Sha256(f.Model);
        using var dir = new TempDir();
        var run = new EditRun(dir.Path, EditMode.SequentialFinal, NoGe, new SequentialOptions { ChunkSize = 2, CheckpointEvery = 2 });
        var summary = run.Run(f.Model, f.Tokenizer, Ft(), cases, new JsonObject());
        Assert.Equal(before, ParameterHash.Sha256(f.Model));
        Assert.Equal(4, summary.Cases);
        var first = EditRun.ReadCase(run.CaseFile(cases[0].CaseId));
        Assert.Equal(4, first.Edit.EditsApplied);
        Assert.NotNull(first.Generation);

        var editor = Ft();
        using var snapshot = WeightSnapshot.Take(f.Model, editor.ParameterNames(f.Model));
        double afterOwnChunk, afterAll;
        var evaluator = new CaseEvaluator(f.Model, f.Tokenizer, NoGe);
        try
        {
            editor.Apply(f.Model, f.Tokenizer, [cases[0].Request, cases[1].Request]);
            afterOwnChunk = evaluator.Measure(cases[0]).Rewrite[0].LossNew;
            editor.Apply(f.Model, f.Tokenizer, [cases[2].Request, cases[3].Request]);
            afterAll = evaluator.Measure(cases[0]).Rewrite[0].LossNew;
        }
        finally { snapshot.Restore(f.Model); }
        Assert.True(Math.Abs(afterAll - afterOwnChunk) > 1e-3, $"the second chunk should move case 0's loss ({afterOwnChunk} vs {afterAll})");
        Assert.Equal(afterAll, first.Post.Rewrite[0].LossNew, Fp32.Tolerance(afterAll));

        var two = JsonSerializer.Deserialize<EditSummary>(File.ReadAllText(Path.Combine(dir.Path, "checkpoints", "after-2.json")), EditRun.Json)!;
        var four = JsonSerializer.Deserialize<EditSummary>(File.ReadAllText(Path.Combine(dir.Path, "checkpoints", "after-4.json")), EditRun.Json)!;
        Assert.Equal(2, two.Cases);
        Assert.Equal(4, four.Cases);
        var paramsJson = JsonNode.Parse(File.ReadAllText(Path.Combine(dir.Path, "params.json")))!;
        Assert.Equal("sequential-final", (string)paramsJson["mode"]!);
        Assert.Equal(2, (int)paramsJson["chunk_size"]!);
    }

    [Fact]
    public void ChunksAreRefusedOutsideSequentialFinal()
    {
        using var dir = new TempDir();
        Assert.Throws<ArgumentException>(() => new EditRun(dir.Path, EditMode.SequentialImmediate, NoGe, new SequentialOptions { ChunkSize = 2 }));
        Assert.Throws<ArgumentException>(() => new EditRun(dir.Path, EditMode.Single, NoGe, new SequentialOptions { ChunkSize = 1, CheckpointEvery = 1 }));
        Assert.Throws<ArgumentException>(() => new EditRun(dir.Path, EditMode.Single, NoGe, null, [CounterFact[0]]));
    }

    /// <summary>Single mode starts every case from clean history (SPEC §7: a key cache leaking between single edits corrupted EasyEdit's results) and reports gen_* scores.</summary>
    [Fact]
    public void SingleModeResetsTheEditorsHistoryAndReportsGenerationScores()
    {
        var cases = CounterFact.Skip(40).Take(2).ToList();
        using var dir = new TempDir();
        var editor = new RecordingEditor(Ft());
        var summary = new EditRun(dir.Path, EditMode.Single, NoGe, new SequentialOptions { ChunkSize = 1 }).Run(f.Model, f.Tokenizer, editor, cases, new JsonObject());
        Assert.True(editor.Resets >= 2 * cases.Count, $"{editor.Resets} resets for {cases.Count} cases");
        Assert.Equal(0, editor.HistoryCount);
        Assert.Contains(summary.Post, m => m.Name == "gen_es" && m.Cases == 2);
        Assert.Contains(summary.Post, m => m.Name == "gen_ns" && m.Cases == 2);
    }

    /// <summary>
    /// retained.json after a sequence: the recall before the edits is recomputed here from the unedited model's greedy answers
    /// (independently of the engine); the facts scored are the retained ones, never edited.
    /// </summary>
    [Fact]
    public void RetainedFactsAreAskedBeforeAndAfterTheSequence()
    {
        var cases = CounterFact.Skip(50).Take(2).ToList();
        var retained = CounterFact.Skip(52).Take(4).ToList();
        int length = retained.Max(c => KeyValueLab.Inference.PromptEncoding.EncodeTarget(f.Tokenizer, c.Request.TargetTrue!).Length) + 3;
        var answers = KeyValueLab.Inference.Generator.GreedyBatch(f.Model, f.Tokenizer, [.. retained.Select(c => c.Request.FilledPrompt)], length);
        double recall = 100.0 * retained.Where((c, i) => GenerationScorer.StartsWithObject(answers[i].Text, c.Request.TargetTrue!)).Count() / retained.Count;
        using var dir = new TempDir();
        new EditRun(dir.Path, EditMode.SequentialImmediate, NoGe, null, retained).Run(f.Model, f.Tokenizer, Ft(), cases, new JsonObject());
        var report = JsonSerializer.Deserialize<RetainedFacts>(File.ReadAllText(Path.Combine(dir.Path, "retained.json")), EditRun.Json)!;
        Assert.Equal(4, report.Facts);
        Assert.Equal(2, report.Edits);
        Assert.Equal(recall, report.RecallBefore);
        Assert.InRange(report.Unchanged, 0, 100);
    }
}
