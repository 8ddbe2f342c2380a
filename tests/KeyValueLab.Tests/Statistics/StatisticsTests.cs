using KeyValueLab.Statistics;
using Xunit.Abstractions;

namespace KeyValueLab.Tests.Statistics;

/// <summary>
/// The statistics module against worked values from published sources: textbook and documentation examples, quoted
/// with their source, and values computed with SciPy 1.10.1 (Debian 12's python3-scipy) where no book prints one;
/// tests/KeyValueLab.Tests/Statistics/reference_values.py recomputes every one of those.
/// </summary>
public class StatisticsTests(ITestOutputHelper output)
{
    /// <summary>Darwin's Zea mays data as Fisher (1935, The Design of Experiments, §17) gives them: cross- minus
    /// self-fertilised height per pair, in eighths of an inch.</summary>
    private static readonly double[] Darwin = [49, -67, 8, 16, 6, 23, 28, 41, 14, 29, 56, 24, 75, 60, -48];

    [Fact]
    public void ExactWilcoxonMatchesTheScipyDocumentationExample()
    {
        // scipy.stats.wilcoxon docs, Darwin's data: two-sided statistic min(W+, W−) = 24, p = 0.041259765625;
        // alternative="greater": W+ = 96, p = 0.0206298828125 (exact, no ties).
        var result = PairedTests.WilcoxonSignedRank(Darwin);
        Assert.Equal(PairedTests.ExactWilcoxon, result.Test);
        Assert.Equal(96, result.Statistic);
        Assert.Equal(0.041259765625, result.P, 12);
    }

    [Fact]
    public void ExactWilcoxonMatchesTheRDocumentationExample()
    {
        // R's ?wilcox.test, depression scale (Hollander & Wolfe 1973, p. 29): paired, alternative "greater":
        // V = 40, p-value = 0.01953; two-sided, twice that, 0.0390625 (SciPy agrees).
        double[] x = [1.83, 0.50, 1.62, 2.48, 1.68, 1.88, 1.55, 3.06, 1.30];
        double[] y = [0.878, 0.647, 0.598, 2.05, 1.06, 1.29, 1.06, 3.14, 1.29];
        var result = PairedTests.WilcoxonSignedRank([.. x.Zip(y, (a, b) => a - b)]);
        Assert.Equal(40, result.Statistic);
        Assert.Equal(0.0390625, result.P, 12);
    }

    [Fact]
    public void ExactWilcoxonWithTiesIsTheConditionalDistribution()
    {
        // |1|×3 → rank 2, |2|×3 → rank 5, |3| → rank 7; W+ = 26. Enumerating all 2⁷ sign patterns of these midranks,
        // 8 of 128 are at least as far from the mean 14: p = 0.0625 (reference_values.py). The zero in the second
        // list is dropped first: W+ = 12 of ranks 1..5, p = 10/32.
        Assert.Equal(new TestResult(PairedTests.ExactWilcoxon, 26, 0.0625), PairedTests.WilcoxonSignedRank([1, 1, -1, 2, 2, 2, 3]));
        Assert.Equal(new TestResult(PairedTests.ExactWilcoxon, 12, 0.3125), PairedTests.WilcoxonSignedRank([1.5, -0.5, 2, 3, -1, 0]));
    }

    [Fact]
    public void LargeWilcoxonUsesTheNormalApproximationWithTieAndContinuityCorrections()
    {
        // 120 differences, 13 zeros, many ties. SciPy: wilcoxon(d, method="approx", correction=True,
        // zero_method="wilcox") gives p = 6.18848253318e-06; W+ = 4335.5 (reference_values.py).
        double[] d = [.. Enumerable.Range(0, 120).Select(i => (i * 7 % 9 - 3) * 0.5 + (i % 5 == 0 ? 0.5 : 0))];
        var result = PairedTests.WilcoxonSignedRank(d);
        Assert.Equal(PairedTests.Wilcoxon, result.Test);
        Assert.Equal(4335.5, result.Statistic);
        // Relative bound: the erfc fit is good to 1.2e-7 relative (Numerical Recipes §6.2.2).
        Assert.Equal(6.18848253318e-06, result.P, 6.18848253318e-06 * 1e-6);
    }

    [Fact]
    public void WilcoxonOfAllZeroDifferencesIsNotSignificant()
    {
        Assert.Equal(1, PairedTests.WilcoxonSignedRank([0, 0, 0]).P);
        Assert.Equal(1, PairedTests.WilcoxonSignedRank([]).P);
        Assert.Equal(PairedTests.WilcoxonSignedRank([1, 2, -3, 4]).P, PairedTests.WilcoxonSignedRank([-1, -2, 3, -4]).P, 12);
    }

    [Fact]
    public void McNemarExactMatchesThePublishedExample()
    {
        // Fagerland, Lydersen & Laake (2013, BMC Med Res Methodol 13:91), airway hyper-responsiveness before and after
        // stem cell transplantation: b = 1, c = 7, exact conditional p = 0.070 (2·9/256 = 0.0703125; SciPy binomtest).
        Assert.Equal(0.0703125, PairedTests.McNemarExact(1, 7).P, 12);
        Assert.Equal(0.0703125, PairedTests.McNemarExact(7, 1).P, 12);
        Assert.Equal(22.0 / 1024, PairedTests.McNemarExact(1, 9).P, 12);
        Assert.Equal(1, PairedTests.McNemarExact(5, 5).P);
        Assert.Equal(1, PairedTests.McNemarExact(0, 0).P);
        // Large n stays finite (log-space binomial): 400 vs 600 is far from balanced.
        Assert.InRange(PairedTests.McNemarExact(400, 600).P, 0, 1e-8);
    }

    [Fact]
    public void ExactPermutationTestReproducesFishersCount()
    {
        // Fisher (1935, §21) on Darwin's data: of the 2¹⁵ = 32,768 sign patterns, 1,726 give a sum at least as far
        // from 0 as the observed 314: two-sided p = 0.05267.
        var result = PairedTests.PairedPermutation(Darwin.Length, swap => Darwin.Select((x, i) => swap[i] ? -x : x).Sum(), 1000);
        Assert.Equal("exact paired permutation", result.Test);
        Assert.Equal(314, result.Statistic);
        Assert.Equal(1726.0 / 32768, result.P, 12);
    }

    [Fact]
    public void MonteCarloPermutationTestApproachesTheExactValue()
    {
        // 20 pairs: exact p over all 2²⁰ patterns is 0.0415688 (reference_values.py, numpy enumeration). With 20,000
        // random patterns the Monte-Carlo p has standard error √(0.0416·0.958/20000) = 0.0014; ±0.006 is over 4 SE.
        double[] x = [.. Enumerable.Range(0, 20).Select(i => i * 13 % 7 - 2.5 + 0.4)];
        var result = PairedTests.PairedPermutation(x.Length, swap => x.Select((v, i) => swap[i] ? -v : v).Sum(), 20000);
        Assert.Equal("paired permutation", result.Test);
        Assert.Equal(0.0415688, result.P, 0.006);
        Assert.Equal(1, PairedTests.PairedPermutation(5, _ => 0, 500).P);
    }

    [Fact]
    public void WilsonIntervalMatchesNewcombesTable()
    {
        // Newcombe (1998, Stat Med 17:857), Table I, method 3 (score interval without continuity correction).
        (int K, int N, double Low, double High)[] table = [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0000, 0.1611), (1, 29, 0.0061, 0.1718)];
        foreach (var (k, n, low, high) in table)
        {
            var (l, h) = Descriptive.Wilson(k, n);
            Assert.Equal(low, l, 0.00005 + 1e-12);  // the table prints four decimals
            Assert.Equal(high, h, 0.00005 + 1e-12);
        }
        Assert.Equal((0.0, 1.0), Descriptive.Wilson(0, 0));
    }

    [Fact]
    public void HolmMatchesTheWorkedExample()
    {
        // Holm (1979); the example of Wikipedia's "Holm–Bonferroni method": p = 0.01, 0.04, 0.03, 0.005 at α = 0.05
        // rejects H1 and H4 only. Adjusted (R's p.adjust "holm"): sorted 0.005·4 = 0.02, 0.01·3 = 0.03,
        // 0.03·2 = 0.06, max(0.04·1, 0.06) = 0.06.
        var adjusted = MultipleTesting.Holm([0.01, 0.04, 0.03, 0.005]);
        Assert.Equal([0.03, 0.06, 0.06, 0.02], adjusted.Select(p => Math.Round(p, 12)));
        Assert.Equal([1.0, 1.0], MultipleTesting.Holm([0.6, 0.9]));
        Assert.True(double.IsNaN(MultipleTesting.Holm([0.01, double.NaN])[1]));
        Assert.Equal(0.01, MultipleTesting.Holm([0.01, double.NaN])[0], 12);  // a family of one
    }

    [Fact]
    public void HarmonicMeanOfScores()
    {
        Assert.Equal(75, Descriptive.HarmonicMean(50, 100, 100), 12);
        Assert.Equal(40, Descriptive.HarmonicMean(40, 40, 40), 12);
        Assert.Equal(0, Descriptive.HarmonicMean(0, 100, 100));
    }

    [Fact]
    public void QuantileIsType7()
    {
        // numpy.percentile docs: a = [[10, 7, 4], [3, 2, 1]], median of all = 3.5; R's quantile(1:4, 0.25) = 1.75.
        Assert.Equal(3.5, Bootstrap.Quantile([1, 2, 3, 4, 7, 10], 0.5), 12);
        Assert.Equal(1.75, Bootstrap.Quantile([1, 2, 3, 4], 0.25), 12);
        Assert.Equal(4, Bootstrap.Quantile([1, 2, 3, 4], 1), 12);
    }

    [Fact]
    public void NormalTailsAndQuantilesMatchScipy()
    {
        Assert.Equal(1, Normal.Erfc(0), 7);
        Assert.Equal(0.157299207, Normal.Erfc(1), 7);
        Assert.Equal(1.842700793, Normal.Erfc(-1), 7);
        Assert.Equal(0.05, Normal.TwoSidedP(1.959964), 6);
        // scipy.stats.norm.ppf; Acklam's approximation is good to 1.2e-9 relative.
        Assert.Equal(1.959963984540054, Normal.Quantile(0.975), 1.2e-9 * 1.959963984540054);
        Assert.Equal(0.8416212335729143, Normal.Quantile(0.8), 1.2e-9 * 0.8416212335729143);
        Assert.Equal(-3.090232306167813, Normal.Quantile(0.001), 1.2e-9 * 3.090232306167813);
        Assert.Equal(-0.5244005127080409, Normal.Quantile(0.3), 1.2e-9 * 0.5244005127080409);
    }

    [Fact]
    public void BootstrapIsDeterministicAndItsIntervalContainsTheMean()
    {
        double[] values = [.. Enumerable.Range(0, 50).Select(i => (i * 37 % 11) * 10.0)];
        var a = Bootstrap.Mean(values, 1000);
        Assert.Equal(a, Bootstrap.Mean(values, 1000));
        Assert.Equal(values.Average(), a.Value, 12);
        Assert.True(a.Low < a.Value && a.Value < a.High, $"{a}");
        var c = Bootstrap.Mean(values, 1000, seed: 7);
        Assert.Equal(a.Value, c.Value);
        Assert.NotEqual(a.Low, c.Low);
        Assert.Equal(new Estimate(5, 5, 5), Bootstrap.Mean([5, 5, 5], 1000));
    }

    [Fact]
    public void BootstrapIntervalHasTheNormalWidth()
    {
        // 0/100 scores, p = 0.3, n = 200: standard error 100·√(0.21/200) = 3.24, so the 95% interval is about ±6.35.
        double[] values = [.. Enumerable.Range(0, 200).Select(i => i % 10 < 3 ? 100.0 : 0.0)];
        var e = Bootstrap.Mean(values, 2000);
        Assert.InRange(e.High - e.Low, 11.5, 14);
    }

    [Fact]
    public void OneClusterHierarchicalBootstrapIsThePlainBootstrap()
    {
        double[] values = [.. Enumerable.Range(0, 40).Select(i => (i * 17 % 13) * 1.5)];
        var clustered = Bootstrap.ClusteredMean([values]);
        Assert.Equal(Bootstrap.Mean(values), clustered.Pooled);
        Assert.Equal([values.Average()], clustered.PerCluster);
        Assert.True(double.IsNaN(clustered.BetweenClusterSd));
    }

    [Fact]
    public void HierarchicalBootstrapCoversTheTrueMeanAtTheNominalRate()
    {
        // 1,000 simulated studies of K = 30 clusters × m = 5 cases: x = μ + u + e with u ~ N(0, 2²) between clusters
        // and e ~ N(0, 2²) within, μ = 10. The 95% interval (500 resamples each, to stay fast) must cover μ in 93–97%
        // of them (binomial SE at 95%: 0.7 points).
        const int studies = 1000, k = 30, m = 5;
        const double mu = 10, sdBetween = 2, sdWithin = 2;
        var random = new SplitMix64(42);
        int covered = 0;
        double spread = 0;
        for (int s = 0; s < studies; s++)
        {
            var clusters = new double[k][];
            for (int c = 0; c < k; c++)
            {
                double u = sdBetween * random.NextNormal();
                clusters[c] = [.. Enumerable.Range(0, m).Select(_ => mu + u + sdWithin * random.NextNormal())];
            }
            var e = Bootstrap.ClusteredMean(clusters, resamples: 500, seed: (ulong)s);
            if (e.Pooled.Low <= mu && mu <= e.Pooled.High) covered++;
            spread += e.BetweenClusterSd;
        }
        output.WriteLine($"covered {covered} of {studies}; mean between-cluster SD {spread / studies:F3}");
        Assert.InRange(covered, 930, 970);
        // The spread of cluster means estimates √(σ_b² + σ_w²/m) = √4.8 = 2.19 (a little less: E[s] < σ).
        Assert.InRange(spread / studies, 2.05, 2.25);
    }

    [Fact]
    public void PlainBootstrapOfClusteredCasesIsTooNarrow()
    {
        // The reason for the hierarchical bootstrap: treating the 150 cases above as independent covers μ far less
        // often than 95%: the interval ignores the between-cluster variance, its SE is about √(8/150) against the
        // true √(4.8/30), so it covers about 74%. Same simulation, fewer studies (binomial SE 3 points).
        const int studies = 200, k = 30, m = 5;
        var random = new SplitMix64(43);
        int covered = 0;
        for (int s = 0; s < studies; s++)
        {
            var all = new List<double>();
            for (int c = 0; c < k; c++)
            {
                double u = 2 * random.NextNormal();
                for (int i = 0; i < m; i++) all.Add(10 + u + 2 * random.NextNormal());
            }
            var e = Bootstrap.Mean(all, 500, (ulong)s);
            if (e.Low <= 10 && 10 <= e.High) covered++;
        }
        output.WriteLine($"covered {covered} of {studies}");
        Assert.InRange(covered, 0, 0.85 * studies);
    }

    [Fact]
    public void VarianceComponentsRecoverTheSimulatedOnes()
    {
        // 300 clusters × 30 cases, σ_b = 3, σ_w = 5: the method of moments recovers σ_b² = 9 and σ_w² = 25 within
        // sampling error (relative SE of σ_b² about √(2/299)·(1 + 25/(30·9)) = 9%; of σ_w² about 1.5%).
        var random = new SplitMix64(7);
        var clusters = Enumerable.Range(0, 300).Select(_ =>
        {
            double u = 3 * random.NextNormal();
            return (IReadOnlyList<double>)[.. Enumerable.Range(0, 30).Select(_ => 1 + u + 5 * random.NextNormal())];
        }).ToList();
        var v = VarianceComponents.Of(clusters);
        Assert.Equal(300, v.Clusters);
        Assert.InRange(v.Within, 25 * 0.95, 25 * 1.05);
        Assert.InRange(v.Between, 9 * 0.7, 9 * 1.3);
        Assert.True(double.IsNaN(VarianceComponents.Of([clusters[0]]).Between));
    }

    [Fact]
    public void MinimumDetectableDifferenceHasEightyPercentPower()
    {
        // True σ_b = 2, σ_w = 10, K = 40 organisms × m = 25 cases: MDD = (1.96 + 0.8416)·√(4/40 + 100/1000) = 1.2529.
        // 1,000 simulated studies with that true difference, each tested with z = mean of cluster means / (their SD/√K):
        // about 80% reject at α = 0.05 (binomial SE 1.3 points; the t vs z difference at 39 df adds about 1).
        var truth = new VarianceComponents(40, 1000, Within: 100, Between: 4);
        double mdd = Power.MinimumDetectableDifference(truth, clusters: 40, casesPerCluster: 25);
        Assert.Equal(2.8016 * Math.Sqrt(0.2), mdd, 1e-3);
        var random = new SplitMix64(11);
        int rejected = 0;
        for (int s = 0; s < 1000; s++)
        {
            var means = Enumerable.Range(0, 40).Select(_ =>
            {
                double u = 2 * random.NextNormal();
                return Enumerable.Range(0, 25).Average(_ => mdd + u + 10 * random.NextNormal());
            }).ToArray();
            double z = means.Average() / Math.Sqrt(Descriptive.Variance(means) / 40);
            if (Normal.TwoSidedP(z) < 0.05) rejected++;
        }
        Assert.InRange(rejected, 760, 850);
        // More organisms detect less; one organism's unknown between-cluster variance counts as 0.
        Assert.True(Power.MinimumDetectableDifference(truth, 80, 25) < mdd);
        var single = new VarianceComponents(1, 25, 100, double.NaN);
        Assert.Equal(2.8016 * Math.Sqrt(100.0 / 25), Power.MinimumDetectableDifference(single, 1, 25), 1e-3);
    }

    [Fact]
    public void SplitMix64IsFixedByItsDefinition()
    {
        // First output for seed 0 of the reference implementation (Vigna's splitmix64.c).
        Assert.Equal(0xE220A8397B1DCDAFUL, new SplitMix64(0).Next());
    }
}
