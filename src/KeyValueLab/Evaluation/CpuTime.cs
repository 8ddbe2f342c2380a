using System.Diagnostics;
using System.Runtime.InteropServices;

namespace KeyValueLab.Evaluation;

/// <summary>
/// CPU seconds spent on a piece of work, for timing that side-by-side contention does not distort: wall time of a unit
/// grows when another organism's worker shares its core, CPU time does not (to first order). With one torch thread the
/// calling thread does all the work (libtorch runs intra-op loops inline), so its own CPU time is the work's; with more
/// torch threads the work is spread over a pool, so the whole process's CPU time is used, which is right while one unit
/// runs at a time (the study runs units side by side only with one torch thread each).
/// </summary>
public static partial class CpuTime
{
    /// <summary>CPU seconds so far of the calling thread (one torch thread) or of the process; NaN where the platform has no thread clock.</summary>
    public static double Now() => TorchSharp.torch.get_num_threads() == 1 ? ThreadSeconds() : Process.GetCurrentProcess().TotalProcessorTime.TotalSeconds;

    /// <summary>CPU seconds of the calling thread (clock_gettime(CLOCK_THREAD_CPUTIME_ID) on Linux and macOS, GetThreadTimes on Windows).</summary>
    public static double ThreadSeconds()
    {
        if (OperatingSystem.IsLinux() || OperatingSystem.IsMacOS())
        {
            int clock = OperatingSystem.IsLinux() ? 3 : 16;  // CLOCK_THREAD_CPUTIME_ID in <time.h> of each
            return clock_gettime(clock, out var t) == 0 ? t.Seconds + t.Nanoseconds * 1e-9 : double.NaN;
        }
        if (OperatingSystem.IsWindows())
            return GetThreadTimes(GetCurrentThread(), out _, out _, out long kernel, out long user) ? (kernel + user) * 1e-7 : double.NaN;
        return double.NaN;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct TimeSpec
    {
        public nint Seconds;
        public nint Nanoseconds;
    }

    [LibraryImport("libc", EntryPoint = "clock_gettime")]
    private static partial int clock_gettime(int clock, out TimeSpec time);

    [LibraryImport("kernel32.dll")]
    private static partial nint GetCurrentThread();

    [LibraryImport("kernel32.dll")]
    [return: MarshalAs(UnmanagedType.Bool)]
    private static partial bool GetThreadTimes(nint thread, out long creation, out long exit, out long kernel, out long user);
}
