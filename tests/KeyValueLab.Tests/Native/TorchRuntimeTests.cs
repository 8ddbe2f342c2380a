using System.Diagnostics;
using KeyValueLab.Native;
using TorchSharp;

namespace KeyValueLab.Tests.Native;

public class TorchRuntimeTests
{
    [Fact]
    public void FirstTensorOperationWorks()
    {
        TorchRuntime.EnsureLoaded(CachePaths.Root);
        using var a = torch.arange(6, dtype: torch.float32).reshape(2, 3);
        using var p = a.matmul(a.t());
        Assert.Equal(new float[] { 5, 14, 14, 50 }, p.data<float>().ToArray());
    }

    /// <summary>The versions libLibTorchSharp.so needs from libstdc++ that the libstdc++ this process mapped does not define, read here on their own.</summary>
    internal static List<string> LackedVersions()
    {
        string stdcxx = File.ReadLines("/proc/self/maps").Select(l => l.IndexOf('/') is int i and >= 0 ? l[i..] : "")
            .First(p => Path.GetFileName(p).StartsWith("libstdc++.so.6", StringComparison.Ordinal) && File.Exists(p));
        var defined = ElfImage.Read(stdcxx).DefinedVersions().ToHashSet(StringComparer.Ordinal);
        var image = ElfImage.Read(TorchRuntime.FindNative("libLibTorchSharp.so")!);
        return [.. image.NeededVersions().Where(v => v.File == "libstdc++.so.6" && !defined.Contains(v.Name)).Select(v => v.Name)];
    }

    [LinuxFact]
    public void PatchesExactlyWhenTheSystemLibStdCxxLacksANeededVersion()
    {
        Assert.True(TorchRuntime.Enabled, $"{TorchRuntime.Switch}=0 is set for this test run, so nothing can be checked");
        TorchRuntime.EnsureLoaded(CachePaths.Root);
        var lacked = LackedVersions();
        Assert.Equal(lacked, TorchRuntime.MissingVersions);
        if (lacked.Count == 0)
        {
            Assert.Null(TorchRuntime.PatchedLibraryPath);
            return;
        }
        // A copy was written, outside the NuGet cache, without the missing versions or the symbol that named one.
        string path = Assert.IsType<string>(TorchRuntime.PatchedLibraryPath);
        Assert.DoesNotContain(".nuget", path);
        var image = ElfImage.Read(path);
        Assert.DoesNotContain(image.NeededVersions(), v => lacked.Contains(v.Name));
        Assert.DoesNotContain(image.DynamicSymbols(), s => s.Name == "_ZSt21ios_base_library_initv");
    }

    [LinuxFact]
    public void KvlabNativePatchZeroTurnsThePatchOff()
    {
        // kvlab generate as a process: with the patch it runs; with KVLAB_NATIVE_PATCH=0 it fails exactly when the system needs the patch.
        bool needed = LackedVersions().Count > 0;
        var on = Generate(null);
        Assert.True(on.Code == 0, on.Stderr);
        var off = Generate("0");
        Assert.Equal(needed, off.Code != 0);
        if (needed) Assert.Contains(LackedVersions()[0], off.Stderr);  // the loader names the version it did not find
    }

    private static (int Code, string Stderr) Generate(string? patch)
    {
        string stories = TestData.Path("llama2c_stories260K");
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in new[] { Path.Combine(AppContext.BaseDirectory, "kvlab.dll"), "generate", "-m", Path.Combine(stories, "stories260K.bin"),
                     "-z", Path.Combine(stories, "tok512.bin"), "-n", "8", "-t", "0" })
            psi.ArgumentList.Add(a);
        if (patch is null) psi.Environment.Remove(TorchRuntime.Switch);
        else psi.Environment[TorchRuntime.Switch] = patch;
        using var p = Process.Start(psi)!;
        _ = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(60_000)) { p.Kill(true); throw new TimeoutException("kvlab did not exit in 60 s"); }
        return (p.ExitCode, stderr.Result);
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
    private static ElfImage Original()
    {
        string? path = TorchRuntime.FindNative("libLibTorchSharp.so");
        Assert.NotNull(path);
        return ElfImage.Read(path);
    }

    [LinuxFact]
    public void RewritesOnlyTheMissingVersionAndItsHarmlessSymbol()
    {
        var image = Original();
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

    [LinuxFact]
    public void RefusesWhenAMissingVersionCarriesRealImports()
    {
        var image = Original();
        var needs = image.NeededVersions().Where(v => v.File == "libstdc++.so.6").ToList();
        // Pretend the system lacks GLIBCXX_3.4.21 (std::__cxx11 strings): those symbols are really called.
        var missing = needs.Where(v => v.Name == "GLIBCXX_3.4.21").ToList();
        var defined = needs.Select(v => v.Name).Where(n => n != "GLIBCXX_3.4.21").ToHashSet();
        var e = Assert.Throws<TorchRuntimeException>(() => TorchRuntime.Patch(image, needs, missing, defined, "/usr/lib/libstdc++.so.6"));
        Assert.Contains("GLIBCXX_3.4.21", e.Message);
        Assert.DoesNotContain("\n", e.Message);
    }
}
