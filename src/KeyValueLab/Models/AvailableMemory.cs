using System.Globalization;

namespace KeyValueLab.Models;

/// <summary>
/// The memory a new allocation can get before the kernel's OOM killer steps in: the smaller of the system's
/// <c>MemAvailable</c> (/proc/meminfo) and what the process's cgroup still allows (v2 <c>memory.max</c> − <c>memory.current</c>,
/// or v1 <c>memory.limit_in_bytes</c> − <c>memory.usage_in_bytes</c>).
/// </summary>
public static class AvailableMemory
{
    /// <summary>Bytes available, or null where neither source can be read (not Linux).</summary>
    public static long? Bytes()
    {
        long? meminfo = MemAvailable(Read("/proc/meminfo"));
        long? cgroup = CgroupRoom(Read("/proc/self/cgroup"), Read);
        return (meminfo, cgroup) switch
        {
            (long a, long b) => Math.Min(a, b),
            (long a, null) => a,
            (null, long b) => b,
            _ => null,
        };
    }

    /// <summary>The <c>MemAvailable:</c> line of /proc/meminfo (kB) in bytes.</summary>
    internal static long? MemAvailable(string? meminfo)
    {
        foreach (string line in (meminfo ?? "").Split('\n'))
        {
            if (!line.StartsWith("MemAvailable:", StringComparison.Ordinal)) continue;
            var parts = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            return parts.Length >= 2 && long.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out long kb) ? kb * 1024 : null;
        }
        return null;
    }

    /// <summary>
    /// Room left under the cgroup limit of this process: /proc/self/cgroup names the group (v2: <c>0::/path</c>; v1: a
    /// <c>memory</c> controller line); <paramref name="read"/> reads files under /sys/fs/cgroup. Null when unlimited or unknown.
    /// </summary>
    internal static long? CgroupRoom(string? selfCgroup, Func<string, string?> read)
    {
        foreach (string line in (selfCgroup ?? "").Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            var fields = line.Split(':', 3);
            if (fields.Length != 3) continue;
            string path = fields[2].Trim();
            if (fields[0] == "0" && fields[1] == "")
            {
                // v2: the limit may sit on any ancestor; the tightest one counts.
                long? room = null;
                for (string dir = path; ; dir = ParentOf(dir))
                {
                    string root = "/sys/fs/cgroup" + (dir == "/" ? "" : dir);
                    if (Number(read(root + "/memory.max")) is long max && Number(read(root + "/memory.current")) is long current)
                        room = Math.Min(room ?? long.MaxValue, Math.Max(0, max - current));
                    if (dir == "/") break;
                }
                return room;
            }
            if (fields[1].Split(',').Contains("memory"))
            {
                foreach (string root in new[] { "/sys/fs/cgroup/memory" + (path == "/" ? "" : path), "/sys/fs/cgroup/memory" })
                    if (Number(read(root + "/memory.limit_in_bytes")) is long limit && limit < (1L << 60)
                        && Number(read(root + "/memory.usage_in_bytes")) is long usage)
                        return Math.Max(0, limit - usage);
                return null;
            }
        }
        return null;
    }

    private static string ParentOf(string dir)
    {
        int slash = dir.TrimEnd('/').LastIndexOf('/');
        return slash <= 0 ? "/" : dir[..slash];
    }

    private static long? Number(string? text) =>
        long.TryParse(text?.Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out long n) ? n : null;  // "max" → null

    private static string? Read(string path)
    {
        try { return File.Exists(path) ? File.ReadAllText(path) : null; }
        catch (IOException) { return null; }
        catch (UnauthorizedAccessException) { return null; }
    }
}
