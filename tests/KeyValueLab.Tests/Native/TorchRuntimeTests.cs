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

public class LibTorchSharpPatchTests
{
    private static ElfImage? Original()
    {
        if (!OperatingSystem.IsLinux()) return null;
        string? path = TorchRuntime.FindNative("libLibTorchSharp.so");
        Assert.NotNull(path);
        return ElfImage.Read(path);
    }

    [Fact]
    public void RewritesOnlyTheMissingVersionAndItsHarmlessSymbol()
    {
        if (Original() is not { } image) return;
        var needs = image.NeededVersions().Where(v => v.File == "libstdc++.so.6").ToList();
        var missing = needs.Where(v => v.Name == "GLIBCXX_3.4.32").ToList();
        Assert.Single(missing);
        var defined = needs.Select(v => v.Name).Where(n => n != "GLIBCXX_3.4.32").ToHashSet();
        byte[] before = (byte[])image.Bytes.Clone();

        var patched = new ElfImage("patched", TorchRuntime.Patch(image, needs, missing, defined, "libstdc++.so.6"));

        var after = patched.NeededVersions();
        Assert.DoesNotContain(after, v => v.Name == "GLIBCXX_3.4.32");
        Assert.Equal(image.NeededVersions().Count, after.Count);
        // Exactly the one vernaux entry (hash + name = 8 bytes) and one symbol name (4 bytes) changed.
        int changed = before.Zip(patched.Bytes).Count(p => p.First != p.Second);
        Assert.InRange(changed, 1, 12);
        var sym = patched.DynamicSymbols().Single(s => s.Version == missing[0].Index);
        Assert.True(sym.Undefined);
        Assert.Contains(patched.DynamicSymbols(), s => s.Index != sym.Index && s.Name == sym.Name);
    }

    [Fact]
    public void RefusesWhenAMissingVersionCarriesRealImports()
    {
        if (Original() is not { } image) return;
        var needs = image.NeededVersions().Where(v => v.File == "libstdc++.so.6").ToList();
        // Pretend the system lacks GLIBCXX_3.4.21 (std::__cxx11 strings): those symbols are really called.
        var missing = needs.Where(v => v.Name == "GLIBCXX_3.4.21").ToList();
        var defined = needs.Select(v => v.Name).Where(n => n != "GLIBCXX_3.4.21").ToHashSet();
        var e = Assert.Throws<TorchRuntimeException>(() => TorchRuntime.Patch(image, needs, missing, defined, "/usr/lib/libstdc++.so.6"));
        Assert.Contains("GLIBCXX_3.4.21", e.Message);
        Assert.DoesNotContain("\n", e.Message);
    }
}
