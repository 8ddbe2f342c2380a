using KeyValueLab.Study.Report;

namespace KeyValueLab.Tests.Study.Report;

/// <summary>The report's statistics against numbers worked out by hand.</summary>
public class ReportStatisticsTests
{
    [Fact]
    public void WilcoxonWithoutTiesMatchesHandComputation()
    {
        // Zero dropped; |d| ranks: 0.5→1, 1→2, 1.5→3, 2→4, 3→5; W+ = 3 + 4 + 5 = 12.
        // n = 5: E[W+] = 7.5, Var = 5·6·11/24 = 13.75, z = 4.5/√13.75 = 1.21356, p = erfc(z/√2) = 0.224916.
        var result = ReportStatistics.WilcoxonSignedRank([1.5, -0.5, 2, 3, -1, 0]);
        Assert.Equal(12, result.Statistic);
        Assert.Equal(0.224916, result.P, 5);
    }

    [Fact]
    public void WilcoxonWithTiesUsesAverageRanksAndReducedVariance()
    {
        // |1|×3 → rank 2, |2|×3 → rank 5, |3| → rank 7; W+ = 2 + 2 + 5 + 5 + 5 + 7 = 26.
        // n = 7: E = 14, Var = 7·8·15/24 − (24 + 24)/48 = 34, z = 12/√34 = 2.05798, p = 0.0395918.
        var result = ReportStatistics.WilcoxonSignedRank([1, 1, -1, 2, 2, 2, 3]);
        Assert.Equal(26, result.Statistic);
        Assert.Equal(0.0395918, result.P, 5);
    }

    [Fact]
    public void WilcoxonOfAllZeroDifferencesIsNotSignificant()
    {
        Assert.Equal(1, ReportStatistics.WilcoxonSignedRank([0, 0, 0]).P);
        Assert.Equal(1, ReportStatistics.WilcoxonSignedRank([]).P);
        // Sign flips give the same p-value.
        Assert.Equal(ReportStatistics.WilcoxonSignedRank([1, 2, -3, 4]).P, ReportStatistics.WilcoxonSignedRank([-1, -2, 3, -4]).P, 12);
    }

    [Fact]
    public void McNemarExactIsTheTwoSidedBinomialTail()
    {
        // b = 1, c = 9: P(X ≤ 1 | n = 10, ½) = 11/1024, two-sided 22/1024.
        Assert.Equal(22.0 / 1024, ReportStatistics.McNemarExact(1, 9).P, 12);
        Assert.Equal(22.0 / 1024, ReportStatistics.McNemarExact(9, 1).P, 12);
        Assert.Equal(2.0 / 32, ReportStatistics.McNemarExact(0, 5).P, 12);
        Assert.Equal(1, ReportStatistics.McNemarExact(5, 5).P);
        Assert.Equal(1, ReportStatistics.McNemarExact(0, 0).P);
        // Large n stays finite (log-space binomial): 400 vs 600 is far from balanced.
        Assert.InRange(ReportStatistics.McNemarExact(400, 600).P, 0, 1e-8);
    }

    [Fact]
    public void HarmonicMeanOfScores()
    {
        Assert.Equal(75, ReportStatistics.HarmonicMean(50, 100, 100), 12);
        Assert.Equal(40, ReportStatistics.HarmonicMean(40, 40, 40), 12);
        Assert.Equal(0, ReportStatistics.HarmonicMean(0, 100, 100));
    }

    [Fact]
    public void WilsonIntervalMatchesTheFormula()
    {
        var (low, high) = ReportStatistics.Wilson(8, 10);
        Assert.Equal(0.490157, low, 5);
        Assert.Equal(0.943319, high, 5);
        Assert.Equal((0.0, 1.0), ReportStatistics.Wilson(0, 0));
    }

    [Fact]
    public void QuantileInterpolatesLinearly()
    {
        Assert.Equal(1.75, ReportStatistics.Quantile([1, 2, 3, 4], 0.25), 12);
        Assert.Equal(4, ReportStatistics.Quantile([1, 2, 3, 4], 1), 12);
    }

    [Fact]
    public void BootstrapIsDeterministicAndItsIntervalContainsTheMean()
    {
        double[] values = [.. Enumerable.Range(0, 50).Select(i => (i * 37 % 11) * 10.0)];
        var a = ReportStatistics.BootstrapMean(values, 1000);
        var b = ReportStatistics.BootstrapMean(values, 1000);
        Assert.Equal(a, b);
        Assert.Equal(values.Average(), a.Value, 12);
        Assert.True(a.Low < a.Value && a.Value < a.High, $"{a}");
        // A different seed gives a (slightly) different interval, the same point estimate.
        var c = ReportStatistics.BootstrapMean(values, 1000, seed: 7);
        Assert.Equal(a.Value, c.Value);
        Assert.NotEqual(a.Low, c.Low);
        // Constant data: a degenerate interval at the constant.
        var constant = ReportStatistics.BootstrapMean([5, 5, 5], 1000);
        Assert.Equal(new Estimate(5, 5, 5), constant);
    }

    [Fact]
    public void BootstrapIntervalHasRoughlyTheNormalWidth()
    {
        // 0/100 scores, p = 0.3, n = 200: standard error 100·√(0.21/200) = 3.24, so the 95% interval is about ±6.35.
        double[] values = [.. Enumerable.Range(0, 200).Select(i => i % 10 < 3 ? 100.0 : 0.0)];
        var e = ReportStatistics.BootstrapMean(values, 2000);
        Assert.InRange(e.High - e.Low, 11.5, 14);
    }

    [Fact]
    public void PairedPermutationFindsAConsistentShiftAndNotANullOne()
    {
        double[] d = [.. Enumerable.Range(0, 20).Select(i => 1.0 + i % 3)];
        var shifted = ReportStatistics.PairedPermutation(d.Length, swap => d.Select((x, i) => swap[i] ? -x : x).Sum(), 2000);
        Assert.Equal(1.0 / 2001, shifted.P, 12);  // no random swap reaches the observed sum
        var none = ReportStatistics.PairedPermutation(5, _ => 0, 500);
        Assert.Equal(1, none.P);
    }

    [Fact]
    public void ErfcIsAccurate()
    {
        Assert.Equal(1, ReportStatistics.Erfc(0), 7);
        Assert.Equal(0.157299207, ReportStatistics.Erfc(1), 7);
        Assert.Equal(1.842700793, ReportStatistics.Erfc(-1), 7);
        Assert.Equal(0.05, ReportStatistics.TwoSidedNormalP(1.959964), 6);
    }

    [Theory]
    [InlineData(0.0123456, "0.0123")]
    [InlineData(0.5, "0.500")]
    [InlineData(1.0, "1.00")]
    [InlineData(0.09996, "0.100")]
    [InlineData(0.00123, "0.00123")]
    [InlineData(0.0000123456, "1.23e-05")]
    public void PValuesHaveThreeSignificantDigits(double p, string expected) => Assert.Equal(expected, ReportFormat.P(p));

    [Theory]
    [InlineData(12.345, "12.3")]
    [InlineData(-0.04, "0.0")]
    [InlineData(-2.26, "−2.3")]
    public void ScoresHaveOneDecimal(double x, string expected) => Assert.Equal(expected, ReportFormat.Score(x));

    [Fact]
    public void SplitMix64IsFixedByItsDefinition()
    {
        // First output for seed 0 of the reference implementation (Vigna's splitmix64.c).
        Assert.Equal(0xE220A8397B1DCDAFUL, new SplitMix64(0).Next());
    }
}
