using System.Diagnostics;
using System.Globalization;

namespace KeyValueLab;

/// <summary>Resident memory of this process (Linux: /proc/self/status; the peak VmHWM is reset through /proc/self/clear_refs).</summary>
public static class ProcessMemory
{
    /// <summary>Starts a new peak (Linux); elsewhere does nothing.</summary>
    public static void ResetPeak()
    {
        try { if (OperatingSystem.IsLinux()) File.WriteAllText("/proc/self/clear_refs", "5"); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
    }

    /// <summary>Peak resident bytes since start or the last <see cref="ResetPeak"/> (elsewhere: the process's peak working set).</summary>
    public static long PeakResidentBytes() => Status("VmHWM") ?? PeakWorkingSet();

    /// <summary>Resident bytes now.</summary>
    public static long ResidentBytes() => Status("VmRSS") ?? Environment.WorkingSet;

    private static long? Status(string field)
    {
        if (!OperatingSystem.IsLinux()) return null;
        try
        {
            foreach (string line in File.ReadLines("/proc/self/status"))
                if (line.StartsWith(field + ":", StringComparison.Ordinal))
                    return long.Parse(line[(field.Length + 1)..].Trim().Split(' ')[0], CultureInfo.InvariantCulture) * 1024;
        }
        catch (Exception e) when (e is IOException or FormatException) { }
        return null;
    }

    private static long PeakWorkingSet()
    {
        using var p = Process.GetCurrentProcess();
        return p.PeakWorkingSet64;
    }
}
