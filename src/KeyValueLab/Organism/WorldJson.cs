using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace KeyValueLab.Organism;

/// <summary>Byte-stable JSON and text writing for the world's files: UTF-8 without BOM, "\n" line ends, fixed key order.</summary>
internal static class WorldJson
{
    public static readonly JsonSerializerOptions Indented = new() { WriteIndented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping, NewLine = "\n" };
    public static readonly JsonSerializerOptions Compact = new() { WriteIndented = false, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
    public static readonly UTF8Encoding Utf8 = new(encoderShouldEmitUTF8Identifier: false);

    public static void WriteJson(string path, JsonNode node) => WriteText(path, node.ToJsonString(Indented) + "\n");

    public static void WriteJsonLines(string path, IEnumerable<JsonNode> rows) =>
        WriteText(path, string.Concat(rows.Select(r => r.ToJsonString(Compact) + "\n")));

    public static void WriteText(string path, string text)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        File.WriteAllText(path, text, Utf8);
    }

    public static JsonArray Array(IEnumerable<string> items) => new([.. items.Select(s => (JsonNode?)JsonValue.Create(s))]);
    public static JsonArray Array(IEnumerable<int> items) => new([.. items.Select(s => (JsonNode?)JsonValue.Create(s))]);
}
