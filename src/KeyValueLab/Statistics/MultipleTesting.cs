namespace KeyValueLab.Statistics;

/// <summary>Corrections of p-values for a family of tests.</summary>
public static class MultipleTesting
{
    /// <summary>
    /// Holm–Bonferroni (Holm 1979) adjusted p-values, in the input's order: with the m p-values sorted ascending,
    /// p̃₍ᵢ₎ = max over j ≤ i of min(1, (m − j + 1)·p₍ⱼ₎). Rejecting where p̃ &lt; α controls the family-wise error at α;
    /// the same numbers as R's <c>p.adjust(p, "holm")</c>. NaN p-values are left out of the family and stay NaN.
    /// </summary>
    public static double[] Holm(IReadOnlyList<double> p)
    {
        var adjusted = new double[p.Count];
        var order = Enumerable.Range(0, p.Count).Where(i => !double.IsNaN(p[i])).OrderBy(i => p[i]).ThenBy(i => i).ToArray();
        int m = order.Length;
        double running = 0;
        for (int j = 0; j < m; j++)
        {
            running = Math.Max(running, Math.Min(1, (m - j) * p[order[j]]));
            adjusted[order[j]] = running;
        }
        for (int i = 0; i < p.Count; i++) if (double.IsNaN(p[i])) adjusted[i] = double.NaN;
        return adjusted;
    }
}
