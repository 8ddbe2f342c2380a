using System.Diagnostics;
using KeyValueLab.Evaluation;

namespace KeyValueLab.Tests.Evaluation;

public class CpuTimeTests
{
    [Fact]
    public void AThreadsCpuTimeCountsItsWorkAndNotItsWaiting()
    {
        double before = CpuTime.ThreadSeconds();
        Assert.True(double.IsFinite(before), "no thread CPU clock on this platform");
        Thread.Sleep(300);
        double slept = CpuTime.ThreadSeconds() - before;
        Assert.InRange(slept, 0, 0.05);   // sleeping costs no CPU (a few ms of bookkeeping at most)

        // Spin until the clock has counted 0.1 CPU-s: one thread cannot spend more CPU time than wall time, and another
        // thread's work (a second spinner, started beside it) is not counted on this one.
        using var stop = new CancellationTokenSource();
        var other = new Thread(() => { while (!stop.IsCancellationRequested) Thread.SpinWait(1000); });
        other.Start();
        var wall = Stopwatch.StartNew();
        double start = CpuTime.ThreadSeconds();
        double spent;
        do { Thread.SpinWait(1000); spent = CpuTime.ThreadSeconds() - start; } while (spent < 0.1);
        double elapsed = wall.Elapsed.TotalSeconds;
        stop.Cancel();
        other.Join();
        Assert.True(spent <= elapsed + 0.01, $"thread CPU {spent:F3} s in {elapsed:F3} s wall");
        Assert.True(Process.GetCurrentProcess().TotalProcessorTime.TotalSeconds >= CpuTime.ThreadSeconds());
    }
}
