using System.Globalization;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;

namespace KeyValueLab.Study.Report;

/// <summary>How a column's numbers are written to CSV and JSON.</summary>
public enum ColumnKind
{
    Text,
    Integer,
    /// <summary>Scores, accuracies and their differences (×100): three decimals.</summary>
    Score,
    /// <summary>p-values: three significant digits.</summary>
    P,
    /// <summary>Seconds, tokens per second and other measured rates: four decimals.</summary>
    Measured,
}

public sealed record TableColumn(string Key, ColumnKind Kind);

/// <summary>
/// A machine-readable table of the report (tables/NAME.csv and tables/NAME.json). Cells are strings, integers or
/// doubles; null, NaN and infinities are written as empty (CSV) or null (JSON). Output is invariant-culture, "\n"
/// line ends, and depends on nothing but the cells, so equal results give equal files.
/// </summary>
public sealed class ReportTable(string name, string title, IReadOnlyList<TableColumn> columns)
{
    private readonly List<object?[]> _rows = [];

    public string Name { get; } = name;
    public string Title { get; } = title;
    public IReadOnlyList<TableColumn> Columns { get; } = columns;
    public IReadOnlyList<object?[]> Rows => _rows;

    public void Add(params object?[] cells)
    {
        if (cells.Length != Columns.Count)
            throw new ArgumentException($"table {Name}: {cells.Length} cells for {Columns.Count} columns");
        _rows.Add(cells);
    }

    public string ToCsv()
    {
        var sb = new StringBuilder();
        sb.Append(string.Join(',', Columns.Select(c => c.Key))).Append('\n');
        foreach (var row in _rows)
            sb.Append(string.Join(',', row.Select((cell, i) => Quote(Format(cell, Columns[i].Kind) ?? "")))).Append('\n');
        return sb.ToString();
    }

    public string ToJson()
    {
        using var stream = new MemoryStream();
        var jsonOptions = new JsonWriterOptions { Indented = true, NewLine = "\n", Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
        using (var w = new Utf8JsonWriter(stream, jsonOptions))
        {
            w.WriteStartObject();
            w.WriteString("table", Name);
            w.WriteString("title", Title);
            w.WriteStartArray("rows");
            foreach (var row in _rows)
            {
                w.WriteStartObject();
                for (int i = 0; i < Columns.Count; i++)
                {
                    w.WritePropertyName(Columns[i].Key);
                    string? text = Format(row[i], Columns[i].Kind);
                    if (text is null) w.WriteNullValue();
                    else if (Columns[i].Kind == ColumnKind.Text || row[i] is string or bool) w.WriteStringValue(text);
                    else w.WriteRawValue(text);
                }
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(stream.ToArray()) + "\n";
    }

    /// <summary>The cell as its file text; null when missing.</summary>
    public static string? Format(object? cell, ColumnKind kind)
    {
        var inv = CultureInfo.InvariantCulture;
        switch (cell)
        {
            case null: return null;
            case string s: return s;
            case bool b: return b ? "true" : "false";
            case int or long: return Convert.ToInt64(cell, inv).ToString(inv);
            case double d when !double.IsFinite(d): return null;
            case double d:
                string text = kind switch
                {
                    ColumnKind.Integer => Math.Round(d).ToString("F0", inv),
                    ColumnKind.P => d.ToString("G3", inv),
                    ColumnKind.Measured => d.ToString("F4", inv),
                    _ => d.ToString("F3", inv),
                };
                return text.StartsWith('-') && text.TrimStart('-').All(c => c is '0' or '.') ? text[1..] : text;
            default: return Convert.ToString(cell, inv);
        }
    }

    private static string Quote(string s) =>
        s.IndexOfAny([',', '"', '\n', '\r']) < 0 ? s : "\"" + s.Replace("\"", "\"\"") + "\"";
}
