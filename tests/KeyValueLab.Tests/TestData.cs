using System.Runtime.CompilerServices;
using KeyValueLab.Native;

namespace KeyValueLab.Tests;

/// <summary>Locates the shared test data (../shared/data beside the repository); the product never reads it.</summary>
internal static class TestData
{
    private static readonly Lazy<string> Root = new(() =>
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = System.IO.Path.Combine(dir.FullName, "shared", "data");
            if (Directory.Exists(candidate) && File.Exists(System.IO.Path.Combine(candidate, "MANIFEST.md"))) return candidate;
        }
        throw new DirectoryNotFoundException("shared/data not found above " + AppContext.BaseDirectory);
    });

    /// <summary>Absolute path of a file or folder under shared/data, e.g. <c>Path("fixtures/tiny_gpt2")</c>.</summary>
    public static string Path(string relative) => System.IO.Path.Combine(Root.Value, relative);

#pragma warning disable CA2255
    [ModuleInitializer]
    internal static void LoadTorch() => TorchRuntime.EnsureLoaded(CachePaths.Root);
#pragma warning restore CA2255
}

/// <summary>A temporary folder deleted when disposed.</summary>
internal sealed class TempDir : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("kvlab-test-").FullName;
    public string File(string name) => System.IO.Path.Combine(Path, name);
    public void Dispose() { try { Directory.Delete(Path, recursive: true); } catch (IOException) { } }
}
