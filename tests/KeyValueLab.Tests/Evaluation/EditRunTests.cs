using System.Text.Json;
using System.Text.Json.Nodes;
using KeyValueLab.Editing;
using KeyValueLab.Evaluation;
using KeyValueLab.Models;
using KeyValueLab.Tokenization;

namespace KeyValueLab.Tests.Evaluation;

public sealed class StoriesModel : IDisposable
{
    public LoadedModel Loaded { get; } = ModelLoader.Load(TestData.Path("llama2c_stories260K/stories260K.bin"));
    public ITokenizer Tokenizer { get; } = TokenizerLoader.Load(TestData.Path("llama2c_stories260K/tok512.bin"));
    public CausalLM Model => Loaded.Model;
    public void Dispose() => Loaded.Dispose();
}

/// <summary>edit-eval's engine on real data: CounterFact and zsRE slices, metrics recomputed by hand, resume after a kill, bit-exact restore.</summary>
public class EditRunTests(StoriesModel f) : IClassFixture<StoriesModel>
{
    private static readonly IReadOnlyList<EditCase> CounterFact = EditDatasets.Load(TestData.Path("counterfact/counterfact_500.json"));

    private static FineTuneEditor Ft(string side = "values", int steps = 5) =>
        new(new FtHyperparameters { Layers = [1], Side = side, Steps = steps, Lr = 5e-3 });

    private static EvaluationOptions NoGe => new() { GenerationPrompts = 0 };

    [Fact]
    public void CaseIdsThatDifferOnlyInPunctuationKeepTheirOwnFiles()
    {
        // Once, "a/b", "a_b" and "a b" all became cases/a_b.json: the last case won and the summary counted it three times.
        using var dir = new TempDir();
        string[] ids = ["a/b", "a_b", "a b"];
        var cases = CounterFact.Take(3).Select((c, i) => c with { Request = c.Request with { CaseId = ids[i] } }).ToList();
        var run = new EditRun(dir.Path, EditMode.Single, NoGe);
        var summary = run.Run(f.Model, f.Tokenizer, Ft(steps: 1), cases, new JsonObject());
        Assert.Equal(3, Directory.GetFiles(Path.Combine(dir.Path, "cases")).Length);
        Assert.Equal(3, ids.Select(run.CaseFile).Distinct().Count());
        foreach (string id in ids)
            Assert.Equal(id, JsonNode.Parse(File.ReadAllText(run.CaseFile(id)))!["case_id"]!.GetValue<string>());
        Assert.Equal(3, summary.Cases);
        Assert.Equal("a%2Fb", EditRun.FileName("a/b"));

        // Ids that differ only in letter case would share a file on macOS/Windows: refused before any work, naming both.
        var clash = new List<EditCase> { cases[0] with { Request = cases[0].Request with { CaseId = "Q1" } }, cases[1] with { Request = cases[1].Request with { CaseId = "q1" } } };
        using var other = new TempDir();
        var e = Assert.Throws<InputException>(() => new EditRun(other.Path, EditMode.Single, NoGe).Run(f.Model, f.Tokenizer, Ft(steps: 1), clash, new JsonObject()));
        Assert.Contains("\"Q1\" and \"q1\"", e.Message);
        Assert.False(Directory.Exists(Path.Combine(other.Path, "cases")));
    }

    [Fact]
    public void MetricsRecomputedByHandFromLoggedLossesMatchTheSummary()
    {
        using var dir = new TempDir();
        var cases = CounterFact.Take(4).ToList();
        var run = new EditRun(dir.Path, EditMode.Single, new EvaluationOptions { GenerationPrompts = 2, GenerationTokens = 24 });
        var summary = run.Run(f.Model, f.Tokenizer, Ft("keys"), cases, new JsonObject());

        // ES/PS/NS from the per-prompt losses in the case files, by hand: strict inequalities, mean per case, then over cases, ×100.
        var docs = cases.Select(c => JsonNode.Parse(File.ReadAllText(run.CaseFile(c.CaseId)))!).ToList();
        double CaseRate(JsonNode doc, string group, bool newWins) => doc["post"]![group]!.AsArray()
            .Average(p => (newWins ? p!["loss_true"]!.GetValue<double>() > p["loss_new"]!.GetValue<double>() : p!["loss_true"]!.GetValue<double>() < p["loss_new"]!.GetValue<double>()) ? 1.0 : 0.0);
        double es = 100 * docs.Average(d => CaseRate(d, "rewrite", true));
        double ps = 100 * docs.Average(d => CaseRate(d, "paraphrase", true));
        double ns = 100 * docs.Average(d => CaseRate(d, "neighborhood", false));
        double score = 3 / (1 / es + 1 / ps + 1 / ns);
        double em = 100 * docs.Average(d => d["post"]!["rewrite"]!.AsArray().Average(p => Math.Exp(-p!["loss_new"]!.GetValue<double>()) - Math.Exp(-p["loss_true"]!.GetValue<double>())));

        var saved = JsonSerializer.Deserialize<EditSummary>(File.ReadAllText(Path.Combine(dir.Path, "summary.json")), EditRun.Json)!;
        foreach (var s in new[] { summary, saved })
        {
            Assert.Equal(es, s.Post.Single(m => m.Name == "ES").Mean, 9);
            Assert.Equal(ps, s.Post.Single(m => m.Name == "PS").Mean, 9);
            Assert.Equal(ns, s.Post.Single(m => m.Name == "NS").Mean, 9);
            Assert.Equal(es > 0 && ps > 0 && ns > 0 ? score : 0, s.Post.Single(m => m.Name == "Score").Mean, 9);
            Assert.Equal(em, s.Post.Single(m => m.Name == "EM").Mean, 9);
            Assert.All(s.Post, m => Assert.InRange(m.Mean, m.Low - 1e-9, m.High + 1e-9));
        }
        Assert.Contains(summary.Post, m => m.Name == "GE" && m.Mean > 0);
        Assert.Contains("ES", File.ReadAllText(Path.Combine(dir.Path, "summary.txt")));
        var parameters = JsonNode.Parse(File.ReadAllText(Path.Combine(dir.Path, "params.json")))!;
        Assert.Equal("keys", parameters["hyperparameters"]!["side"]!.GetValue<string>());
        Assert.All(docs, d => Assert.True(d["edit"]!["parameters_changed"]!.GetValue<long>() > 0));
    }

    [Fact]
    public void KilledRunResumesWithEveryCaseOnceAndTheSameSummary()
    {
        var cases = CounterFact.Skip(10).Take(6).ToList();
        using var whole = new TempDir();
        var reference = new EditRun(whole.Path, EditMode.Single, NoGe).Run(f.Model, f.Tokenizer, Ft(), cases, new JsonObject());

        using var dir = new TempDir();
        using var kill = new CancellationTokenSource();
        var progress = new Inline(p => { if (p.Done == 3) kill.Cancel(); });
        Assert.Throws<OperationCanceledException>(() => new EditRun(dir.Path, EditMode.Single, NoGe).Run(f.Model, f.Tokenizer, Ft(), cases, new JsonObject(), progress, cancel: kill.Token));
        Assert.Equal(3, Directory.GetFiles(Path.Combine(dir.Path, "cases")).Length);
        var resumed = new EditRun(dir.Path, EditMode.Single, NoGe).Run(f.Model, f.Tokenizer, Ft(), cases, new JsonObject());

        var files = Directory.GetFiles(Path.Combine(dir.Path, "cases"));
        Assert.Equal(cases.Select(c => c.CaseId + ".json").Order(), files.Select(Path.GetFileName).Order());
        Assert.Equal(JsonSerializer.Serialize(reference.Post), JsonSerializer.Serialize(resumed.Post));
        Assert.Equal(JsonSerializer.Serialize(reference.Pre), JsonSerializer.Serialize(resumed.Pre));
        Assert.Equal(JsonSerializer.Serialize(reference.EasyEditStyle), JsonSerializer.Serialize(resumed.EasyEditStyle));

        // A restart with other settings is refused, naming what differs.
        var e = Assert.Throws<InputException>(() => new EditRun(dir.Path, EditMode.Single, NoGe).Run(f.Model, f.Tokenizer, Ft(steps: 7), [.. cases, CounterFact[0]], new JsonObject()));
        Assert.Contains("hyperparameters", e.Message);
    }

    [Fact]
    public void HundredSingleModeCasesLeaveTheModelBitIdentical()
    {
        string before = ParameterHash.Sha256(f.Model);
        using var dir = new TempDir();
        var summary = new EditRun(dir.Path, EditMode.Single, NoGe with { BatchSize = 32 })
            .Run(f.Model, f.Tokenizer, Ft(steps: 2), CounterFact.Take(100).ToList(), new JsonObject());
        Assert.Equal(100, summary.Cases);
        Assert.Equal(before, ParameterHash.Sha256(f.Model));
    }

    [Fact]
    public void BatchAndSequentialModesRunAndRestore()
    {
        string before = ParameterHash.Sha256(f.Model);
        var cases = CounterFact.Skip(20).Take(3).ToList();
        foreach (var mode in new[] { EditMode.Batch, EditMode.SequentialImmediate })
        {
            using var dir = new TempDir();
            var summary = new EditRun(dir.Path, mode, NoGe).Run(f.Model, f.Tokenizer, Ft(), cases, new JsonObject());
            Assert.Equal(3, summary.Cases);
            var applied = cases.Select(c => EditRun.ReadCase(Path.Combine(dir.Path, "cases", c.CaseId + ".json")).Edit.EditsApplied).ToList();
            Assert.Equal(mode == EditMode.Batch ? [3, 3, 3] : [1, 2, 3], applied);
            Assert.Equal(before, ParameterHash.Sha256(f.Model));
        }
    }

    [Fact]
    public void ZsreSliceRunsOnStories()
    {
        using var dir = new TempDir();
        var cases = EditDatasets.Load(TestData.Path("zsre/zsre_mend_train-1k.json")).Take(3).ToList();
        var summary = new EditRun(dir.Path, EditMode.Single, NoGe).Run(f.Model, f.Tokenizer, Ft(), cases, new JsonObject());
        Assert.Contains(summary.Post, m => m.Name == "zsRE efficacy");
        Assert.Contains(summary.Post, m => m.Name == "zsRE specificity");
        Assert.DoesNotContain(summary.Post, m => m.Name == "ES");
    }

    private sealed class Inline(Action<WorkProgress> report) : IProgress<WorkProgress>
    {
        public void Report(WorkProgress value) => report(value);
    }
}

/// <summary>The same engine on the random-weight GPT-2 fixture (real GPT-2 tokenizer) with every dataset format.</summary>
public class FixtureEditRunTests
{
    [Theory]
    [InlineData("counterfact/counterfact_500.json")]
    [InlineData("counterfact/counterfact-val_easyedit.json")]
    [InlineData("zsre/zsre_mend_train-1k.json")]
    public void SliceRunsOnTinyGpt2(string dataset)
    {
        using var loaded = ModelLoader.Load(TestData.Path("fixtures/tiny_gpt2"));
        var tokenizer = TokenizerLoader.Load(TestData.Path("gpt2_tokenizer"));
        var cases = EditDatasets.Load(TestData.Path(dataset)).Take(2).ToList();
        using var dir = new TempDir();
        string before = ParameterHash.Sha256(loaded.Model);
        var editor = new FineTuneEditor(new FtHyperparameters { Layers = [0], Side = "keys", Steps = 3 });
        var summary = new EditRun(dir.Path, EditMode.Single, new EvaluationOptions { GenerationPrompts = 1, GenerationTokens = 20 })
            .Run(loaded.Model, tokenizer, editor, cases, new JsonObject());
        Assert.Equal(2, summary.Cases);
        Assert.Equal(2, Directory.GetFiles(Path.Combine(dir.Path, "cases")).Length);
        Assert.Equal(before, ParameterHash.Sha256(loaded.Model));
    }
}
