using System.Globalization;
using KeyValueLab.Statistics;

namespace KeyValueLab.Study.Report;

/// <summary>How the report prints numbers: invariant culture, scores to 1 decimal, p-values to 3 significant digits.</summary>
public static class ReportFormat
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;
    public const string Missing = "–";

    /// <summary>A score or accuracy (×100): one decimal.</summary>
    public static string Score(double x) => double.IsFinite(x) ? Clean(x.ToString("F1", Inv)) : Missing;

    /// <summary>A difference with its sign: "+3.2", "−0.4".</summary>
    public static string Signed(double x) => !double.IsFinite(x) ? Missing : x > 0 && Score(x) != "0.0" ? "+" + Score(x) : Score(x);

    /// <summary>"12.3 [10.1, 14.2]".</summary>
    public static string WithInterval(Estimate e) =>
        double.IsFinite(e.Low) ? $"{Score(e.Value)} [{Score(e.Low)}, {Score(e.High)}]" : Score(e.Value);

    public static string SignedWithInterval(Estimate e) =>
        double.IsFinite(e.Low) ? $"{Signed(e.Value)} [{Score(e.Low)}, {Score(e.High)}]" : Signed(e.Value);

    /// <summary>Three significant digits: 0.0123, 0.456, 1.00; below 0.001 in scientific notation (1.23e-05).</summary>
    public static string P(double p)
    {
        if (double.IsNaN(p)) return Missing;
        if (p < 1e-16) return "< 1e-16";
        if (p < 0.001) return p.ToString("0.00e+00", Inv);
        int magnitude = (int)Math.Floor(Math.Log10(p));
        double rounded = Math.Round(p, 2 - magnitude, MidpointRounding.AwayFromZero);
        if (rounded >= Math.Pow(10, magnitude + 1)) magnitude++;  // 0.09996 → 0.100, not 0.1000
        int decimals = Math.Max(2, 2 - magnitude);
        return Math.Round(p, decimals, MidpointRounding.AwayFromZero).ToString("F" + decimals, Inv);
    }

    /// <summary>"p = 0.0123", or "p &lt; 1e-16" where the p-value underflows.</summary>
    public static string PClause(double p) => P(p) is var text && text.StartsWith('<') ? "p " + text : "p = " + text;

    /// <summary>Seconds to about three significant digits: 0 decimals from 100 s, 1 from 10 s, 2 from 1 s, else 3.</summary>
    public static string Seconds(double s, bool signed = false) => Seconds(s, SecondsDecimals(s), signed);

    /// <summary>A mean and its interval in seconds, all three with the decimals the mean needs.</summary>
    public static string SecondsWithInterval(Estimate e, bool signed = false)
    {
        int decimals = SecondsDecimals(e.Value);
        string value = Seconds(e.Value, decimals, signed);
        return double.IsFinite(e.Low) ? $"{value} [{Seconds(e.Low, decimals, false)}, {Seconds(e.High, decimals, false)}]" : value;
    }

    private static int SecondsDecimals(double s)
    {
        double a = Math.Abs(s);
        return a >= 100 ? 0 : a >= 10 ? 1 : a >= 1 ? 2 : 3;
    }

    private static string Seconds(double s, int decimals, bool signed)
    {
        if (!double.IsFinite(s)) return Missing;
        string text = Clean(s.ToString("F" + decimals, Inv));
        return signed && s > 0 && text.Any(c => c is >= '1' and <= '9') ? "+" + text : text;
    }

    /// <summary>Bytes as MiB or GiB; "–" when unknown (0).</summary>
    public static string Bytes(long bytes) =>
        bytes <= 0 ? Missing : bytes >= 1L << 30 ? $"{(bytes / (double)(1L << 30)).ToString("F2", Inv)} GiB" : $"{(bytes / (double)(1L << 20)).ToString("F1", Inv)} MiB";

    /// <summary>12,345,678 with thin grouping.</summary>
    public static string Count(long n) => n.ToString("N0", Inv);

    /// <summary>Typographic minus for negative numbers; "-0.0" becomes "0.0".</summary>
    private static string Clean(string s)
    {
        if (s.StartsWith('-'))
            s = s.TrimStart('-').All(c => c is '0' or '.') ? s[1..] : "−" + s[1..];
        return s;
    }
}
