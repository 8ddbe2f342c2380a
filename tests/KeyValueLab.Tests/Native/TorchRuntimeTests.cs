using KeyValueLab.Native;
using TorchSharp;

namespace KeyValueLab.Tests.Native;

public class TorchRuntimeTests
{
    [Fact]
    public void FirstTensorOperationWorks()
    {
        TorchRuntime.EnsureLoaded();
        using var a = torch.arange(6, dtype: torch.float32).reshape(2, 3);
        using var p = a.matmul(a.t());
        Assert.Equal(new float[] { 5, 14, 14, 50 }, p.data<float>().ToArray());
    }

    [Fact]
    public void PatchesOnlyWhenSystemLibStdCxxLacksAVersion()
    {
        TorchRuntime.EnsureLoaded();
        if (!OperatingSystem.IsLinux()) return;
        // The copy exists exactly when a version was missing, and then it is outside the NuGet cache.
        Assert.Equal(TorchRuntime.MissingVersions.Count > 0, TorchRuntime.PatchedLibraryPath is not null);
        if (TorchRuntime.PatchedLibraryPath is { } path)
        {
            Assert.DoesNotContain(".nuget", path);
            var image = ElfImage.Read(path);
            Assert.DoesNotContain(image.NeededVersions(), v => TorchRuntime.MissingVersions.Contains(v.Name));
            Assert.DoesNotContain(image.DynamicSymbols(), s => s.Name == "_ZSt21ios_base_library_initv");
        }
    }

    [Fact]
    public void ElfHashMatchesKnownValues()
    {
        // Values from readelf-visible vna_hash fields of libstdc++ version needs.
        Assert.Equal(0x08922974u, ElfImage.ElfHash("GLIBCXX_3.4"));
        Assert.Equal(0x09691a75u, ElfImage.ElfHash("GLIBC_2.2.5"));
        Assert.Equal(0x0d696913u, ElfImage.ElfHash("GLIBC_2.3"));
    }
}
