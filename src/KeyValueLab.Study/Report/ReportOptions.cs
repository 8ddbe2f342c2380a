using KeyValueLab.Statistics;

namespace KeyValueLab.Study.Report;

/// <summary>How many random draws the report's intervals and tests use, and their seed.</summary>
public sealed record ReportOptions
{
    /// <summary>Bootstrap resamples per interval (the percentile interval needs 1,000 or more).</summary>
    public int Resamples { get; init; } = Bootstrap.DefaultResamples;
    /// <summary>Random swaps of the paired permutation tests.</summary>
    public int Permutations { get; init; } = 10000;
    public ulong Seed { get; init; } = Bootstrap.DefaultSeed;
    /// <summary>Significance level a claim's test must reach, besides an interval that excludes 0, to count as held.</summary>
    public double Alpha { get; init; } = 0.05;
    /// <summary>Figure size in pixels.</summary>
    public int FigureWidth { get; init; } = 1000;
    public int FigureHeight { get; init; } = 520;
}
