using System.Net;
using System.Text;
using System.Text.RegularExpressions;

namespace KeyValueLab.Study.Report;

/// <summary>A part of the report, rendered the same way to Markdown and to HTML.</summary>
public abstract record ReportBlock;

public sealed record HeadingBlock(int Level, string Text) : ReportBlock;

/// <summary>Text with two inline marks: **bold** and `code`.</summary>
public sealed record ParagraphBlock(string Text) : ReportBlock;

/// <summary>A list whose items may carry a nested list.</summary>
public sealed record ListBlock(IReadOnlyList<ListItem> Items) : ReportBlock;

public sealed record ListItem(string Text, IReadOnlyList<string>? Children = null);

/// <summary>A table for people: headers, text cells, which columns are numeric (right-aligned), and a caption.</summary>
public sealed record TextTableBlock(string Caption, IReadOnlyList<string> Headers, IReadOnlyList<IReadOnlyList<string>> Rows, IReadOnlySet<int> Numeric)
    : ReportBlock;

/// <summary>A figure: its file under figures/, the PNG bytes for the HTML page, alt text and caption.</summary>
public sealed record FigureBlock(string RelativePath, byte[] Png, string Alt, string Caption) : ReportBlock;

public sealed record CodeBlock(string Text, string Summary) : ReportBlock;

/// <summary>The report as a list of blocks, written as Markdown or as one self-contained HTML page.</summary>
public sealed class ReportDocument(string title)
{
    private readonly List<ReportBlock> _blocks = [];

    public string Title { get; } = title;
    public IReadOnlyList<ReportBlock> Blocks => _blocks;

    public void Add(ReportBlock block) => _blocks.Add(block);
    public void Heading(int level, string text) => _blocks.Add(new HeadingBlock(level, text));
    public void Paragraph(string text) => _blocks.Add(new ParagraphBlock(text));

    public string ToMarkdown()
    {
        var sb = new StringBuilder();
        sb.Append("# ").Append(Title).Append("\n\n");
        foreach (var block in _blocks)
        {
            switch (block)
            {
                case HeadingBlock h:
                    sb.Append(new string('#', h.Level)).Append(' ').Append(h.Text).Append("\n\n");
                    break;
                case ParagraphBlock p:
                    sb.Append(p.Text).Append("\n\n");
                    break;
                case ListBlock l:
                    foreach (var item in l.Items)
                    {
                        sb.Append("- ").Append(item.Text).Append('\n');
                        foreach (string child in item.Children ?? []) sb.Append("  - ").Append(child).Append('\n');
                    }
                    sb.Append('\n');
                    break;
                case TextTableBlock t:
                    sb.Append('*').Append(t.Caption).Append("*\n\n");
                    sb.Append("| ").Append(string.Join(" | ", t.Headers.Select(MarkdownCell))).Append(" |\n");
                    sb.Append('|').Append(string.Join('|', t.Headers.Select((_, i) => t.Numeric.Contains(i) ? "---:" : "---"))).Append("|\n");
                    foreach (var row in t.Rows)
                        sb.Append("| ").Append(string.Join(" | ", row.Select(MarkdownCell))).Append(" |\n");
                    sb.Append('\n');
                    break;
                case FigureBlock f:
                    sb.Append("![").Append(f.Alt.Replace("]", ")")).Append("](").Append(f.RelativePath).Append(")\n\n");
                    sb.Append('*').Append(f.Caption).Append("*\n\n");
                    break;
                case CodeBlock c:
                    sb.Append(c.Summary).Append(":\n\n```json\n").Append(c.Text.TrimEnd('\n')).Append("\n```\n\n");
                    break;
            }
        }
        return sb.ToString().TrimEnd('\n') + "\n";
    }

    public string ToHtml()
    {
        var sb = new StringBuilder();
        sb.Append("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
        sb.Append("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
        sb.Append("<title>").Append(Escape(Title)).Append("</title>\n<style>\n").Append(Css).Append("</style>\n</head>\n<body>\n<main>\n");
        sb.Append("<h1>").Append(Escape(Title)).Append("</h1>\n");
        foreach (var block in _blocks)
        {
            switch (block)
            {
                case HeadingBlock h:
                    sb.Append($"<h{h.Level}>").Append(Inline(h.Text)).Append($"</h{h.Level}>\n");
                    break;
                case ParagraphBlock p:
                    sb.Append("<p>").Append(Inline(p.Text)).Append("</p>\n");
                    break;
                case ListBlock l:
                    sb.Append("<ul>\n");
                    foreach (var item in l.Items)
                    {
                        sb.Append("<li>").Append(Inline(item.Text));
                        if (item.Children is { Count: > 0 } children)
                        {
                            sb.Append("\n<ul>\n");
                            foreach (string child in children) sb.Append("<li>").Append(Inline(child)).Append("</li>\n");
                            sb.Append("</ul>\n");
                        }
                        sb.Append("</li>\n");
                    }
                    sb.Append("</ul>\n");
                    break;
                case TextTableBlock t:
                    sb.Append("<div class=\"table-wrap\"><table>\n<caption>").Append(Inline(t.Caption)).Append("</caption>\n<thead><tr>");
                    for (int i = 0; i < t.Headers.Count; i++)
                        sb.Append(t.Numeric.Contains(i) ? "<th class=\"num\">" : "<th>").Append(Inline(t.Headers[i])).Append("</th>");
                    sb.Append("</tr></thead>\n<tbody>\n");
                    foreach (var row in t.Rows)
                    {
                        sb.Append("<tr>");
                        for (int i = 0; i < row.Count; i++)
                            sb.Append(t.Numeric.Contains(i) ? "<td class=\"num\">" : "<td>").Append(Inline(row[i])).Append("</td>");
                        sb.Append("</tr>\n");
                    }
                    sb.Append("</tbody>\n</table></div>\n");
                    break;
                case FigureBlock f:
                    // A figure wider than the column keeps its size and scrolls, rather than shrinking its labels.
                    bool wide = ReportFigures.LooksLikePng(f.Png, out int width, out _) && width > ReportFigures.WideFigure;
                    sb.Append(wide ? "<figure class=\"wide\">" : "<figure>").Append("\n<img src=\"data:image/png;base64,").Append(Convert.ToBase64String(f.Png))
                        .Append("\" alt=\"").Append(Escape(f.Alt)).Append("\">\n<figcaption>").Append(Inline(f.Caption)).Append("</figcaption>\n</figure>\n");
                    break;
                case CodeBlock c:
                    sb.Append("<details>\n<summary>").Append(Escape(c.Summary)).Append("</summary>\n<pre><code>")
                        .Append(Escape(c.Text.TrimEnd('\n'))).Append("</code></pre>\n</details>\n");
                    break;
            }
        }
        sb.Append("</main>\n</body>\n</html>\n");
        return sb.ToString();
    }

    private static string MarkdownCell(string s) => s.Replace("|", "\\|").Replace("\n", " ");

    private static string Escape(string s) => WebUtility.HtmlEncode(s);

    /// <summary>HTML-escapes, then turns **bold** and `code` into tags.</summary>
    private static string Inline(string s)
    {
        string html = Escape(s);
        html = Regex.Replace(html, @"\*\*(.+?)\*\*", "<strong>$1</strong>");
        return Regex.Replace(html, "`(.+?)`", "<code>$1</code>");
    }

    private const string Css = """
        body { margin: 0; background: #f6f7f9; color: #1d2330; font: 16px/1.55 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; }
        main { max-width: 1140px; margin: 0 auto; padding: 24px 32px 64px; background: #fff; box-shadow: 0 0 12px rgba(0,0,0,.06); }
        h1 { font-size: 1.9em; margin: .4em 0 .6em; }
        h2 { font-size: 1.4em; margin-top: 2em; padding-bottom: .2em; border-bottom: 2px solid #e3e6eb; }
        h3 { font-size: 1.15em; margin-top: 1.6em; }
        p, li { max-width: 75ch; }
        ul ul { margin: .2em 0 .4em; }
        code { font-family: "DejaVu Sans Mono", ui-monospace, monospace; font-size: .9em; background: #f0f2f5; padding: 0 .25em; border-radius: 3px; }
        .table-wrap { overflow-x: auto; margin: 1em 0 1.6em; }
        table { border-collapse: collapse; font-size: .88em; }
        caption { caption-side: top; text-align: left; font-style: italic; color: #4a5263; padding-bottom: .4em; }
        th, td { padding: .3em .6em; border-bottom: 1px solid #e3e6eb; text-align: left; white-space: nowrap; }
        th { background: #f0f2f5; font-weight: 600; }
        td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
        tbody tr:hover { background: #f8f9fb; }
        figure { margin: 1.2em 0 2em; }
        figure img { max-width: 100%; height: auto; border: 1px solid #e3e6eb; }
        figure.wide { overflow-x: auto; }
        figure.wide img { max-width: none; }
        figcaption { font-size: .92em; color: #4a5263; margin-top: .4em; max-width: 80ch; }
        details { margin: 1em 0; }
        pre { background: #f0f2f5; padding: 12px; overflow-x: auto; font-size: .85em; line-height: 1.4; }

        """;
}
