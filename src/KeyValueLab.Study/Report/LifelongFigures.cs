using ScottPlot;

namespace KeyValueLab.Study.Report;

/// <summary>One line of a curve figure: a score after each number of edits; <see cref="Role"/> ("keys:up", "values", …) picks its
/// colour as in the bar charts, <see cref="Style"/> (0, 1, 2, …) its line pattern and marker, so a family's keys and values share a style.</summary>
public sealed record CurveSeries(string Name, IReadOnlyList<double> Edits, IReadOnlyList<double> Values, string? Role, int Style);

public static partial class ReportFigures
{
    private static readonly LinePattern[] Patterns = [LinePattern.Solid, LinePattern.Dashed, LinePattern.Dotted, LinePattern.DenselyDashed];
    private static readonly MarkerShape[] Shapes = [MarkerShape.FilledCircle, MarkerShape.FilledSquare, MarkerShape.FilledTriangleUp, MarkerShape.FilledDiamond];

    /// <summary>Scores against the number of edits as PNG bytes: one line per series, y from 0 to 100, the legend beside the plot.</summary>
    public static byte[] Curves(string title, string xLabel, string yLabel, IReadOnlyList<CurveSeries> series, int width, int height)
    {
        var plot = new Plot();
        if (SansFont is not null) plot.Font.Set(SansFont);
        var colours = ByRoleWithinStyle(series);
        double maxX = 1;
        for (int i = 0; i < series.Count; i++)
        {
            var s = series[i];
            if (s.Edits.Count == 0) continue;
            var line = plot.Add.Scatter(s.Edits.ToArray(), s.Values.ToArray());
            line.Color = colours[i];
            line.LineWidth = 2;
            line.LinePattern = Patterns[s.Style % Patterns.Length];
            line.MarkerShape = Shapes[s.Style % Shapes.Length];
            line.MarkerSize = 7;
            line.LegendText = s.Name;
            maxX = Math.Max(maxX, s.Edits.Max());
        }
        plot.Title(title);
        plot.XLabel(xLabel);
        plot.YLabel(yLabel);
        int legendPixels = 40 + 8 * series.Select(x => x.Name.Length).DefaultIfEmpty(1).Max();
        plot.ShowLegend(Edge.Right);
        plot.Axes.SetLimits(0, maxX * 1.04, -4, 104);
        return plot.GetImageBytes(width + legendPixels / 2, height, ImageFormat.Png);
    }

    /// <summary>Keys blue (gate green), values orange, as in the bar charts, when every series is a side and no two of one style
    /// share a colour; otherwise the palette in order.</summary>
    private static Color[] ByRoleWithinStyle(IReadOnlyList<CurveSeries> series)
    {
        if (!series.All(s => s.Role is "keys" or "keys:up" or "keys:gate" or "values")) return [.. series.Select((_, j) => Palette[j % Palette.Length])];
        var roles = series.Select(s => Colours([new BarSeries(s.Name, [], Role: s.Role)])[0]).ToArray();
        bool distinct = series.Select((s, i) => (s.Style, roles[i].ToHex())).Distinct().Count() == series.Count;
        return distinct ? roles : [.. series.Select((_, j) => Palette[j % Palette.Length])];
    }
}
