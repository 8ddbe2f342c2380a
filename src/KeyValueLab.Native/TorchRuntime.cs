using System.Runtime.InteropServices;
using System.Security.Cryptography;

namespace KeyValueLab.Native;

/// <summary>
/// Makes TorchSharp's native library load on systems whose libstdc++ is older than the one it was
/// built against (stock Debian 12 / Ubuntu 22.04 ship GCC 12's libstdc++, up to GLIBCXX_3.4.30).
/// </summary>
/// <remarks>
/// libLibTorchSharp.so 0.107.0 asks for GLIBCXX_3.4.32 for exactly one symbol,
/// <c>std::ios_base_library_init()</c>, which GCC 13 references from every translation unit that
/// includes &lt;iostream&gt; only to force the iostream initialiser to be linked; no relocation uses
/// it, so it is never called or bound. libtorch itself loads fine. When (and only when) the system
/// libstdc++ lacks a needed version, we write a copy of the library into a per-user cache folder in
/// which that version requirement names a version the system has, and the symbol names an import
/// the library already makes from that version. We then load libtorch's own libraries and the copy
/// by full path before TorchSharp's first call; the copy's SONAME is libLibTorchSharp.so, so
/// TorchSharp's later loads by name bind to it. The NuGet cache is never modified.
/// <para>
/// Nothing runs this implicitly: a program calls <see cref="EnsureLoaded"/> before its first tensor (kvlab's <c>Main</c>,
/// the tests' module initializer). <c>KVLAB_NATIVE_PATCH=0</c> turns it off.
/// </para>
/// <para>
/// Delete this project (and its two calls) once a TorchSharp release ships a libLibTorchSharp.so that no longer
/// needs GLIBCXX_3.4.32: check with <c>readelf -V libLibTorchSharp.so | grep GLIBCXX_3.4.32</c> on the new package.
/// 0.107.0 is built with GCC 13, whose &lt;iostream&gt; adds the reference.
/// </para>
/// </remarks>
public static class TorchRuntime
{
    /// <summary>Symbols known to be referenced only to force static initialisation (no relocations).</summary>
    private static readonly HashSet<string> HarmlessSymbols = new(StringComparer.Ordinal)
    {
        "_ZSt21ios_base_library_initv",
    };

    private const string StdCxxSoname = "libstdc++.so.6";
    private static readonly Lock Gate = new();
    private static bool _loaded;
    private static Exception? _failure;

    /// <summary>Path of the patched copy in use, or null when the original library loaded as shipped.</summary>
    public static string? PatchedLibraryPath { get; private set; }

    /// <summary>Versions that the system libstdc++ lacked (empty when nothing had to be patched).</summary>
    public static IReadOnlyList<string> MissingVersions { get; private set; } = Array.Empty<string>();

    /// <summary>The environment variable that turns the patch off when set to 0.</summary>
    public const string Switch = "KVLAB_NATIVE_PATCH";

    /// <summary>False when <c>KVLAB_NATIVE_PATCH=0</c>: then <see cref="EnsureLoaded"/> leaves TorchSharp to load as shipped.</summary>
    public static bool Enabled => Environment.GetEnvironmentVariable(Switch) != "0";

    /// <summary>
    /// Prepares and loads the native libraries once per process; a patched copy, when one is needed, is kept under
    /// <c><paramref name="cacheRoot"/>/native/</c> (else under the temp folder). Throws <see cref="TorchRuntimeException"/>
    /// with a one-line reason when TorchSharp cannot be made to load. Does nothing when <see cref="Enabled"/> is false.
    /// </summary>
    public static void EnsureLoaded(string cacheRoot)
    {
        lock (Gate)
        {
            if (_failure is not null) throw _failure;
            if (_loaded || !Enabled) return;
            try
            {
                if (OperatingSystem.IsLinux()) PrepareLinux(cacheRoot);
                _loaded = true;
            }
            catch (Exception e)
            {
                _failure = e as TorchRuntimeException ?? new TorchRuntimeException($"TorchSharp native runtime: {e.Message}", e);
                throw _failure;
            }
        }
    }

    private static void PrepareLinux(string cacheRoot)
    {
        string torchSharp = FindNative("libLibTorchSharp.so")
            ?? throw new TorchRuntimeException("TorchSharp native runtime: libLibTorchSharp.so not found next to the application (is the libtorch-cpu package restored for this platform?)");
        string? torchDir = Path.GetDirectoryName(FindNative("libtorch.so"));

        string? stdcxx = LocateLoadedStdCxx();
        if (stdcxx is null) return; // Not glibc/libstdc++ (e.g. musl); nothing we know how to check.

        var defined = ElfImage.Read(stdcxx).DefinedVersions().ToHashSet(StringComparer.Ordinal);
        var image = ElfImage.Read(torchSharp);
        var needs = image.NeededVersions().Where(v => v.File == StdCxxSoname).ToList();
        var missing = needs.Where(v => !defined.Contains(v.Name)).ToList();
        if (missing.Count == 0) return; // New enough libstdc++: nothing is patched.

        MissingVersions = missing.Select(v => v.Name).ToArray();
        byte[] patched = Patch(image, needs, missing, defined, stdcxx);
        string copy = WriteCached(torchSharp, patched, cacheRoot);

        // libtorch's libraries first (by full path, so their own RUNPATH finds libgomp), then the copy:
        // its NEEDED entries are satisfied by SONAME from what is already loaded.
        if (torchDir is not null)
            foreach (var lib in new[] { "libc10.so", "libtorch_cpu.so", "libtorch.so" })
            {
                string p = Path.Combine(torchDir, lib);
                if (File.Exists(p)) NativeLibrary.Load(p);
            }
        try
        {
            NativeLibrary.Load(copy);
        }
        catch (DllNotFoundException e)
        {
            throw new TorchRuntimeException($"TorchSharp native runtime: the patched copy {copy} did not load: {FirstLine(e.Message)}", e);
        }
        PatchedLibraryPath = copy;
    }

    /// <summary>
    /// Rewrites each missing version requirement to name a version the system has, and points every
    /// symbol that used it at an existing import of that version. Refuses anything it cannot prove harmless.
    /// </summary>
    internal static byte[] Patch(ElfImage image, IReadOnlyList<ElfImage.VersionNeed> needs,
        IReadOnlyList<ElfImage.VersionNeed> missing, IReadOnlySet<string> defined, string stdcxxPath)
    {
        var symbols = image.DynamicSymbols();
        var relocated = image.RelocatedSymbols();
        var replacement = needs.FirstOrDefault(v => v.Name == "GLIBCXX_3.4" && defined.Contains(v.Name))
            ?? needs.FirstOrDefault(v => defined.Contains(v.Name))
            ?? throw new TorchRuntimeException($"TorchSharp native runtime: {stdcxxPath} defines none of the versions {image.Path} needs");
        var donor = symbols.FirstOrDefault(s => s.Undefined && s.Version == replacement.Index)
            ?? throw new TorchRuntimeException($"TorchSharp native runtime: {image.Path} imports nothing of {replacement.Name} to rebind to");
        uint replacementName = BitConverter.ToUInt32(image.Bytes, replacement.AuxOffset + 8);

        foreach (var need in missing)
        {
            var users = symbols.Where(s => s.Version == need.Index).ToList();
            var unsafeUsers = users.Where(s => !s.Undefined || !HarmlessSymbols.Contains(s.Name) || relocated.Contains(s.Index)).ToList();
            if (unsafeUsers.Count > 0)
                throw new TorchRuntimeException(
                    $"TorchSharp native runtime: {stdcxxPath} lacks {need.Name}, which {Path.GetFileName(image.Path)} needs for {string.Join(", ", unsafeUsers.Take(3).Select(s => s.Name))}; install a libstdc++ from GCC 13 or newer");
            image.WriteU32(need.AuxOffset, ElfImage.ElfHash(replacement.Name));
            image.WriteU32(need.AuxOffset + 8, replacementName);
            foreach (var s in users) image.WriteU32(s.Offset, donor.NameOffset);
        }
        return image.Bytes;
    }

    private static string WriteCached(string original, byte[] patched, string cacheRoot)
    {
        string hash = Convert.ToHexString(SHA256.HashData(patched))[..16].ToLowerInvariant();
        foreach (string root in new[] { cacheRoot, Path.Combine(Path.GetTempPath(), $"keyvaluelab-{Environment.UserName}") })
        {
            string dir = Path.Combine(root, "native", hash);
            string target = Path.Combine(dir, Path.GetFileName(original));
            try
            {
                if (File.Exists(target) && new FileInfo(target).Length == patched.Length &&
                    SHA256.HashData(File.ReadAllBytes(target)).AsSpan()[..8].SequenceEqual(SHA256.HashData(patched).AsSpan()[..8]))
                    return target;
                Directory.CreateDirectory(dir);
                string tmp = target + $".{Environment.ProcessId}.{Guid.NewGuid():N}.tmp";
                File.WriteAllBytes(tmp, patched);
                File.Move(tmp, target, overwrite: true); // Atomic: concurrent processes write identical bytes.
                return target;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                continue; // Try the next candidate folder.
            }
        }
        throw new TorchRuntimeException("TorchSharp native runtime: no writable cache folder for the patched libLibTorchSharp.so (tried the KeyValueLab cache folder and the temp folder)");
    }

    /// <summary>Finds a native library among the folders .NET itself probes for this application.</summary>
    internal static string? FindNative(string file)
    {
        var dirs = new List<string>();
        if (AppContext.GetData("NATIVE_DLL_SEARCH_DIRECTORIES") is string s)
            dirs.AddRange(s.Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries));
        string baseDir = AppContext.BaseDirectory;
        dirs.Add(baseDir);
        dirs.Add(Path.Combine(baseDir, "runtimes", RuntimeInformation.RuntimeIdentifier, "native"));
        dirs.Add(Path.Combine(baseDir, "runtimes", "linux-" + RuntimeInformation.OSArchitecture.ToString().ToLowerInvariant(), "native"));
        dirs.Add(Path.Combine(baseDir, "cpu"));
        string? asmDir = Path.GetDirectoryName(typeof(TorchRuntime).Assembly.Location);
        if (!string.IsNullOrEmpty(asmDir)) dirs.Add(asmDir);
        return dirs.Select(d => Path.Combine(d, file)).FirstOrDefault(File.Exists);
    }

    /// <summary>Loads the system libstdc++ and returns the file the dynamic loader actually mapped.</summary>
    private static string? LocateLoadedStdCxx()
    {
        if (!NativeLibrary.TryLoad(StdCxxSoname, out _)) return null;
        foreach (string line in File.ReadLines("/proc/self/maps"))
        {
            int slash = line.IndexOf('/');
            if (slash < 0) continue;
            string path = line[slash..];
            if (Path.GetFileName(path).StartsWith(StdCxxSoname, StringComparison.Ordinal) && File.Exists(path)) return path;
        }
        return null;
    }

    /// <summary>
    /// The system loader's one-line reason why TorchSharp's native library does not load (the patched copy when one is
    /// in use, else the shipped one), or null when it loads or is not found. For the message after TorchSharp failed to
    /// start, e.g. with <c>KVLAB_NATIVE_PATCH=0</c> on a system whose libstdc++ is too old.
    /// </summary>
    public static string? LoadFailureReason()
    {
        string file = OperatingSystem.IsWindows() ? "LibTorchSharp.dll" : OperatingSystem.IsMacOS() ? "libLibTorchSharp.dylib" : "libLibTorchSharp.so";
        string? path = PatchedLibraryPath ?? FindNative(file);
        if (path is null) return null;
        try
        {
            NativeLibrary.Load(path);
            return null;
        }
        catch (Exception e) when (e is DllNotFoundException or BadImageFormatException)
        {
            // .NET puts the dynamic loader's own words (dlerror: "version `GLIBCXX_3.4.32' not found ...") on the last line.
            return e.Message.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).LastOrDefault() ?? e.GetType().Name;
        }
    }

    private static string FirstLine(string s) => s.Split('\n')[0].Trim();
}

/// <summary>TorchSharp's native runtime could not be made to load; the message is one line saying why.</summary>
public sealed class TorchRuntimeException(string message, Exception? inner = null) : Exception(message, inner);
