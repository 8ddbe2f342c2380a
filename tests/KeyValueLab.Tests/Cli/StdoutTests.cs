using System.Diagnostics;
using KeyValueLab.Native;
using KeyValueLab.Tests.Native;

namespace KeyValueLab.Tests.Cli;

/// <summary>kvlab as a process: stdout carries the command's output and nothing else, whatever the libraries print.</summary>
public class StdoutTests
{
    private static readonly string Stories = TestData.Path("llama2c_stories260K");

    private static (int Code, string Stdout, string Stderr) Process(string? patch, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "kvlab.dll"));
        foreach (string a in args) psi.ArgumentList.Add(a);
        if (patch is null) psi.Environment.Remove(TorchRuntime.Switch);
        else psi.Environment[TorchRuntime.Switch] = patch;
        using var p = System.Diagnostics.Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(120_000)) { p.Kill(true); throw new TimeoutException("kvlab did not exit in 120 s"); }
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    private static string[] Generate => ["generate", "-m", Path.Combine(Stories, "stories260K.bin"), "-z", Path.Combine(Stories, "tok512.bin"),
        "-t", "0", "-n", "64", "-i", "Once upon a time"];

    /// <summary>The process's stdout is byte for byte llama2.c's output for the same run (the load progress is on stderr).</summary>
    [LinuxFact]
    public void GenerateWritesOnlyItsTextToStdout()
    {
        var (code, stdout, stderr) = Process(null, Generate);
        Assert.True(code == 0, stderr);
        Assert.Equal(File.ReadAllText(Path.Combine(Stories, "run_t0_n64_once_upon_a_time.txt")), stdout);
    }

    /// <summary>
    /// With the patch off where the system needs it, TorchSharp's loader fails and prints its search trace to Console.Out: none of
    /// it may reach stdout, and the last line on stderr is kvlab's. Where the system needs no patch the load works and stdout is
    /// the result, as above.
    /// </summary>
    [LinuxFact]
    public void AFailedNativeLoadLeavesStdoutEmpty()
    {
        bool needed = TorchRuntimeTests.LackedVersions().Count > 0;
        var (code, stdout, stderr) = Process("0", Generate);
        if (!needed)
        {
            Assert.True(code == 0, stderr);
            Assert.Equal(File.ReadAllText(Path.Combine(Stories, "run_t0_n64_once_upon_a_time.txt")), stdout);
            return;
        }
        Assert.Equal(3, code);
        Assert.Equal("", stdout);
        Assert.Contains("Trace from LoadNativeBackend", stderr);   // TorchSharp's trace went to stderr, not lost
        Assert.StartsWith("kvlab: the native tensor runtime could not be loaded: ", stderr.TrimEnd().Split('\n')[^1]);
    }

    /// <summary>kvlab edit's stdout is what the command itself writes (in-process, to its own writer), timing aside.</summary>
    [LinuxFact]
    public void EditWritesOnlyItsReportToStdout()
    {
        string[] args = ["edit", "-m", Path.Combine(Stories, "stories260K.bin"), "-z", Path.Combine(Stories, "tok512.bin"), "-i", "{} went to the",
            "--subject", "Lily", "--target-new", "moon", "--target-true", "park", "--method", "ft", "--layers", "2", "--threads", "1"];
        var (code, stdout, stderr) = Process(null, args);
        Assert.True(code == 0, stderr);
        var own = Kvlab.Run(args);
        Assert.True(own.Code == 0, own.Stderr);
        static string Untimed(string s) => System.Text.RegularExpressions.Regex.Replace(s, @"\(edit [0-9.]+ s,", "(edit _ s,");
        Assert.Equal(Untimed(own.Stdout), Untimed(stdout));
        Assert.StartsWith("FT values L2: \"Lily went to the\" → moon", stdout);
    }
}
