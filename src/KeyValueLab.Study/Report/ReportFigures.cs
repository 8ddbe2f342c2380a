using KeyValueLab.Statistics;
using ScottPlot;
using ScottPlot.Plottables;

namespace KeyValueLab.Study.Report;

/// <summary>One series of a grouped bar chart: a value (with optional interval) per group, null where it has none; optional
/// points to mark (single seeds); and a role ("keys:up", "values", "q,v", …) that picks a colour the reader can follow across figures.</summary>
public sealed record BarSeries(string Name, IReadOnlyList<Estimate?> Values, IReadOnlyList<IReadOnlyList<double>>? Points = null, string? Role = null);

/// <summary>A reference level per group (e.g. a task's majority-class rate), drawn as a horizontal line across the group's bars.</summary>
public sealed record GroupReference(string Name, IReadOnlyList<double?> Values, bool Dashed);

/// <summary>
/// The report's figures, drawn with ScottPlot: grouped bars with 95% interval whiskers, a legend outside the plot on
/// the right, a sans-serif font when the machine has one. Rendering depends only on the data, so equal results give
/// equal PNGs on the same machine.
/// </summary>
public static partial class ReportFigures
{
    private static readonly Color[] Palette =
    [
        Color.FromHex("#1f77b4"), Color.FromHex("#2ca02c"), Color.FromHex("#9467bd"), Color.FromHex("#ff7f0e"),
        Color.FromHex("#d62728"), Color.FromHex("#8c564b"), Color.FromHex("#e377c2"), Color.FromHex("#7f7f7f"),
        Color.FromHex("#bcbd22"), Color.FromHex("#17becf"),
    ];

    private static readonly string? SansFont = FindSansFont();

    /// <summary>Figures wider than this (pixels) scroll in the HTML page instead of shrinking; their legend goes on top.</summary>
    public const int WideFigure = 1100;

    /// <summary>
    /// A grouped bar chart as PNG bytes. <paramref name="zeroLine"/> draws y = 0 (differences); <paramref name="yFromZero"/>
    /// starts the axis at 0 (scores, seconds). Series with <see cref="BarSeries.Points"/> also mark each point (seeds).
    /// </summary>
    public static byte[] GroupedBars(string title, string xLabel, string yLabel, IReadOnlyList<string> groups, IReadOnlyList<BarSeries> series,
        int width, int height, bool zeroLine = false, bool yFromZero = false, double? yMax = null, double minHalfRange = 0,
        IReadOnlyList<GroupReference>? references = null)
    {
        var plot = new Plot();
        if (SansFont is not null) plot.Font.Set(SansFont);
        int s = series.Count;
        var colors = Colours(series);
        double slot = s + 1.0;  // s bars and one bar's gap between groups
        var bars = new List<Bar>();
        var whiskers = new List<ErrorBar>();
        var markers = new List<Coordinates>();
        double top = double.NegativeInfinity, bottom = double.PositiveInfinity;
        for (int j = 0; j < s; j++)
        {
            var color = colors[j];
            var xs = new List<double>();
            var ys = new List<double>();
            var up = new List<double>();
            var down = new List<double>();
            for (int g = 0; g < groups.Count; g++)
            {
                if (series[j].Values[g] is not { } e || !double.IsFinite(e.Value)) continue;
                double x = g * slot + j;
                // A darker outline keeps a bar of height 0 visible as a coloured line.
                bars.Add(new Bar { Position = x, Value = e.Value, FillColor = color, LineColor = color.Darken(0.35), LineWidth = 1.5f, Size = 0.9 });
                top = Math.Max(top, e.Value);
                bottom = Math.Min(bottom, e.Value);
                if (double.IsFinite(e.Low) && double.IsFinite(e.High))
                {
                    xs.Add(x);
                    ys.Add(e.Value);
                    up.Add(Math.Max(0, e.High - e.Value));
                    down.Add(Math.Max(0, e.Value - e.Low));
                    top = Math.Max(top, e.High);
                    bottom = Math.Min(bottom, e.Low);
                }
                if (series[j].Points is { } points)
                    foreach (double p in points[g])
                    {
                        markers.Add(new Coordinates(x, p));
                        top = Math.Max(top, p);
                        bottom = Math.Min(bottom, p);
                    }
            }
            if (xs.Count > 0)
                whiskers.Add(new ErrorBar(xs, ys, null, null, up, down) { Color = Colors.Black, LineWidth = 1.2f, CapSize = 6 });
            plot.Legend.ManualItems.Add(new LegendItem { LabelText = series[j].Name, FillColor = color });
        }
        // Bars first so that whiskers and seed markers are drawn over them.
        plot.Add.Bars(bars);
        foreach (var w in whiskers) plot.Add.Plottable(w);
        if (markers.Count > 0) plot.Add.Markers(markers, MarkerShape.OpenCircle, 7, Colors.Black);
        foreach (var reference in references ?? [])
        {
            var pattern = reference.Dashed ? LinePattern.Dashed : LinePattern.Dotted;
            bool drawn = false;
            for (int g = 0; g < groups.Count && g < reference.Values.Count; g++)
            {
                if (reference.Values[g] is not double y || !double.IsFinite(y)) continue;
                var line = plot.Add.Line(g * slot - 0.5, y, g * slot + s - 0.5, y);
                line.LineColor = Colors.Black;
                line.LineWidth = 1.5f;
                line.LinePattern = pattern;
                top = Math.Max(top, y);
                bottom = Math.Min(bottom, y);
                drawn = true;
            }
            if (drawn)
                plot.Legend.ManualItems.Add(new LegendItem { LabelText = reference.Name, LineColor = Colors.Black, LineWidth = 1.5f, LinePattern = pattern });
        }
        if (series.Any(x => x.Points is not null))
            plot.Legend.ManualItems.Add(new LegendItem { LabelText = "one seed", MarkerShape = MarkerShape.OpenCircle, MarkerColor = Colors.Black, MarkerSize = 7 });

        // Room for every group's widest tick-label line and a legend column; never narrower than asked.
        int longest = groups.SelectMany(g => g.Split('\n')).Select(l => l.Length).DefaultIfEmpty(1).Max();
        double groupPixels = Math.Max(slot * 14, longest * 7.5 + 12);
        int legendPixels = 40 + 8 * series.Max(x => x.Name.Length);
        width = Math.Max(width, (int)Math.Ceiling(groups.Count * groupPixels + 80 + legendPixels));
        if (width > WideFigure) width = Math.Max(WideFigure + 1, (int)Math.Ceiling(groups.Count * groupPixels + 80));
        plot.Axes.Bottom.SetTicks([.. groups.Select((_, g) => g * slot + (s - 1) / 2.0)], [.. groups]);
        plot.Axes.Bottom.MajorTickStyle.Length = 0;
        plot.Grid.XAxisStyle.MajorLineStyle.Width = 0;
        if (zeroLine) plot.Add.HorizontalLine(0, 1.2f, Colors.Gray, LinePattern.Dashed);
        plot.Title(title);
        plot.XLabel(xLabel);
        plot.YLabel(yLabel);
        // Beside the plot when it fits the page; above a wide plot (which the page scrolls) so the key stays in view.
        bool wide = width > WideFigure;
        if (wide) plot.Legend.Orientation = Orientation.Horizontal;
        plot.ShowLegend(wide ? Edge.Top : Edge.Right);

        if (!double.IsFinite(top)) (top, bottom) = (1, 0);
        double low = yFromZero ? 0 : Math.Min(0, bottom), high = Math.Max(yMax ?? top, top);
        if (zeroLine) high = Math.Max(0, high);
        if (minHalfRange > 0)
        {
            high = Math.Max(high, minHalfRange);
            if (!yFromZero) low = Math.Min(low, -minHalfRange);
        }
        if (bars.Count > 0 && top == 0 && bottom == 0)
            plot.Add.Annotation(zeroLine ? "every difference is 0" : "every value is 0", Alignment.UpperCenter);
        double pad = (high - low) * 0.06;
        if (pad <= 0) pad = 1;
        plot.Axes.SetLimits(-0.8, (groups.Count - 1) * slot + s - 0.2, yFromZero ? 0 : low - pad, high + pad);
        return plot.GetImageBytes(width, height, ImageFormat.Png);
    }

    /// <summary>Keys blue (gate green), values orange, the q,v baseline grey, when every series has a role and no two share a
    /// colour; otherwise the palette in order.</summary>
    private static Color[] Colours(IReadOnlyList<BarSeries> series)
    {
        static string? ForRole(string? role) => role?.TrimStart('+') switch
        {
            "keys" or "keys:up" => "#1f77b4",
            "keys:gate" => "#2ca02c",
            "values" => "#ff7f0e",
            "q,v" => "#7f7f7f",
            _ => null,
        };
        var byRole = series.Select(x => ForRole(x.Role)).ToList();
        if (byRole.All(c => c is not null) && byRole.Distinct().Count() == byRole.Count)
            return [.. byRole.Select(c => Color.FromHex(c!))];
        return [.. series.Select((_, j) => Palette[j % Palette.Length])];
    }

    /// <summary>True when the bytes start with the PNG signature and the IHDR chunk gives a positive size.</summary>
    public static bool LooksLikePng(byte[] bytes, out int width, out int height)
    {
        width = height = 0;
        ReadOnlySpan<byte> signature = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A];
        if (bytes.Length < 24 || !bytes.AsSpan(0, 8).SequenceEqual(signature) || !bytes.AsSpan(12, 4).SequenceEqual("IHDR"u8)) return false;
        width = System.Buffers.Binary.BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(16, 4));
        height = System.Buffers.Binary.BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(20, 4));
        return width > 0 && height > 0;
    }

    /// <summary>ScottPlot falls back to a serif face; a sans face reads better in small figures. GetTypeface returns
    /// its fallback when a family is missing, so the family name is compared.</summary>
    private static string? FindSansFont()
    {
        foreach (string name in (string[])["DejaVu Sans", "Liberation Sans", "Arial", "Helvetica"])
        {
            try
            {
                if (string.Equals(Fonts.GetTypeface(name, false, false)?.FamilyName, name, StringComparison.OrdinalIgnoreCase)) return name;
            }
            catch (Exception)
            {
                return null;  // no usable font backend; ScottPlot's default will do
            }
        }
        return null;
    }
}
