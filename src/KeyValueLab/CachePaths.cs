namespace KeyValueLab;

/// <summary>
/// The one per-user cache folder of KeyValueLab: <c>$KVLAB_CACHE</c> when set, else
/// <c>$XDG_CACHE_HOME/keyvaluelab</c>, else <c>~/.cache/keyvaluelab</c> (on Windows, under
/// LocalApplicationData). Organisms, second-moment statistics and the patched native library live
/// in subfolders of it.
/// </summary>
public static class CachePaths
{
    public static string Root
    {
        get
        {
            if (Environment.GetEnvironmentVariable("KVLAB_CACHE") is { Length: > 0 } kv) return kv;
            if (OperatingSystem.IsWindows())
                return Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.LocalApplicationData), "keyvaluelab");
            string cache = Environment.GetEnvironmentVariable("XDG_CACHE_HOME") is { Length: > 0 } x && Path.IsPathRooted(x) ? x
                : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
            return Path.Combine(cache, "keyvaluelab");
        }
    }

    /// <summary>A subfolder of <see cref="Root"/>, e.g. <c>Of("organisms")</c>.</summary>
    public static string Of(string name) => Path.Combine(Root, name);
}
