using KeyValueLab.Cli;

namespace KeyValueLab.Tests.Organism;

public class OrganismCommandTests
{
    private static (int Code, string Out, string Err) Run(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = Program.Run(args, stdout, stderr);
        return (code, stdout.ToString(), stderr.ToString());
    }

    [Fact]
    public void ExportWritesTheDatasets()
    {
        using var dir = new TempDir();
        var (code, output, err) = Run("organism", "export", "--out", dir.Path, "--subjects", "20", "--relations", "8", "--cases", "10");
        Assert.True(code == 0, err);
        foreach (var f in new[] { "counterfact.json", "zsre_mend.json", "world.json", "corpus.txt", "tasks/boolq/train.jsonl", "tasks/copa/val.jsonl", "tasks/cb/test.jsonl" })
        {
            Assert.True(File.Exists(dir.File(f)), f);
            Assert.Contains(f.Replace('/', Path.DirectorySeparatorChar), output);
        }
    }

    [Fact]
    public void BuildPrintsFolderAndRecallAndReusesTheCache()
    {
        using var cache = new TempDir();
        string[] args = ["organism", "build", "--cache", cache.Path, "--subjects", "12", "--relations", "8", "--objects", "3",
                         "--cases", "8", "--hidden", "32", "--layers", "2", "--epochs", "1"];
        var (code, output, err) = Run(args);
        Assert.True(code == 0, err);
        Assert.Contains("(built)", output);
        Assert.Contains(cache.Path, output);
        Assert.Contains("P19", output);
        Assert.Contains("ES ", output);
        Assert.Contains("train ", err);       // progress with loss, tokens/s and ETA on stderr
        Assert.Contains("tok/s", err);
        Assert.Contains("ETA", err);
        var again = Run(args);
        Assert.Equal(0, again.Code);
        Assert.Contains("(cached)", again.Out);
    }

    [Fact]
    public void BadValuesExitWithCode2()
    {
        Assert.Equal(2, Run("organism", "export", "--out", "x", "--relations", "13").Code);
        Assert.Equal(2, Run("organism", "build", "--arch", "gptj").Code);
        using var dir = new TempDir();
        File.WriteAllText(dir.File("file"), "");
        var (code, _, err) = Run("organism", "export", "--out", dir.File("file"));
        Assert.Equal(2, code);
        Assert.Contains("is a file", err);
    }
}
