using System.Diagnostics;
using System.Text.Json.Nodes;
using KeyValueLab.Models;

namespace KeyValueLab.Tests.Checkpoints;

/// <summary>
/// Inputs that would block or run without end: a FIFO given as a checkpoint or config (opening it for reading
/// waits for a writer that never comes) and a context length of 2³¹ positions, each refused with one line at once.
/// </summary>
public class NonRegularInputTests
{
    private static void MakeFifo(string path)
    {
        using var mkfifo = Process.Start(new ProcessStartInfo("mkfifo", [path]) { UseShellExecute = false })!;
        mkfifo.WaitForExit();
        Assert.Equal(0, mkfifo.ExitCode);
    }

    /// <summary>Loads on another thread, so that a load that blocks fails the test instead of hanging the run.</summary>
    private static InputException LoadFailsQuickly(string path)
    {
        var load = Task.Run(() => ModelLoader.Load(path).Dispose());
        Assert.True(Task.WhenAny(load, Task.Delay(TimeSpan.FromSeconds(30))).Result == load, $"loading {path} still blocked after 30 s");
        var e = Assert.IsType<InputException>(load.Exception?.InnerException);
        Assert.DoesNotContain('\n', e.Message);
        return e;
    }

    private static TempDir Copy(string fixture)
    {
        var dir = new TempDir();
        foreach (var file in Directory.GetFiles(TestData.Path("fixtures/" + fixture))) File.Copy(file, dir.File(Path.GetFileName(file)));
        return dir;
    }

    [LinuxTheory]
    [InlineData("model.safetensors")]
    [InlineData("config.json")]
    public void AFifoInAModelFolderIsRefusedWithOneLine(string name)
    {
        using var dir = Copy("tiny_gpt2");
        File.Delete(dir.File(name));
        MakeFifo(dir.File(name));
        var e = LoadFailsQuickly(dir.Path);
        Assert.Equal(dir.File(name), e.FilePath);
        Assert.Contains("not a regular file (a FIFO, socket or device?)", e.Message);
    }

    [LinuxTheory]
    [InlineData("stories260K.bin")]
    [InlineData("model.gguf")]
    public void AFifoGivenAsACheckpointFileIsRefusedWithOneLine(string name)
    {
        using var dir = new TempDir();
        MakeFifo(dir.File(name));
        var e = LoadFailsQuickly(dir.File(name));
        Assert.Contains("not a regular file", e.Message);
    }

    [Theory]
    [InlineData("tiny_gpt2", "n_positions")]
    [InlineData("tiny_llama_gqa", "max_position_embeddings")]
    [InlineData("tiny_gptj", "n_positions")]
    public void AContextOf2To31PositionsIsRefusedBeforeBuilding(string fixture, string field)
    {
        using var dir = Copy(fixture);
        var config = JsonNode.Parse(File.ReadAllText(dir.File("config.json")))!.AsObject();
        config[field] = int.MaxValue;
        File.WriteAllText(dir.File("config.json"), config.ToJsonString());
        var e = LoadFailsQuickly(dir.Path);
        Assert.Equal(dir.File("config.json"), e.FilePath);
        Assert.Contains("a context of 2,147,483,647 positions", e.Message);
        Assert.Throws<InputException>(() => ModelLoader.Create(config.ToJsonString(), seed: 1).Dispose());
    }
}

/// <summary>A theory that makes FIFOs with mkfifo: reported as skipped, with the reason, on other systems (never as passed).</summary>
public sealed class LinuxTheoryAttribute : TheoryAttribute
{
    public LinuxTheoryAttribute()
    {
        if (!OperatingSystem.IsLinux()) Skip = "makes FIFOs with mkfifo";
    }
}
