using System.Diagnostics;
using System.Reflection;
using System.Text.Json.Nodes;
using Xunit.Abstractions;

namespace KeyValueLab.Tests.Packaging;

/// <summary>
/// The three packages people install, packed once per test run from this build's outputs (<c>--no-build --no-restore</c>,
/// a version of their own per run, so no cached copy answers for them) into one temporary folder both tests read.
/// </summary>
public sealed class PackedPackages : IDisposable
{
    private static readonly string Configuration =
        typeof(PackedPackages).Assembly.GetCustomAttribute<AssemblyConfigurationAttribute>()?.Configuration ?? "Debug";

    private readonly TempDir _dir = new();

    public PackedPackages()
    {
        Folder = _dir.File("packages");
        Version = $"1.0.0-test.{DateTime.UtcNow:yyyyMMddHHmmssfff}";
        var clock = Stopwatch.StartNew();
        // In-process and without reused nodes: in a full test run a shared MSBuild child node once exited mid-pack (MSB4166).
        foreach (string project in new[] { "KeyValueLab", "KeyValueLab.Study", "KeyValueLab.Cli" })
        {
            var (code, text, _) = Child.Run(null, "dotnet", RepositoryRoot(), "pack", Path.Combine("src", project), "-c", Configuration,
                "--no-build", "--no-restore", "--disable-build-servers", "-maxcpucount:1", "-o", Folder, $"-p:PackageVersion={Version}");
            if (code != 0) throw new InvalidOperationException($"dotnet pack {project} failed: {text}");
            Log.Add($"pack {project}: {clock.Elapsed.TotalSeconds:F1} s");
        }
    }

    public string Folder { get; }
    public string Version { get; }
    /// <summary>What packing took, for the tests' output.</summary>
    public List<string> Log { get; } = [];

    private static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "KeyValueLab.slnx"))) return dir.FullName;
        throw new DirectoryNotFoundException("KeyValueLab.slnx not found above " + AppContext.BaseDirectory);
    }

    public void Dispose() => _dir.Dispose();
}

/// <summary>A child process with a plain environment, its output captured.</summary>
internal static class Child
{
    public static (int Code, string Output, string Stdout) Run(ITestOutputHelper? output, string file, string workingDirectory, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { WorkingDirectory = workingDirectory, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in args) psi.ArgumentList.Add(a);
        // The test host's MSBuild variables would steer the child's build; it gets a plain environment.
        foreach (string key in psi.Environment.Keys.Where(k => k.StartsWith("MSBUILD", StringComparison.OrdinalIgnoreCase) || k.StartsWith("VSTEST", StringComparison.OrdinalIgnoreCase)).ToList())
            psi.Environment.Remove(key);
        psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        psi.Environment["DOTNET_NOLOGO"] = "1";
        psi.Environment["DOTNET_SKIP_FIRST_TIME_EXPERIENCE"] = "1";
        var clock = Stopwatch.StartNew();
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(300_000)) { p.Kill(true); throw new TimeoutException($"{file} {string.Join(' ', args)} did not finish in 300 s"); }
        output?.WriteLine($"{Path.GetFileName(file)} {string.Join(' ', args)}: exit {p.ExitCode} in {clock.Elapsed.TotalSeconds:F1} s");
        return (p.ExitCode, stdout.Result + stderr.Result, stdout.Result);
    }
}

/// <summary>The tool installs and runs from the packed folder; a library user gets the library without the report's packages.</summary>
public class PackageTests(PackedPackages packed, ITestOutputHelper output) : IClassFixture<PackedPackages>
{
    private (int Code, string Output, string Stdout) Run(string file, string workingDirectory, params string[] args) =>
        Child.Run(output, file, workingDirectory, args);

    [Fact]
    public void TheToolInstallsFromLocallyPackedPackagesAndRuns()
    {
        foreach (string line in packed.Log) output.WriteLine(line);
        using var dir = new TempDir();
        string packages = packed.Folder, tools = dir.File("tools"), version = packed.Version;
        Assert.Equal(["KeyValueLab", "KeyValueLab.Study", "kvlab"],
            Directory.GetFiles(packages, "*.nupkg").Select(f => Path.GetFileName(f)[..^(version.Length + ".nupkg".Length + 1)]).Order(StringComparer.Ordinal));

        var install = Run("dotnet", dir.Path, "tool", "install", "kvlab", "--version", version, "--tool-path", tools, "--add-source", packages);
        Assert.True(install.Code == 0, install.Output);
        string kvlab = Path.Combine(tools, OperatingSystem.IsWindows() ? "kvlab.exe" : "kvlab");
        var shown = Run(kvlab, dir.Path, "--version");
        Assert.True(shown.Code == 0, shown.Output);
        Assert.StartsWith("1.0.0", shown.Output.Trim());

        string stories = TestData.Path("llama2c_stories260K");
        var generated = Run(kvlab, dir.Path, "generate", "-m", Path.Combine(stories, "stories260K.bin"), "-z", Path.Combine(stories, "tok512.bin"), "-t", "0", "-n", "40");
        Assert.True(generated.Code == 0, generated.Output);
        // Greedy: the first 40 positions are the start of llama2.c's own 200-step output.
        string text = generated.Stdout.TrimEnd('\n');
        Assert.True(text.Length > 80, text);
        Assert.StartsWith(text, File.ReadAllText(Path.Combine(stories, "run_t0_n200.txt")));
    }

    [Fact]
    public void AProjectReferencingOnlyKeyValueLabRestoresWithoutTheReportsOrTheStoresPackages()
    {
        using var dir = new TempDir();
        string packages = packed.Folder, version = packed.Version;
        // KeyValueLab.Native travels inside the KeyValueLab package, as its own assembly a user can call.
        using (var nupkg = System.IO.Compression.ZipFile.OpenRead(Path.Combine(packages, $"KeyValueLab.{version}.nupkg")))
            Assert.Equal(["lib/net10.0/KeyValueLab.Native.dll", "lib/net10.0/KeyValueLab.dll"],
                nupkg.Entries.Select(e => e.FullName).Where(n => n.EndsWith(".dll", StringComparison.Ordinal)).Order(StringComparer.Ordinal));
        // Two consumers, restored from the packed folder (everything else comes from the machine's package cache).
        var libraries = new Dictionary<string, JsonObject>();
        foreach (string package in new[] { "KeyValueLab", "KeyValueLab.Study" })
        {
            string project = Path.Combine(dir.File("consumer-" + package), "consumer.csproj");
            Directory.CreateDirectory(Path.GetDirectoryName(project)!);
            File.WriteAllText(project, $"""
                <Project Sdk="Microsoft.NET.Sdk">
                  <PropertyGroup><TargetFramework>net10.0</TargetFramework></PropertyGroup>
                  <ItemGroup><PackageReference Include="{package}" Version="{version}" /></ItemGroup>
                </Project>
                """);
            var restore = Run("dotnet", Path.GetDirectoryName(project)!, "restore", "--source", packages);
            Assert.True(restore.Code == 0, restore.Output);
            var assets = JsonNode.Parse(File.ReadAllText(Path.Combine(Path.GetDirectoryName(project)!, "obj", "project.assets.json")))!;
            libraries[package] = assets["targets"]!["net10.0"]!.AsObject();
            output.WriteLine($"{package}: {string.Join(", ", libraries[package].Select(l => l.Key))}");
        }
        static bool Report(string id) => id.StartsWith("ScottPlot", StringComparison.OrdinalIgnoreCase) || id.StartsWith("Microsoft.Data.Sqlite", StringComparison.OrdinalIgnoreCase)
            || id.StartsWith("SQLitePCLRaw", StringComparison.OrdinalIgnoreCase) || id.StartsWith("YamlDotNet", StringComparison.OrdinalIgnoreCase)
            || id.StartsWith("SkiaSharp.NativeAssets.Linux", StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain(libraries["KeyValueLab"], l => Report(l.Key));
        Assert.Contains(libraries["KeyValueLab.Study"], l => Report(l.Key));  // the study's package does bring them: the check can see them
        // SkiaSharp itself comes only through TorchSharp (its image I/O), not from KeyValueLab.
        var direct = libraries["KeyValueLab"].Single(l => l.Key.StartsWith("KeyValueLab/", StringComparison.Ordinal)).Value!["dependencies"]!.AsObject();
        Assert.DoesNotContain(direct, d => d.Key.StartsWith("SkiaSharp", StringComparison.OrdinalIgnoreCase));
        Assert.Contains(direct, d => d.Key == "TorchSharp");
        var compile = libraries["KeyValueLab"].Single(l => l.Key.StartsWith("KeyValueLab/", StringComparison.Ordinal)).Value!["compile"]!.AsObject();
        Assert.Contains("lib/net10.0/KeyValueLab.Native.dll", compile.Select(c => c.Key));
    }
}
