namespace KeyValueLab.Statistics;

/// <summary>A point estimate with its 95% interval.</summary>
public readonly record struct Estimate(double Value, double Low, double High)
{
    /// <summary>True when the interval lies entirely above 0 or entirely below 0.</summary>
    public bool ExcludesZero => Low > 0 || High < 0;
}

/// <summary>A test's result: its name, the statistic it computed and the two-sided p-value.</summary>
public sealed record TestResult(string Test, double Statistic, double P);
