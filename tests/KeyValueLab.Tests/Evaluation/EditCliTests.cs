using KeyValueLab.Cli;

namespace KeyValueLab.Tests.Evaluation;

/// <summary><c>kvlab edit</c> and <c>kvlab edit-eval</c> end to end on stories260K.</summary>
public class EditCliTests
{
    private static readonly string Model = TestData.Path("llama2c_stories260K/stories260K.bin");
    private static readonly string Tok = TestData.Path("llama2c_stories260K/tok512.bin");

    private static (int Code, string Out, string Err) Kvlab(params string[] args)
    {
        var (stdout, stderr) = (new StringWriter(), new StringWriter());
        int code = Program.Run(args, stdout, stderr);
        return (code, stdout.ToString(), stderr.ToString());
    }

    [Fact]
    public void EditPrintsPredictionsBeforeAndAfter()
    {
        var (code, output, err) = Kvlab("edit", "-m", Model, "-z", Tok, "-i", "{} went to the", "--subject", "Lily", "--target-new", "moon", "--target-true", "park",
            "--paraphrase", "One day Lily went to the", "--neighbour", "Tom went to the", "--method", "ft", "--side", "keys", "--layers", "2", "--set", "lr=5e-3");
        Assert.True(code == 0, err);
        Assert.Contains("FT keys(gate+up) L2", output);
        foreach (string label in new[] { "[rewrite]", "[paraphrase]", "[neighbour]", "before:", "after:", "P(moon)" }) Assert.Contains(label, output);
        // The edit's target on the rewrite prompt: before, "park" beats "moon"; after, "moon" wins (ES) with most of the mass.
        var m = System.Text.RegularExpressions.Regex.Match(output, @"\[rewrite\][^\[]*P\(moon\) ([0-9.]+) → ([0-9.]+)   P\(park\) ([0-9.]+) → ([0-9.]+)");
        Assert.True(m.Success, output);
        double[] p = [.. m.Groups.Values.Skip(1).Select(g => double.Parse(g.Value, System.Globalization.CultureInfo.InvariantCulture))];
        Assert.True(p[0] < p[2] && p[1] > p[3] && p[1] > 0.5, $"P(moon) {p[0]} → {p[1]}, P(park) {p[2]} → {p[3]}");
    }

    [Fact]
    public void EditEvalWritesCasesParamsAndSummaryAndResumes()
    {
        using var dir = new TempDir();
        string[] args = ["edit-eval", "-m", Model, "-z", Tok, "-d", TestData.Path("counterfact/counterfact_500.json"), "--count", "2", "--out", dir.Path,
            "--method", "ft", "--side", "values", "--layers", "1", "--set", "steps=3", "--ge-prompts", "1", "--ge-tokens", "16"];
        var (code, output, err) = Kvlab(args);
        Assert.True(code == 0, err);
        Assert.Contains("ES", output);
        Assert.Contains("[2/2]", err);
        Assert.Equal(2, Directory.GetFiles(Path.Combine(dir.Path, "cases")).Length);
        foreach (string f in new[] { "params.json", "summary.json", "summary.txt" }) Assert.True(File.Exists(Path.Combine(dir.Path, f)), f);
        var again = Kvlab(args);
        Assert.Equal(0, again.Code);
        Assert.Equal(output, again.Out);
    }

    [Fact]
    public void BadInputExitsWithTwo()
    {
        using var dir = new TempDir();
        string bad = dir.File("bad.json");
        File.WriteAllText(bad, """[{"subject": "X", "src": "What is Y?", "rephrase": "r", "alt": "a", "answers": ["b"], "loc": "l", "loc_ans": "c"}]""");
        var (code, _, err) = Kvlab("edit-eval", "-m", Model, "-z", Tok, "-d", bad, "--out", dir.File("out"));
        Assert.Equal(2, code);
        Assert.Contains("bad.json: record 0: subject \"X\" does not occur in src", err);

        var usage = Kvlab("edit-eval", "-m", Model, "-z", Tok, "-d", TestData.Path("zsre/zsre_mend_train-1k.json"), "--out", dir.File("o2"), "--method", "rome", "--side", "keys");
        Assert.Equal(2, usage.Code);
        Assert.Contains("keyrome", usage.Err);

        var layer = Kvlab("edit-eval", "-m", Model, "-z", Tok, "-d", TestData.Path("zsre/zsre_mend_train-1k.json"), "--out", dir.File("o3"), "--method", "ft");
        Assert.Equal(2, layer.Code);
        Assert.Contains("layer 21 is not a layer of this model (0..4); the shipped layers are for GPT-2 XL / GPT-J / Llama-7B, pass --layers", layer.Err);

        // --set is parsed once, for the method, before the model is read: the field and the problem on one line.
        foreach (var (set, expected) in new[] { ("stepz=3", "kvlab: --set stepz: not a hyperparameter of ft"), ("lr=nan", "kvlab: --set lr: must be a finite number > 0, not nan") })
        {
            var refused = Kvlab("edit-eval", "-m", Model, "-z", Tok, "-d", TestData.Path("zsre/zsre_mend_train-1k.json"), "--out", dir.File("o4"), "--method", "ft", "--layers", "1", "--set", set);
            Assert.Equal(2, refused.Code);
            Assert.StartsWith(expected, refused.Err.Split('\n').Single(l => l.StartsWith("kvlab:", StringComparison.Ordinal)));
        }
    }
}
