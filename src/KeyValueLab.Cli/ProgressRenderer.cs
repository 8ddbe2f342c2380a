using System.Diagnostics;
using System.Globalization;
using Spectre.Console;

namespace KeyValueLab.Cli;

/// <summary>
/// Draws what a library job reports on stderr: its <see cref="WorkProgress"/> records and its log lines. On a terminal,
/// one Spectre.Console bar per counter (study, edit, train) with its ETA; otherwise plain timestamped lines, one per
/// twentieth of a counter and at its end, with the ETA from this run's pace.
/// </summary>
internal static class ProgressRenderer
{
    /// <summary>Runs <paramref name="job"/> with a progress sink and a log that draw on <paramref name="stderr"/>.</summary>
    public static T Run<T>(TextWriter stderr, Func<IProgress<WorkProgress>, Action<string>, T> job)
    {
        if (!ReferenceEquals(stderr, Console.Error) || Console.IsErrorRedirected)
        {
            var plain = new PlainLines(stderr);
            return job(plain, stderr.WriteLine);
        }
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(stderr) });
        T result = default!;
        console.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn(), new SpinnerColumn())
            .Start(ctx =>
            {
                var bars = new Dictionary<string, ProgressTask>(StringComparer.Ordinal);
                var progress = new SynchronousProgress<WorkProgress>(p =>
                {
                    // A counter that starts again (the next training run of a study) gets a fresh bar, so its ETA starts afresh.
                    if (!bars.TryGetValue(p.Task, out var bar) || p.Done < bar.Value)
                    {
                        bar?.StopTask();
                        bars[p.Task] = bar = ctx.AddTask(p.Task, maxValue: Math.Max(1, p.Total));
                    }
                    bar.MaxValue = Math.Max(1, p.Total);
                    bar.Value = p.Done;
                    bar.Description = Markup.Escape(Describe(p, withCount: true));
                });
                result = job(progress, line => console.WriteLine(line));
                foreach (var bar in bars.Values) bar.StopTask();
            });
        return result;
    }

    /// <summary>"train [3/10] epoch 1/2 loss 2.3456 lr 0.0002 1234 tok/s" (the count optional).</summary>
    internal static string Describe(WorkProgress p, bool withCount)
    {
        var text = new System.Text.StringBuilder(p.Task);
        if (withCount) text.Append(CultureInfo.InvariantCulture, $" [{p.Done}/{p.Total}]");
        if (p.Stage.Length > 0) text.Append(' ').Append(p.Stage);
        if (p.Loss is double loss) text.Append(CultureInfo.InvariantCulture, $" loss {loss:F4}");
        if (p.LearningRate is double lr) text.Append(CultureInfo.InvariantCulture, $" lr {lr:G3}");
        if (p.TokensPerSecond is double tps) text.Append(CultureInfo.InvariantCulture, $" {tps:F0} tok/s");
        return text.ToString();
    }

    /// <summary>Timestamped lines for logs and pipes: a counter's first report, one per twentieth of it, and its last.</summary>
    private sealed class PlainLines(TextWriter stderr) : IProgress<WorkProgress>
    {
        private readonly Dictionary<string, (Stopwatch Clock, int First, int Last, int Twentieth)> _counters = new(StringComparer.Ordinal);

        public void Report(WorkProgress p)
        {
            if (!_counters.TryGetValue(p.Task, out var c) || p.Done < c.Last) c = (Stopwatch.StartNew(), p.Done, p.Done, -1);
            int twentieth = p.Total <= 0 ? 20 : p.Done * 20 / p.Total;
            bool show = twentieth != c.Twentieth;
            int newly = p.Done - c.First;
            _counters[p.Task] = (c.Clock, c.First, p.Done, twentieth);
            if (!show) return;
            string eta = newly > 0 ? TimeSpan.FromSeconds(c.Clock.Elapsed.TotalSeconds / newly * (p.Total - p.Done)).ToString(@"hh\:mm\:ss", CultureInfo.InvariantCulture) : "--:--:--";
            stderr.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{DateTime.Now:HH:mm:ss} {Describe(p, withCount: true)} ({(p.Total <= 0 ? 100 : 100.0 * p.Done / p.Total):F0}%) ETA {eta}"));
        }
    }
}
