using System.Globalization;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using KeyValueLab.Editing;
using KeyValueLab.Evaluation;
using KeyValueLab.Models;
using KeyValueLab.Tokenization;

namespace KeyValueLab.Tests.Evaluation;

/// <summary>
/// <c>kvlab edit</c>'s seconds of the edit itself, apart from preparation and scoring, and the statistics estimate
/// printed after a measured warm-up.
/// </summary>
public class EditTimingTests(StoriesModel f) : IClassFixture<StoriesModel>
{
    private static readonly string Model = TestData.Path("llama2c_stories260K/stories260K.bin");
    private static readonly string Tok = TestData.Path("llama2c_stories260K/tok512.bin");

    /// <summary>An editor that only waits: 1 s to prepare, 0.3 s to apply.</summary>
    private sealed class WaitingEditor : IKnowledgeEditor
    {
        public string Method => "WAIT";
        public EditScope Scope { get; } = new(EditSide.Values, [0]);
        public JsonObject Hyperparameters { get; } = [];
        public bool JointBatch => false;
        public IReadOnlyList<string> ParameterNames(CausalLM model) => [];
        public IReadOnlyList<string> Prepare(CausalLM model, ITokenizer tokenizer) { Thread.Sleep(1000); return []; }
        public EditReport Apply(CausalLM model, ITokenizer tokenizer, IReadOnlyList<EditRequest> requests) { Thread.Sleep(300); return new EditReport(0, 0); }
    }

    [Fact]
    public void TheEditsSecondsCountTheEditAloneNotItsPreparationOrScoring()
    {
        var request = new EditRequest("t", "{} went to the", "Lily", "moon", "park");
        var result = EditPreview.Run(f.Model, f.Tokenizer, new WaitingEditor(), request, [("rewrite", request.FilledPrompt)], 3);
        // Sleep never returns early; what the two waits would add together (1.3 s) is far above any overshoot of 0.3 s.
        Assert.InRange(result.Seconds, 0.3, 1.0);
        Assert.InRange(result.PrepareSeconds, 1.0, 10.0);
        Assert.True(result.ScoringSeconds > 0, $"scoring {result.ScoringSeconds} s");
    }

    [Fact]
    public void TheEstimateScalesTheMeasuredWarmUpAndNamesShorterWaysAboveTenMinutes()
    {
        // 32 samples in 3.2 s: 0.1 s a sample.
        string quick = SecondMoments.EstimateLine("L1 value-input", 1000, 32, TimeSpan.FromSeconds(3.2));
        Assert.Equal("statistics for L1 value-input: 1000 samples, about 1.7 min (the first 32 took 3.2 s)", quick);
        string slow = SecondMoments.EstimateLine("L1 value-input", 100000, 32, TimeSpan.FromSeconds(3.2));
        Assert.StartsWith("statistics for L1 value-input: 100000 samples, about 2 h 46 min (the first 32 took 3.2 s); shorter: --stats-samples 3000 (about 5.0 min)", slow);
        Assert.Contains("--layer-stats DIR", slow);
        // Exactly ten minutes is not above the bound; one sample more is.
        Assert.DoesNotContain("shorter", SecondMoments.EstimateLine("x", 6000, 32, TimeSpan.FromSeconds(3.2)));
        Assert.Contains("shorter", SecondMoments.EstimateLine("x", 6001, 32, TimeSpan.FromSeconds(3.2)));
    }

    [Fact]
    public void KvlabEditPrintsTheStatisticsEstimateBeforeComputingAndTheEditsSecondsApart()
    {
        using var dir = new TempDir();
        var (stdout, stderr) = (new StringWriter(), new StringWriter());
        int code = KeyValueLab.Cli.Program.Run(["edit", "-m", Model, "-z", Tok, "-i", "{} went to the", "--subject", "Lily", "--target-new", "moon",
            "--method", "rome", "--layers", "2", "--stats-samples", "96", "--stats-tokens", "16", "--stats-dir", dir.Path, "--set", "v_num_grad_steps=3"], stdout, stderr);
        string err = stderr.ToString(), output = stdout.ToString();
        Assert.True(code == 0, err);
        // After the first batch of 32 generated samples, the estimate of all 96 from that batch's measured time.
        var estimate = Regex.Match(err, @"statistics for L2 value-input: 96 samples, about \d+ s \(the first 32 took ([0-9.]+) s\)");
        Assert.True(estimate.Success, err);
        int computed = err.IndexOf("computed over 96 samples", StringComparison.Ordinal);
        Assert.True(computed > estimate.Index, err);
        Assert.Contains("statistics [96/96] L2 value-input", err);
        Assert.Contains("load [", err);
        // The timing line's edit seconds are the headline's, and come apart from loading, preparation and scoring.
        var time = Regex.Match(err, @"time: loading ([0-9.]+) s, preparation ([0-9.]+) s \(statistics, templates\), edit ([0-9.]+) s, scoring ([0-9.]+) s");
        Assert.True(time.Success, err);
        double preparation = double.Parse(time.Groups[2].Value, CultureInfo.InvariantCulture);
        Assert.True(preparation >= double.Parse(estimate.Groups[1].Value, CultureInfo.InvariantCulture), err);
        Assert.Contains($"(edit {time.Groups[3].Value} s, ", output);
    }
}
